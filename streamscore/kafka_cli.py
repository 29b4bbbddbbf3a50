"""``streamscore kafka up | down | status | install``: the local development broker."""

from __future__ import annotations

import argparse
import sys

from streamscore.broker import BrokerConfig, LocalBroker
from streamscore.errors import BrokerError
from streamscore.logs import configure_logging


def main(argv: list[str]) -> int:
    """Run one broker action; exit 0 on success (``status``: 0 up, 3 not up)."""
    parser = argparse.ArgumentParser(prog="streamscore kafka", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "install"])
    args = parser.parse_args(argv)
    configure_logging("kafka")
    broker = LocalBroker(BrokerConfig.from_env())
    try:
        if args.action == "install":
            print(f"kafka jars in {broker.install()}")
            return 0
        if args.action == "up":
            already = broker.status().state == "up"
            status = broker.up()
            print(("already up: " if already else "") + status.describe())
            return 0
        if args.action == "down":
            print("kafka stopped" if broker.down() else "kafka was not running")
            return 0
        status = broker.status()
        print(status.describe())
        return 0 if status.state == "up" else 3
    except BrokerError as exc:
        print(f"streamscore kafka {args.action}: {exc}", file=sys.stderr)
        return 1
