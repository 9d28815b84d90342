"""The import graph of ``src/ndvq``: no cycles between modules, and imports only point left in the layer
order of docs/design.md. Module-level and function-level imports both count (a lazy import still makes
the two modules depend on each other); imports under ``if TYPE_CHECKING:`` do not (they never run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ndvq"

LAYERS = [("errors", "nd", "metrics"), ("quantizers",), ("objectives",), ("models",), ("compat",), ("config",),
          ("data",), ("build",), ("run",), ("prior",), ("codec",),
          ("diagnostics", "convert", "export", "shard"), ("cli", "__main__", "")]
"""docs/design.md: an import may only point to its own layer or one left of it ("" = the package root)."""
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield child
                yield from _walk(child)
            continue
        yield node
        yield from _walk(node)


def imports_of(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """``{imported ndvq module: first line}`` of one module (module- and function-level imports)."""
    is_pkg = path.name == "__init__.py"
    out: dict[str, int] = {}
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known and "." in t:  # `import ndvq.x.y` where y is a name, not a module
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                out.setdefault(t, node.lineno)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def top(module: str) -> str:
    """The layer name of a module: its top-level subpackage or module ("" for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    return LAYER.get(top(module))


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for a, deps in sorted(graph.items()):
        la = layer_of(a)
        if la is None:
            bad.append(f"{a} is in no layer of docs/design.md")
            continue
        for b, line in sorted(deps.items()):
            lb = layer_of(b)
            if lb is not None and lb > la:
                bad.append(f"{a}:{line} imports {b} ({top(b) or 'ndvq'} comes after {top(a) or 'ndvq'})")
    return bad


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "ndvq" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    f = pkg / "a.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ndvq.cli\n"
                 "def f():\n    from ndvq.run import rundir\n    from . import b\n    import ndvq.errors\n")
    known = {"ndvq.sub", "ndvq.sub.a", "ndvq.sub.b", "ndvq.run", "ndvq.run.rundir", "ndvq.errors", "ndvq.cli"}
    assert imports_of("ndvq.sub.a", f, known) == {"ndvq.run.rundir": 5, "ndvq.sub.b": 6, "ndvq.errors": 7}
    assert cycles({"x": {"y": 1}, "y": {"z": 1}, "z": {"x": 1}, "w": {"x": 1}}) == [["x", "y", "z"]]
    assert layer_violations({"ndvq.errors": {"ndvq.cli": 3}}) == ["ndvq.errors:3 imports ndvq.cli (cli comes after errors)"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_follow_the_layer_order():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the order " + " -> ".join("/".join(n for n in g if n) for g in LAYERS) + ":\n" + "\n".join(bad)


@pytest.mark.parametrize("modules", ["ndvq.diagnostics.doctor, ndvq.diagnostics.report", "ndvq.cli"])
def test_doctor_and_report_start_without_the_training_engine(modules):
    code = (f"import {modules}, sys; heavy = [m for m in sys.modules if m.startswith(('lightning', 'ndvq.run.train', "
            f"'ndvq.train'))]; assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
