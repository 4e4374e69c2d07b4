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
    ["lifelong.store", "lifelong.presets", "lifelong.lock", "lifelong.diagnostics"],
    ["lifelong.learner", "lifelong.probe"],
    ["lifelong.loop"],
    ["lifelong.executors"],
    ["lifelong.compare", "lifelong.serve", "lifelong.sweep"],
    ["lifelong.report_data", "lifelong.figures", "lifelong.report", "lifelong.inside", "lifelong.tracking"],
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


THROWAWAY = '''"""L2 pull towards the weights after the previous task: a throwaway method written by the recipe."""

from typing import Any

import torch
from pydantic import Field

from lifelong.methods import base
from lifelong.methods.base import Method


class Params(base.Params):
    lam: float = Field(0.5, ge=0.0, description="strength of the pull towards the previous task's weights")


class L2Anchor(Method):
    name = "l2-anchor"
    description = "an L2 penalty towards the weights after the previous task"
    Params = Params

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.anchor: dict[str, torch.Tensor] = {}

    def task_loss(self, x, y, task_ids):
        loss = super().task_loss(x, y, task_ids)
        for name, p in self.model.backbone.named_parameters():
            if name in self.anchor:
                loss = loss + self.params.lam * (p - self.anchor[name]).pow(2).sum()
        return loss

    def after_task(self, task, train):
        self.anchor = {n: p.detach().clone() for n, p in self.model.backbone.named_parameters()}

    def extra_state(self):
        return {"anchor": self.anchor}

    def load_extra_state(self, state):
        self.anchor = dict(state["anchor"])
'''


def test_the_add_a_method_recipe_of_docs_architecture_works(tmp_path, monkeypatch, crash_and_resume):
    """A method written to a temporary file and added to METHODS is configurable, runs, and keeps the contract."""
    import importlib.util

    import lifelong
    from lifelong.config import build_config
    from lifelong.errors import UserError
    from lifelong.methods import METHODS
    from test_method_contract import check_documented, check_kill_and_resume, check_state_round_trip, \
        contract_config

    recipe = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert "**A method.**" in recipe and "METHODS" in recipe and "lifelong/methods/naive.py" in recipe
    path = tmp_path / "l2_anchor.py"
    path.write_text(THROWAWAY)
    spec = importlib.util.spec_from_file_location("l2_anchor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(METHODS, "l2-anchor", module.L2Anchor)

    cfg = build_config({"method": "l2-anchor"}, ["l2-anchor.lam=2"])
    assert cfg.method_params("l2-anchor").lam == 2.0
    with pytest.raises(UserError, match="unknown config key 'l2-anchor.strength'"):
        build_config({"method": "l2-anchor", "l2-anchor": {"strength": 1}})
    _, strong = lifelong.run(contract_config(tmp_path, "l2-anchor", "strong", **{"l2-anchor": {"lam": 10.0}}))
    _, naive = lifelong.run(contract_config(tmp_path, "naive", "naive"))
    assert strong["acc_matrix"] != naive["acc_matrix"]  # the penalty took part in training
    check_documented(module.L2Anchor)
    check_kill_and_resume(tmp_path, crash_and_resume, "l2-anchor")
    check_state_round_trip(tmp_path, "l2-anchor", "cpu")
