"""The playground's modules depend on each other in one direction: no import circle (typing-only imports count),
the pure formatters import nothing of the playground, and nothing outside the package reaches into the page."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "playground"


def playground_imports(path: Path) -> set[str]:
    """The playground modules `path` imports, anywhere in it (inside `if TYPE_CHECKING:` and functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "playground":
                found.update(f"playground.{alias.name}" for alias in node.names)
            elif node.module.startswith("playground."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("playground."))
    return found


def graph() -> dict[str, set[str]]:
    return {f"playground.{path.stem}": playground_imports(path) for path in PACKAGE.glob("*.py")}


def test_there_is_no_import_circle_in_the_playground() -> None:
    edges = graph()
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if target in trail:
                cycles.append([*trail[trail.index(target) :], target])
            elif target in edges:
                visit(target, [*trail, target])

    for module in sorted(edges):
        visit(module, [module])
    assert cycles == []


def test_the_formatters_import_nothing_of_the_playground() -> None:
    assert graph()["playground.formatting"] == set()


def test_nothing_outside_the_playground_reads_state_hung_on_the_blocks() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        if "demo" + ".playground" in path.read_text()
    ]
    readers += ["app.py"] if "demo" + ".playground" in (ROOT / "app.py").read_text() else []
    assert readers == []


def test_every_handler_wired_to_the_page_declares_outputs_the_page_has() -> None:
    from playground.backend import Backend
    from playground.settings import Settings
    from playground.ui import build_app

    app = build_app(Settings(), backend=Backend.refused("no sandbox in this test"))
    try:
        wired = [fn for fn in app.demo.fns.values() if fn.fn is not None and hasattr(fn.fn, "outputs")]
        assert {fn.name for fn in wired} >= {"submit", "load", "select_file", "export_zip", "reset_sandbox"}
        for fn in wired:
            assert len(fn.outputs) == len(fn.fn.outputs), fn.name
    finally:
        app.close()
