"""streamscore monitor: serve the live dashboard with gunicorn (default port 5555).

The settings are read once here (variables, then flags) and handed to gunicorn
and its worker whole, in STREAMSCORE_MONITOR_CONFIG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.gunicorn import exec_gunicorn
from monitor.config import RESOLVED_VARIABLE, SETTINGS, MonitorConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "monitor.app:get_app()"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting of `monitor.config.SETTINGS`."""
    return SETTINGS.parser("streamscore monitor", __doc__)


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides = SETTINGS.overrides(args)
    return exec_gunicorn(
        "monitor", CONF, APP, RESOLVED_VARIABLE, lambda env: MonitorConfig.from_env(env, overrides)
    )


if __name__ == "__main__":
    sys.exit(main())
