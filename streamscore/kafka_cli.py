"""streamscore kafka up | down | status | install: the local development broker.

`up --brokers 3` starts a local cluster of three KRaft nodes (ports counted up
from STREAMSCORE_KAFKA_PORT); `down` and `status` then find it by themselves.
Its data, pid files and logs live under STREAMSCORE_HOME; `install` fetches the
jars once into STREAMSCORE_CACHE (Maven).
"""

from __future__ import annotations

import argparse
import os
import sys

from core.errors import BrokerError, ConfigError
from core.logs import configure_logging
from streamscore.broker import MAX_BROKERS, BrokerConfig, LocalBroker


def main(argv: list[str]) -> int:
    """Run one broker action; exit 0 on success (status: 0 up, 3 not (fully) up)."""
    parser = argparse.ArgumentParser(
        prog="streamscore kafka",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status", "install"])
    parser.add_argument(
        "--brokers",
        type=int,
        choices=range(1, MAX_BROKERS + 1),
        metavar="N",
        help="nodes of the local cluster [STREAMSCORE_KAFKA_BROKERS; default: 1, or the size "
        "of the cluster started in this home]",
    )
    args = parser.parse_args(argv)
    configure_logging("kafka")
    env = dict(os.environ)
    if args.brokers is not None:
        env["STREAMSCORE_KAFKA_BROKERS"] = str(args.brokers)
    try:
        broker = LocalBroker(BrokerConfig.from_env(env))
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
    except (BrokerError, ConfigError) as exc:
        print(f"streamscore kafka {args.action}: {exc}", file=sys.stderr)
        return 1
