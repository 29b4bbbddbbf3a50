"""Only the client drivers import a Kafka client library; the admin uses allowed are listed.

Every Python file of the project (tests included) is parsed with `ast` and its
imports of ``kafka`` (kafka-python) or ``confluent_kafka`` are checked against an
explicit allow-list, each entry with its reason:

- the drivers (`bus.clients.kafka_python*`, `bus.clients.confluent`): the only
  data paths on a client library;
- admin, which stays on kafka-python (`bus.clients.make_admin`, `bus.topics`,
  `streamscore.broker`, the tests' topic fixture): only ``kafka.admin`` and
  ``kafka.errors``;
- tests of the drivers themselves;
- observers: tools that watch the bus from outside with a plain kafka-python
  client, as any user of the topics would (the chaos verifier, the benchmarks'
  loaders and peers, tests that read and write the contract's bytes directly).
  They are not services: no service package may use them (pinned below).
"""

from __future__ import annotations

import ast
import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("kafka", "confluent_kafka")
SKIP_DIRS = frozenset({"__pycache__", "build", "dist", "node_modules"})


@dataclass(frozen=True)
class Allowed:
    """Files (glob patterns relative to the project root) that may import these modules."""

    paths: tuple[str, ...]
    modules: tuple[str, ...]
    reason: str


ADMIN_MODULES = ("kafka.admin", "kafka.errors")

DRIVERS = (
    Allowed(
        ("bus/clients/kafka_python*.py", "bus/clients/confluent*.py"),
        LIBRARIES,
        "the client drivers: the only data paths on a client library",
    ),
)

ADMIN = (
    Allowed(
        ("bus/clients/__init__.py",),
        ADMIN_MODULES,
        "make_admin: admin stays on kafka-python",
    ),
    Allowed(("bus/topics.py",), ADMIN_MODULES, "creates the contract's topics with the admin"),
    Allowed(
        ("streamscore/broker.py",),
        ADMIN_MODULES,
        "asks the local broker whether it is up, with the admin",
    ),
    Allowed(("tests/conftest.py",), ("kafka.admin",), "the tests' topic fixture (admin)"),
)

DRIVER_TESTS = (
    Allowed(
        (
            "tests/unit/test_clients.py",
            "tests/unit/test_kafka_python_fetch.py",
            "tests/unit/test_confluent_seek.py",
            "tests/integration/test_clients.py",
        ),
        LIBRARIES,
        "tests of the drivers themselves (against the libraries' own behaviour)",
    ),
    Allowed(
        ("tests/unit/test_settings.py",),
        ("kafka",),
        "checks that kafka-python's clients accept what the settings hand the driver",
    ),
)

OBSERVERS = (
    Allowed(
        ("chaos/*",),
        ("kafka",),
        "the chaos suite's verifier and poison writer watch the bus as an outside user",
    ),
    Allowed(
        ("bench/*",),
        LIBRARIES,
        "benchmarks load topics and run the peers' raw clients beside the services",
    ),
    Allowed(
        ("tests/integration/test_bus.py", "tests/integration/test_local_broker.py"),
        ("kafka",),
        "tests that read and write the contract's bytes as a plain kafka-python user does",
    ),
)

#: The packages that run as services (or are the bus under them): they get every
#: client from a driver, never the plain clients the observers use.
SERVICE_PACKAGES = ("bus", "producer", "trainer", "scorer", "gateway", "streamscore")
PLAIN_CLIENTS = ("make_producer", "make_consumer")

ALLOWED = DRIVERS + ADMIN + DRIVER_TESTS + OBSERVERS


@dataclass(frozen=True)
class LibraryImport:
    """One import of a client library: where, and which module."""

    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


