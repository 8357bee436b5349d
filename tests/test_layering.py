"""The package's import graph: no cycle, and the quantization core never reaches up.

Edges are read from the source (every ``import`` statement, also those inside functions,
since a call-time import is still a dependency, but not those under ``if TYPE_CHECKING:``,
which never run), and importing ``a.b.c`` also counts as importing the packages ``a`` and
``a.b`` whose ``__init__`` runs first.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fhe_sklearn"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        # `from pkg import sub` imports the submodule sub when there is one
        names = [base, *(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)]
    found = set()
    for name in names:
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & known
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the package modules it imports (directly, anywhere in its body)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for statement in block.body
            for n in ast.walk(statement)
        }
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                edges |= _targets(node, name, is_package, known)
        # a module's own parent packages are imported before it: not an edge of its own making
        graph[name] = edges - {name} - {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_import_graph_has_no_cycle(graph):
    assert cycles(graph) == []


def test_quantization_imports_no_higher_layer(graph):
    core = {m for m in graph if m.startswith("fhe_sklearn.quantization")}
    upward = {m: sorted(t for t in graph[m] if t not in core and t != "fhe_sklearn") for m in core}
    assert {m: t for m, t in upward.items() if t} == {}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..deployment.batch import run_many", ["fhe_sklearn.deployment", "fhe_sklearn.deployment.batch"]),
        ("def f():\n    from ..deployment import batch", ["fhe_sklearn.deployment", "fhe_sklearn.deployment.batch"]),
        ("import fhe_sklearn.deployment.wire", ["fhe_sklearn.deployment", "fhe_sklearn.deployment.wire"]),
    ],
)
def test_the_check_sees_imports_of_every_form(tmp_path, source, expected):
    package = tmp_path / "fhe_sklearn"
    for sub in ("quantization", "deployment"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "deployment" / "__init__.py").write_text("from . import batch\n")
    (package / "deployment" / "batch.py").write_text("from ..quantization import module\n")
    (package / "deployment" / "wire.py").write_text("")
    (package / "quantization" / "module.py").write_text(source + "\n")
    (package / "quantization" / "typed.py").write_text("if TYPE_CHECKING:\n    from ..deployment import batch\n")
    graph = import_graph(package)
    assert sorted(graph["fhe_sklearn.quantization.module"]) == expected
    assert graph["fhe_sklearn.quantization.typed"] == set()  # a type-only import never runs
    cycle = ["fhe_sklearn.deployment", "fhe_sklearn.deployment.batch", "fhe_sklearn.quantization.module"]
    assert cycles(graph) == [cycle]
