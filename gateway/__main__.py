"""streamscore gateway: serve the HTTP API with gunicorn (config: gateway/gunicorn_conf.py).

The settings are read once here (variables, then flags) and handed to gunicorn
and its workers whole, in STREAMSCORE_GATEWAY_CONFIG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.gunicorn import exec_gunicorn
from gateway.config import RESOLVED_VARIABLE, SETTINGS, GatewayConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "gateway.app:get_app()"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `gateway.config.SETTINGS`."""
    return SETTINGS.parser("streamscore gateway", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides = SETTINGS.overrides(args)
    return exec_gunicorn(
        "gateway", CONF, APP, RESOLVED_VARIABLE, lambda env: GatewayConfig.from_env(env, overrides)
    )


if __name__ == "__main__":
    sys.exit(main())
