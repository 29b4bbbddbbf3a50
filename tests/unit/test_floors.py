"""The project's floors: each package imports only the floors below it.

``core`` (the ground floor) imports nothing of the project; ``bus`` and
``regressors`` only ``core``; the services (``producer``, ``trainer``,
``scorer``, ``gateway``, ``monitor``) only those three and never each other;
``streamscore`` (the front door) may import anything. Every import counts,
also one inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUND = frozenset({"core"})
LIBRARIES = GROUND | {"bus", "regressors"}
SERVICES = ("producer", "trainer", "scorer", "gateway", "monitor")

#: package -> the project packages it may import besides itself
FLOORS: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "bus": GROUND,
    "regressors": GROUND,
    **dict.fromkeys(SERVICES, LIBRARIES),
}
PROJECT = frozenset({*FLOORS, "streamscore", "bench", "chaos", "tests"})


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def floor_violations(root: Path, floors: Mapping[str, frozenset[str]]) -> list[str]:
    """``path:line imports module`` for every import that climbs or crosses a floor."""
    found = []
    for package, allowed in floors.items():
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in imported_modules(tree):
                top = module.split(".")[0]
                if top in PROJECT and top != package and top not in allowed:
                    found.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
    return found


def test_every_package_imports_only_the_floors_below_it() -> None:
    bad = floor_violations(ROOT, FLOORS)
    assert not bad, "imports across the floors:\n  " + "\n  ".join(bad)


def test_the_floors_are_all_there() -> None:
    missing = [
        package for package in FLOORS if package != "monitor" and not (ROOT / package).is_dir()
    ]
    assert not missing


def test_the_check_finds_a_climb_and_a_crossing(tmp_path: Path) -> None:
    files = {
        "core/a.py": "import json\nfrom bus.messages import Point\n",
        "bus/b.py": "from core.errors import BusError\n",
        "scorer/c.py": "def f():\n    import trainer.step\n",
        "gateway/d.py": "from regressors import make_regressor\nfrom .x import y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert floor_violations(tmp_path, FLOORS) == [
        "core/a.py:2 imports bus.messages",
        "scorer/c.py:2 imports trainer.step",
    ]
