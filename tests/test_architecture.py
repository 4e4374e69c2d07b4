"""The layers of docs/architecture.md hold: no module under lifelong/ imports one of a higher layer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lifelong"

# lowest first; a module may import its own layer and the ones before it
LAYERS = [
    ["lifelong.errors", "lifelong.version", "lifelong.metrics"],
    ["lifelong.loggers"],
    ["lifelong.data"],
    ["lifelong.models"],
    ["lifelong.methods"],
    ["lifelong.config"],
    ["lifelong.store", "lifelong.presets"],
    ["lifelong.loop"],
    ["lifelong.compare"],
    ["lifelong.report_data", "lifelong.figures", "lifelong.report"],
    ["lifelong.cli", "lifelong"],
]


def layer(module: str) -> int:
    """The layer of a module: that of the longest prefix listed in LAYERS."""
    best = None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (index, name)
    if best is None:
        raise AssertionError(f"module {module} has no layer in tests/test_architecture.py")
    return best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, module) of every lifelong import that runs, at any depth, except under ``if TYPE_CHECKING:``."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lifelong")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lifelong":
            if node.module == "lifelong":  # from lifelong import store: the submodules named
                found.extend((node.lineno, f"lifelong.{a.name}") for a in node.names)
            else:
                found.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    module = module_name(path)
    own = layer(module)
    for line, imported in runtime_imports(ast.parse(path.read_text()), module):
        assert layer(imported) <= own, f"{path.name}:{line} imports {imported} (layer {layer(imported)}) " \
                                       f"from layer {own}"


def test_the_checker_sees_an_import_up_the_layers_and_ignores_typing_only_ones():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lifelong.config import Config\n"
              "def f():\n    from lifelong.loop import run\n")
    imports = runtime_imports(ast.parse(source), "lifelong.methods.x")
    assert imports == [(5, "lifelong.loop")] and layer("lifelong.loop") > layer("lifelong.methods.x")
