"""The ``streamscore`` command: one front door, a subcommand per service or tool."""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "producer": ("producer.__main__", "publish points from a source to the points topic"),
    "trainer": ("trainer.__main__", "fit regressors on labelled points, publish model versions"),
    "scorer": ("scorer.__main__", "predict every point, score live models, answer requests"),
    "gateway": ("gateway.__main__", "serve the HTTP API with gunicorn"),
    "kafka": ("streamscore.kafka_cli", "the local Kafka broker: up | down | status | install"),
    "topics": ("streamscore.topics_cli", "create every topic of the contract (idempotent)"),
    "demo": ("streamscore.demo", "run the whole pipeline once and print a summary"),
    "up": ("streamscore.services", "start broker and services in the background"),
    "down": ("streamscore.services", "stop what `streamscore up` started"),
    "status": ("streamscore.services", "services, topics and consumer lag"),
}


def usage() -> str:
    """The list of subcommands."""
    width = max(map(len, COMMANDS))
    lines = ["usage: streamscore <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`streamscore <command> --help` tells more about each."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the subcommand's own ``main``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    # Batches are small matrices: BLAS threads only fight the service's own threads
    # (measured: degree-5 fits 2 ms with one thread, up to 250 ms with the default).
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    if command not in COMMANDS:
        print(f"streamscore: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if module.__name__ == "streamscore.services":
        rest = [command, *rest]
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
