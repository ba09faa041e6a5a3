"""The dependency rule, beyond import-linter's layers: no import cycle between any two modules, no
module reached under the card's folder names instead of ``facegate.*``, and imports inside functions
only where a reason is written beside them (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [ROOT / "components", ROOT / "flows", ROOT / "benchmarks", ROOT / "facegate" / "cli"]


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over module-to-module imports (every import, at module level or in a function)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        work = [(v, iter(sorted(graph.find_modules_directly_imported_by(v))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("facegate", cache_dir=None, exclude_type_checking_imports=True)
    # a package's __init__ re-exporting its own modules is not a cycle between modules
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if module.startswith(imported + ".") or imported.startswith(module + "."):
                graph.remove_import(importer=module, imported=imported)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _python_files() -> list[Path]:
    return sorted(p for src in SOURCES for p in src.rglob("*.py"))


def test_code_imports_the_installed_names_only() -> None:
    """``components.x`` would load a second copy of a module beside ``facegate.components.x``."""
    bad = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bad += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in {"components", "flows", "benchmarks", "cli"}
            ]
    assert not bad, "\n".join(bad)


def test_function_local_imports_say_why() -> None:
    """An import inside a function is for an optional or heavy dependency, with its reason on the line
    (``# heavy: ...``, ``# optional: ...``, ``# cycle-free: ...``); our own modules are imported at the top."""
    bad = []
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom) and inner.col_offset > 0:
                    line = lines[inner.lineno - 1]
                    span = lines[inner.lineno - 1 : inner.end_lineno or inner.lineno]
                    if not any("#" in part for part in span):
                        bad.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {line.strip()}")
    assert not bad, f"{len(bad)} function-local imports without a reason:\n" + "\n".join(bad[:60])


def test_units_stay_readable() -> None:
    """Issue 26's limits: no module over 500 lines, no class over 250, no function over 80, in the library,
    the flows and the CLI (tests and benchmarks are not held to them)."""
    limits = {"module": 500, "class": 250, "function": 80}
    over = []
    for src in (ROOT / "components", ROOT / "flows", ROOT / "facegate" / "cli"):
        for path in sorted(src.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name = path.relative_to(ROOT)
            if len(text.splitlines()) > limits["module"]:
                over.append(f"{name}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                kind = (
                    "class"
                    if isinstance(node, ast.ClassDef)
                    else "function"
                    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    else None
                )
                if kind and node.end_lineno and node.end_lineno - node.lineno + 1 > limits[kind]:
                    over.append(f"{name}:{node.lineno} {kind} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not over, "\n".join(over)
