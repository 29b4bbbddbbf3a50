"""streamscore topics: create every topic of the contract that does not exist yet.

The cluster is KAFKA_BOOTSTRAP_SERVERS, or the local broker on STREAMSCORE_KAFKA_PORT.
"""

from __future__ import annotations

import argparse
import sys

from bus.settings import KafkaSettings
from bus.topics import TopicLayout, Topics, ensure_topics
from core.errors import StreamscoreError
from core.logs import configure_logging


def main(argv: list[str]) -> int:
    """Create the topics (idempotent) and list them."""
    parser = argparse.ArgumentParser(
        prog="streamscore topics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    configure_logging("topics")
    topics = Topics.from_env()
    try:
        created = ensure_topics(KafkaSettings.from_env(), topics, TopicLayout.from_env())
    except StreamscoreError as exc:
        print(f"streamscore topics: {exc}", file=sys.stderr)
        return 1
    for name in topics.all().values():
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0
