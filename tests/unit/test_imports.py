"""The package's import graph: no circles among the imports a module runs when it is imported (module level,
outside `if TYPE_CHECKING:`); imports inside functions are the way to break one."""

from __future__ import annotations

import ast
from pathlib import Path

import kdnas

ROOT = Path(kdnas.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _eager_imports(tree: ast.Module, modules: set[str], here: str, is_pkg: bool) -> set[str]:
    out: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # kdnas.x.y.Name -> kdnas.x.y
            name = name.rpartition(".")[0]
        if name and name != here:
            out.add(name)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("kdnas"):
                        add(a.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = here if is_pkg else here.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                if base.startswith("kdnas"):
                    for a in node.names:
                        sub = f"{base}.{a.name}"
                        add(sub if sub in modules else base)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return out


def test_no_import_circles() -> None:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {
        _module_name(p): _eager_imports(
            ast.parse(p.read_text()), modules, _module_name(p), p.name == "__init__.py"
        )
        for p in files
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_too_long() -> None:
    """~500 lines is where a module starts doing two jobs; the ones still over it are listed here to be split."""
    known = {"kdnas/search/study.py", "kdnas/distill/trainer.py"}  # fmt: skip
    long = {
        str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py") if len(p.read_text().splitlines()) > 520
    }
    assert long <= known, f"modules over 520 lines: {sorted(long - known)}"
