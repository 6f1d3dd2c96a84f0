"""The package's shape: layers whose imports only point down, no import circle, small
modules and functions (docs/architecture.md). Read from the source with `ast`, so an
import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lstmlm"

# Bottom to top. A module may import from a lower layer, or from its own package.
LAYERS = [
    {"files", "config"},
    {"device", "data", "nn"},
    {"storage"},
    {"evaluation", "generation"},
    {"training", "api", "export"},
    {"reports", "serving"},
    {"cli"},
    {"__init__", "__main__"},
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    return {
        ".".join(("lstmlm", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }


def _unit(module: str) -> str:
    """The top-level unit of a module: lstmlm.nn.manual.lstm -> nn, lstmlm.api -> api."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _imports(module: str, path: Path) -> set[str]:
    """The lstmlm modules that `module` imports: `from P import m` of a submodule m counts
    as an import of P.m (P's __init__ runs for any of its submodules, as it always
    does), `from P import name` of anything else as one of P."""
    tree = ast.parse(path.read_text())
    modules = _modules()
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lstmlm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.startswith("lstmlm"):
                subs = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                out |= subs
                if len(subs) < len(node.names):  # some names are not modules
                    out.add(base)
    return {m for m in out if m in modules and m != module}


def test_every_module_belongs_to_a_layer():
    for module in _modules():
        unit = _unit(module)
        assert any(unit in layer for layer in LAYERS), f"{module}: in no layer"


def test_imports_only_point_down():
    upward = []
    for module, path in _modules().items():
        if module.endswith("__main__") or module == "lstmlm":
            continue
        unit = _unit(module)
        for target in _imports(module, path):
            if target == "lstmlm":
                continue  # `from lstmlm import __version__`
            other = _unit(target)
            if other != unit and _floor(other) >= _floor(unit):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_import_circle():
    modules = _modules()
    graph = {m: _imports(m, p) - {"lstmlm"} for m, p in modules.items()}
    # A package's __init__ re-exports its modules: an edge into the package is an edge
    # into what it re-exports, so circles through __init__ are real circles too.
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_functions_are_small(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name}: {length}"