def python_files(root: Path) -> Iterator[Path]:
    """Every ``.py`` file under ``root``, outside hidden (virtualenv) and build folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def _is_library(module: str) -> bool:
    return module.partition(".")[0] in LIBRARIES


def library_imports(path: Path, root: Path) -> list[LibraryImport]:
    """The client-library imports of one file, at any depth (functions too)."""
    name = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # removed while the tree was scanned (another process's file)
        return []
    tree = ast.parse(text, filename=name)
    found: list[LibraryImport] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom | ast.Call):
            continue
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module] if node.level == 0 and node.module else []
        elif node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                modules = [str(first.value)]
        found += [LibraryImport(name, node.lineno, m) for m in modules if _is_library(m)]
    return found


def _matches(found: LibraryImport, allowed: Allowed) -> bool:
    in_paths = any(fnmatch.fnmatch(found.path, pattern) for pattern in allowed.paths)
    return in_paths and any(
        found.module == module or found.module.startswith(module + ".")
        for module in allowed.modules
    )


def scan(root: Path) -> list[LibraryImport]:
    """Every client-library import of the project under ``root``."""
    return [found for path in python_files(root) for found in library_imports(path, root)]


def violations(imports: Sequence[LibraryImport], allowed: Sequence[Allowed]) -> list[str]:
    """The imports no entry of ``allowed`` covers."""
    return [str(f) for f in imports if not any(_matches(f, entry) for entry in allowed)]


def unused(imports: Sequence[LibraryImport], allowed: Sequence[Allowed]) -> list[Allowed]:
    """The entries of ``allowed`` that cover no import any more."""
    return [entry for entry in allowed if not any(_matches(f, entry) for f in imports)]


@pytest.fixture(scope="module")
def project_imports() -> list[LibraryImport]:
    return scan(ROOT)


def test_only_the_drivers_import_a_kafka_client_library(
    project_imports: list[LibraryImport],
) -> None:
    assert project_imports, "the scan found no import at all: is ROOT the project?"
    bad = violations(project_imports, ALLOWED)
    assert not bad, (
        "only bus/clients/kafka_python*.py and bus/clients/confluent*.py may import a Kafka "
        "client library (admin: kafka.admin / kafka.errors in the modules listed here); use "
        "the driver interface (bus.clients.driver_for, bus.clients.base) instead:\n  "
        + "\n  ".join(bad)
    )


def test_every_permanent_allowance_is_still_needed(project_imports: list[LibraryImport]) -> None:
    stale = unused(project_imports, ALLOWED)
    assert not stale, "remove these entries from the allow-list: " + "; ".join(
        f"{entry.paths} ({entry.reason})" for entry in stale
    )


def plain_client_uses(root: Path) -> list[str]:
    """Where a service package names ``make_producer`` or ``make_consumer``."""
    found: list[str] = []
    for package in SERVICE_PACKAGES:
        for path in python_files(root / package):
            name = path.relative_to(root).as_posix()
            if name.startswith("bus/clients/"):
                continue  # where they are defined and exported
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=name)
            for node in ast.walk(tree):
                named = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.ImportFrom)
                    else [node.attr]
                    if isinstance(node, ast.Attribute)
                    else []
                )
                found += [f"{name}:{node.lineno} {n}" for n in named if n in PLAIN_CLIENTS]
    return found


def test_no_service_uses_the_observers_plain_clients() -> None:
    uses = plain_client_uses(ROOT)
    assert not uses, "services get their clients from bus.clients.driver_for:\n  " + "\n  ".join(
        uses
    )


def test_the_plain_client_check_finds_a_use(tmp_path: Path) -> None:
    (tmp_path / "scorer").mkdir()
    (tmp_path / "scorer" / "loop.py").write_text("from bus.clients import make_producer\n")
    assert plain_client_uses(tmp_path) == ["scorer/loop.py:1 make_producer"]


def test_the_scan_finds_every_kind_of_import(tmp_path: Path) -> None:
    files = {
        "app/plain.py": "import kafka\n",
        "app/from_import.py": "from confluent_kafka import Producer\n",
        "app/inside.py": "def f():\n    from kafka.admin import KafkaAdminClient\n",
        "app/dynamic.py": "import importlib\nimportlib.import_module('kafka.errors')\n",
        "app/lookalike.py": "import kafkaesque\nfrom bus.clients import driver_for\n",
        "app/relative.py": "from .kafka import thing\n",
        "drivers/one.py": "import confluent_kafka\nimport kafka\n",
        "admin.py": "from kafka.admin import NewTopic\nfrom kafka import KafkaProducer\n",
        ".venv/lib/kafka_stuff.py": "import kafka\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    allowed = [
        Allowed(("drivers/*",), LIBRARIES, "drivers"),
        Allowed(("admin.py",), ADMIN_MODULES, "admin"),
        Allowed(("nothing/*",), LIBRARIES, "unused"),
    ]
    imports = scan(tmp_path)
    assert violations(imports, allowed) == [
        "admin.py:2 imports kafka",
        "app/dynamic.py:2 imports kafka.errors",
        "app/from_import.py:1 imports confluent_kafka",
        "app/inside.py:2 imports kafka.admin",
        "app/plain.py:1 imports kafka",
    ]
    assert [entry.reason for entry in unused(imports, allowed)] == ["unused"]
