"""The ``streamscore`` command: one front door, a subcommand per service or tool.

Each subcommand names the function that runs it; its module is imported only
when that subcommand runs. A command that parses its own options (the services,
``kafka``, ``topics``, ``monitor``) gets the rest of the command line as it is;
the others have their options declared here, checked before they run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from core.runtime import limit_blas_threads

Options = Callable[[argparse.ArgumentParser], None]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (at least 1)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--points",
        type=_positive_int,
        metavar="N",
        help="how many points to publish [STREAMSCORE_DEMO_POINTS; default: 30000]",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        metavar="PER_S",
        help="points per second [STREAMSCORE_DEMO_RATE; default: 3000]",
    )


def _no_options(parser: argparse.ArgumentParser) -> None:
    """A command without options of its own (``--help`` still works)."""


@dataclass(frozen=True)
class Command:
    """One subcommand: what it does, the ``main(argv) -> int`` that runs it, its options.

    ``options`` None: the target parses the rest of the command line itself.
    """

    name: str
    help: str
    target: str  # "module:function"
    options: Options | None = None
    description: str = ""

    def run(self, argv: list[str]) -> int:
        """Import the target's module now and run it with ``argv``."""
        module_name, function = self.target.split(":")
        main: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), function)
        return int(main(argv))


COMMANDS: tuple[Command, ...] = (
    Command(
        "producer", "publish points from a source to the points topic", "producer.__main__:main"
    ),
    Command(
        "trainer",
        "fit regressors on labelled points, publish model versions",
        "trainer.__main__:main",
    ),
    Command(
        "scorer",
        "predict every point, score live models, answer requests",
        "scorer.__main__:main",
    ),
    Command("gateway", "serve the HTTP API with gunicorn", "gateway.__main__:main"),
    Command("monitor", "the monitor: models, scores, dead letters, lag", "monitor.__main__:main"),
    Command(
        "kafka",
        "the local Kafka broker: up | down | status | install",
        "streamscore.kafka_cli:main",
    ),
    Command(
        "topics",
        "create every topic of the contract (idempotent)",
        "streamscore.topics_cli:main",
    ),
    Command(
        "demo",
        "run the whole pipeline once and print a summary",
        "streamscore.demo:main",
        _demo_options,
        "Start the local broker (unless KAFKA_BOOTSTRAP_SERVERS points elsewhere), a "
        "trainer, a scorer and the gateway on topics of the run's own; publish points "
        "with drift, show models, scores, throughput and lag as they change, ask the "
        "gateway for one prediction, then stop everything it started. Exit status 0 "
        "only when every point was predicted and nothing was dead-lettered.",
    ),
    Command(
        "up",
        "start broker and services in the background",
        "streamscore.lifecycle_cli:up",
        _no_options,
        "Start the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), create the "
        "topics, and run the trainer, a scorer and the gateway in the background; "
        "pid files and logs go under STREAMSCORE_HOME.",
    ),
    Command(
        "down",
        "stop what `streamscore up` started",
        "streamscore.lifecycle_cli:down",
        _no_options,
        "Stop the services `streamscore up` started, then the local broker.",
    ),
    Command(
        "status",
        "services, topics and consumer lag",
        "streamscore.lifecycle_cli:status",
        _no_options,
        "Print the local broker, the services, the topics with their sizes and the "
        "consumer groups' lag. Exit status 0 when everything is up, 3 when not.",
    ),
)


def version() -> str:
    """The installed package's version (the source's when it is not installed)."""
    try:
        return metadata.version("streamscore")
    except metadata.PackageNotFoundError:
        from streamscore import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``streamscore`` parser with a subparser per command."""
    parser = argparse.ArgumentParser(
        prog="streamscore",
        description="An event-driven streaming model scorer on Apache Kafka.",
        epilog="`streamscore <command> --help` tells more about each command.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"streamscore {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for command in COMMANDS:
        own = command.options is not None
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            add_help=own,
            allow_abbrev=False,
        )
        if command.options is not None:
            command.options(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command with the rest of it."""
    args = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parsed, extra = parser.parse_known_args(args)
    if parsed.command is None:
        parser.print_help()
        return 0
    command = next(c for c in COMMANDS if c.name == parsed.command)
    if command.options is not None and extra:
        parser.parse_args(args)  # reports the unknown arguments and exits with status 2
    limit_blas_threads()
    return command.run(args[args.index(command.name) + 1 :])


if __name__ == "__main__":
    sys.exit(main())
