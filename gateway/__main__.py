"""streamscore gateway: serve the HTTP API with gunicorn (config: gateway/gunicorn_conf.py).

The settings are read once here (variables, then flags) and handed to gunicorn
and its workers whole, in STREAMSCORE_GATEWAY_CONFIG.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import ConfigError
from gateway.config import RESOLVED_VARIABLE, SETTINGS, GatewayConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "gateway.app:get_app()"


def gunicorn_command() -> list[str]:
    """The command that serves the gateway."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), APP]


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `gateway.config.SETTINGS`."""
    return SETTINGS.parser("streamscore gateway", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    env = {k: v for k, v in os.environ.items() if k != RESOLVED_VARIABLE}
    try:
        config = GatewayConfig.from_env(env, SETTINGS.overrides(args))
    except ConfigError as exc:
        print(f"streamscore gateway: {exc}", file=sys.stderr)
        return 2
    env[RESOLVED_VARIABLE] = config.dumps()
    command = gunicorn_command()
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"streamscore gateway: cannot start gunicorn: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
