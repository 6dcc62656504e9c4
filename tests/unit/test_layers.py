"""The house's layers, held by its imports: domain < usecases < adapters < entrypoints, with settings and
observability beside them all and wiring (the composition root) above. Every import counts — at the top,
inside a function (kept lazy for cold start, not to hide a cycle) and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"
LAYERS = {"domain": 0, "usecases": 1, "adapters": 2, "entrypoints": 3}
# Telemetry sits below everything; configuration just above the domain (it is built of domain types such as a
# connection's); the composition root above all.
BESIDE = {"chalicelib.observability": -1, "chalicelib.settings": 0.5}
TOP = {"chalicelib.wiring": 4, "chalicelib.wiring_http": 5}  # the composition root, in two halves
MAX_LINES = 350


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """The chalicelib modules `path` imports, by any means."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chalicelib"):
            for alias in node.names:
                whole = f"{node.module}.{alias.name}"
                yield whole if whole in known else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("chalicelib"))


def rank(module: str) -> float | None:
    if module in BESIDE:
        return BESIDE[module]
    if module in TOP:
        return TOP[module]
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 2 else None


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: {i for i in imports(p, set(found)) if i in found and i != m} for m, p in found.items()}


def test_every_module_lives_in_a_layer_or_is_one_of_the_few_beside_them() -> None:
    homeless = [m for m in modules() if rank(m) is None and m != "chalicelib" and m.count(".") > 1]
    assert homeless == []
    loose = sorted(m for m in modules() if m.count(".") == 1 and m not in {*BESIDE, *TOP})
    assert loose == [f"chalicelib.{layer}" for layer in sorted(LAYERS)]  # their empty __init__ only


def test_no_import_runs_up_a_layer() -> None:
    upward = sorted(
        f"{m} -> {i}"
        for m, targets in graph().items()
        for i in targets
        if rank(m) is not None and rank(i) is not None and rank(i) > rank(m)  # type: ignore[operator]
    )
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], on_path | {nxt}, done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], {start}, done)
    assert cycles == []


def test_init_files_are_empty_and_no_module_is_over_350_lines() -> None:
    assert [p for p in PACKAGE.rglob("__init__.py") if p.read_text().strip()] == []
    long = {
        str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
