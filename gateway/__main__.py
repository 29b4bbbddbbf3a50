"""``streamscore gateway``: serve the HTTP API with gunicorn (config: gateway/gunicorn_conf.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import ConfigError
from gateway.config import GatewayConfig

CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "gateway.app:get_app()"


def gunicorn_command() -> list[str]:
    """The command that serves the gateway."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), APP]


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then become gunicorn (it never returns on success)."""
    parser = argparse.ArgumentParser(
        prog="streamscore gateway",
        description=__doc__,
        epilog="Every option has an environment variable (STREAMSCORE_GATEWAY_*); see README.",
    )
    parser.add_argument("--bind", help="HOST:PORT to listen on (default 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default 4)")
    parser.add_argument("--threads", type=int, help="threads per worker (default 16)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    for name, value in vars(args).items():
        if value is not None:
            env[f"STREAMSCORE_GATEWAY_{name.upper()}"] = str(value)
    try:
        GatewayConfig.from_env(env)
    except ConfigError as exc:
        print(f"streamscore gateway: {exc}", file=sys.stderr)
        return 2
    command = gunicorn_command()
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"streamscore gateway: cannot start gunicorn: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
