"""The rooms of the codebase, checked by walking every module's imports.

A camera (``daemon/`` on ``drivers/``) and a dock host (``dock/``) are what a force deploys;
neither may depend on the simulator, the camera never carries the dock host, and the drivers
know nothing above them but the config they are built from. The one door between rooms is
the ``bodycam`` command (``daemon/cli.py``), which may load the dock host or the simulator
*inside the function* that runs the chosen sub-command, so a camera never imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# room -> namespaces its modules must not import (at all)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "drivers": ("bodycam.daemon", "bodycam.dock", "bodycam.sim"),
    "daemon": ("bodycam.dock", "bodycam.sim"),
    "dock": ("bodycam.sim",),
}
# What a room may use of a namespace it is otherwise kept out of: a board is built from the
# daemon's validated config, the one contract between the two.
ALLOWED: dict[str, tuple[str, ...]] = {"drivers": ("bodycam.daemon.config",)}
# The command's front door may reach other rooms lazily, inside a function body.
LAZY_DOOR = {Path("daemon/cli.py")}


def _imports(tree: ast.Module) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every import in ``tree``."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def violations(room: str) -> list[str]:
    bad: list[str] = []
    for path in sorted((ROOT / room).rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), filename=str(rel))
        for module, line, lazy in _imports(tree):
            if not module.startswith(FORBIDDEN[room]) or module in ALLOWED.get(room, ()):
                continue
            if lazy and rel in LAZY_DOOR:
                continue
            bad.append(f"{rel}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_nothing_it_must_not(room: str) -> None:
    assert violations(room) == []


def test_the_checker_sees_a_forbidden_import() -> None:
    source = "import os\nfrom bodycam.sim.board import X\ndef f():\n    import bodycam.dock\n"
    tree = ast.parse(source)
    assert _imports(tree) == [
        ("os", 1, False),
        ("bodycam.sim.board", 2, False),
        ("bodycam.dock", 4, True),
    ]


def test_production_code_lives_outside_the_simulator() -> None:
    # The dock host is what a force deploys: nothing of it may be left under sim/.
    assert not (ROOT / "sim" / "dock").exists()
    assert (ROOT / "dock" / "agent.py").is_file()
