"""Checkpoints restore onto the run's device once, in the loop, and every method's state follows the model there.

This machine has no GPU, and a CPU → CPU move cannot show a tensor left behind. So the move goes to a simulated
device: tensors that report ``meta`` as their device (the one device type a CPU-only torch can put behind a
tensor and guard) but keep real values on the CPU, computed there under ``SimulatedDevice``. A method restored
onto it by the loop's own path must hold nothing that still reports ``cpu``; an operation mixing the two (as
CUDA would refuse) raises. Restoring needs no gradients, so the tests restore under ``torch.no_grad``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

import lifelong
from lifelong import loop, store
from lifelong.config import build_config
from lifelong.data.benchmarks import build_benchmark
from lifelong.methods import METHODS
from test_method_contract import contract_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TARGET = torch.device("meta")
CROSS_DEVICE = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default, torch.ops.aten.index.Tensor,
                torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default}  # allowed CPU ↔ GPU, as on CUDA
CPU_BY_DESIGN = ("generator",)  # a torch.Generator() state: CPU generators keep their state on the CPU


class OnTarget(torch.Tensor):
    """A CPU tensor ``value`` that reports TARGET as its device."""

    @staticmethod
    def __new__(cls, value: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, value.shape, strides=value.stride(), dtype=value.dtype,
                                                   storage_offset=value.storage_offset(), device=TARGET,
                                                   requires_grad=value.requires_grad)

    def __init__(self, value: torch.Tensor):
        self.value = value

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on a simulated-device tensor outside SimulatedDevice")


class SimulatedDevice(TorchDispatchMode):
    """Runs every operation on the CPU values; outputs land on TARGET when an input did or ``device=`` asks."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on_target, on_cpu = [], []

        def unwrap(x):
            if isinstance(x, OnTarget):
                on_target.append(x)
                return x.value
            if isinstance(x, torch.Tensor):
                on_cpu.append(x)
            return torch.device("cpu") if isinstance(x, torch.device) and x.type == TARGET.type else x

        asked = kwargs.get("device")
        args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
        if on_target and func not in CROSS_DEVICE and any(t.dim() > 0 for t in on_cpu):
            raise RuntimeError(f"{func} mixes tensors on {TARGET} and on the cpu")
        out = func(*args, **kwargs)
        wrap = torch.device(asked).type == TARGET.type if asked is not None else bool(on_target)
        return tree_map(lambda x: OnTarget(x) if wrap and isinstance(x, torch.Tensor) else x, out)


def placed(obj, path: str, seen: set[int], found: list[tuple[str, torch.device]]) -> None:
    """Every tensor reachable from ``obj`` (state dicts, modules, optimizers, the method's own objects), with
    its device: extra state, optimizer state, memory buffers, teacher copies, penalties."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        found.append((path, obj.device))
    elif isinstance(obj, torch.nn.Module):
        for name, value in obj.state_dict(keep_vars=True).items():
            placed(value, f"{path}.{name}", seen, found)
        for name, value in vars(obj).items():
            if not name.startswith("_"):
                placed(value, f"{path}.{name}", seen, found)
    elif isinstance(obj, torch.optim.Optimizer):
        placed(obj.state_dict(), f"{path}.state_dict()", seen, found)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            placed(value, f"{path}[{key!r}]", seen, found)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            placed(value, f"{path}[{i}]", seen, found)
    elif type(obj).__module__.startswith("lifelong.") and hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            placed(value, f"{path}.{name}", seen, found)


def left_behind(method) -> tuple[int, list[str]]:
    """(tensors seen, those not on TARGET) in the method and in its state_dict()."""
    found: list[tuple[str, torch.device]] = []
    placed(method, "method", set(), found)
    placed(method.state_dict(), "state_dict()", set(), found)
    off = [f"{path} on {device}" for path, device in found
           if device != TARGET and not path.endswith(tuple(f"[{k!r}]" for k in CPU_BY_DESIGN))]
    return len(found), off


def restored_on_target(tmp_path, name: str) -> tuple[int, list[str]]:
    """Train ``name`` a little on the CPU (3 tasks), then restore its checkpoint through the loop onto TARGET."""
    run_dir, _ = lifelong.run(contract_config(tmp_path, name, "move"))
    cfg = build_config(contract_config(tmp_path, name, "move"))
    with torch.no_grad(), SimulatedDevice():
        method = loop.build_method(cfg, build_benchmark(cfg.data, cfg.seed), TARGET)
        loop._Checkpointer(run_dir, store.read_config(run_dir), torch.Generator(), TARGET).restore(method)
        result = left_behind(method)
        del method  # its parameters need the mode: nothing may touch them after it
    return result


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_state_follows_a_device_move(tmp_path, name):
    count, off = restored_on_target(tmp_path, name)
    assert count > 0
    assert not off, f"{name}: tensors left behind: {off[:5]}"


def test_the_check_sees_state_the_loop_did_not_move(tmp_path, monkeypatch):
    """Without the loop's one move, the restored state stays on the CPU, and the test says so."""
    monkeypatch.setattr(loop, "on_device", lambda state, device: state)
    with pytest.warns(UserWarning, match="no-op"):  # torch: copying CPU weights into TARGET parameters is skipped
        count, off = restored_on_target(tmp_path, "ewc")
    assert any("['extra']" in path for path in off)


def test_the_simulated_device_refuses_mixed_operations():
    with torch.no_grad(), SimulatedDevice():
        x = torch.ones(3, device=TARGET)
        assert (x * 2).device == TARGET and x.cpu().device.type == "cpu" and float(x.sum()) == 3.0
        assert (x + torch.tensor(1.0)).device == TARGET  # a CPU scalar mixes in, as on CUDA
        with pytest.raises(RuntimeError, match="mixes"):
            x + torch.ones(3)


def test_cuda_without_a_gpu_is_a_user_error(monkeypatch):
    """Asking for CUDA on a machine without one says so in one line, in words that fit the API and the CLI."""
    from lifelong.errors import UserError
    from lifelong.learner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU is available; use device cpu or auto"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
