"""The contract every registered method keeps, checked for each entry of METHODS (a new method gets it free):
hyperparameters documented, kill/resume equal to an uninterrupted run, state that round-trips exactly and
lands on the run's device."""

import pytest
import torch

import lifelong
from lifelong import loop, store
from lifelong.config import build_config
from lifelong.data.benchmarks import build_benchmark
from lifelong.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# What a method needs beyond the tiny MLP config (its own backbone, small inner phases).
NEEDS = {
    "gs-mask": {"model": {"name": "gs-conv", "filters": 8},
                "gs-mask": {"meta_every": 1, "num_iterations": 1, "meta_batch": 2, "inner_steps": 2, "ways": 2,
                            "shots": 4, "min_free_share": 0.0}},
    "mark": {"data": {"rgb32": True}, "model": {},  # its own network: a model section only draws a warning
             "mark": {"kb_channels": [8, 8, 8], "latent": 16, "features": 8, "extractor_epochs": 1, "kb_epochs": 1,
                      "mask_epochs": 1, "meta_epochs": 1, "mini_tasks": 2, "inner_loop": 2}},
    "ebll": {"ebll": {"code_size": 8, "ae_epochs": 2}},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def contract_config(tmp_path, name, out, **extra):
    """3 quickstart tasks of 2 epochs, a small fraction of the data: a run of a second or two."""
    cfg = {"method": name, "device": "cpu", "out": str(tmp_path / out),
           "data": {"benchmark": "quickstart", "max_tasks": 3, "train_fraction": 0.08, "validation": 0.0},
           "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 2, "batch_size": 16}}
    if "task" not in METHODS[name].scenarios:  # e.g. icarl: class-incremental only
        cfg["data"]["scenario"] = METHODS[name].scenarios[0]
    if "memory" in METHODS[name].extra_sections:  # a memory that fits the small data
        cfg["memory"] = {"size": 24, "batch_size": 8}
    for key, value in {**NEEDS.get(name, {}), **extra}.items():
        merge = isinstance(cfg.get(key), dict) and key != "model"  # another backbone brings its own options
        cfg[key] = {**cfg[key], **value} if merge else value
    return cfg


TIMINGS = {"seconds"}  # wall-clock figures a method may report: the only values allowed to differ


def equal(a, b) -> bool:
    """Nested states equal: same structure, tensors equal in dtype, shape and every value (timings aside)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a if k not in TIMINGS)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def tensors(state):
    if torch.is_tensor(state):
        yield state
    elif isinstance(state, dict):
        for v in state.values():
            yield from tensors(v)
    elif isinstance(state, (list, tuple)):
        for v in state:
            yield from tensors(v)


def check_documented(method_class) -> None:
    assert method_class.name and method_class.description, f"{method_class.__name__} needs a name and description"
    for field, info in method_class.Params.model_fields.items():
        assert info.description, f"{method_class.name}: Params.{field} has no description"


def check_kill_and_resume(tmp_path, crash_and_resume, name, **extra) -> None:
    """Crash mid-task with the method's state from task 1 in place, and at a task boundary; resume to the end."""
    ref_dir, reference = lifelong.run(contract_config(tmp_path, name, "ref", **extra))
    run_dir, resumed = crash_and_resume(contract_config(tmp_path, name, "crash", **extra), [(1, 1), (2, 0)])
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert equal(resumed["method_info"], reference["method_info"])
    assert equal(store.read_metrics(run_dir), store.read_metrics(ref_dir))
    assert equal(store.load_checkpoint(run_dir)["method"], store.load_checkpoint(ref_dir)["method"])


def check_state_round_trip(tmp_path, name, device) -> None:
    """A finished run's checkpoint, restored by the loop onto ``device`` into a fresh method, is the same
    state, with every tensor of it on the model's device."""
    run_dir, _ = lifelong.run(contract_config(tmp_path, name, "state"))
    saved = store.load_checkpoint(run_dir)["method"]
    cfg = build_config(contract_config(tmp_path, name, "state", device=device))
    torch.manual_seed(1)  # a fresh method that differs from the trained one
    method = loop.build_method(cfg, build_benchmark(cfg.data, cfg.seed), torch.device(device))
    loop._Checkpointer(run_dir, store.read_config(run_dir), torch.Generator(), torch.device(device)).restore(method)
    restored = method.state_dict()
    assert equal(restored, saved)
    model_device = next(method.model.parameters()).device
    assert all(t.device == model_device for t in tensors(restored["extra"])), "extra state off the model's device"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_params_are_documented(name):
    check_documented(METHODS[name])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path, crash_and_resume, name):
    check_kill_and_resume(tmp_path, crash_and_resume, name)


@pytest.mark.parametrize("name", ["ewc", "si", "er", "single-task"])
def test_kill_and_resume_on_a_task_conditioned_backbone(tmp_path, crash_and_resume, name):
    """gs-conv's BatchNorms and calibrations of each task, built at the task's start (er: mixed batches of tasks;
    single-task: a fresh network per task), resume like the heads do; linear probes read each task's features."""
    check_kill_and_resume(tmp_path, crash_and_resume, name, model={"name": "gs-conv", "filters": 8},
                          data={"scenario": "task"}, train={"epochs": 2, "batch_size": 16, "probe": True})


@pytest.mark.parametrize("name", sorted(n for n, m in METHODS.items() if "class" in m.scenarios))
def test_class_incremental_runs_with_every_output_trained(tmp_path, name):
    """train.unseen_outputs trained (the head's outputs of classes not reached yet take part from the first task):
    every class-incremental method runs through, its accuracies in [0, 1]."""
    cfg = contract_config(tmp_path, name, "runs", data={"scenario": "class"}, train={"unseen_outputs": "trained"})
    _, results = lifelong.run(cfg, progress=False)
    matrix = results["acc_matrix"]
    assert len(matrix) == 3 and all(0.0 <= a <= 1.0 for row in matrix for a in row)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_round_trips_onto_the_runs_device(tmp_path, name, device):
    check_state_round_trip(tmp_path, name, device)


def test_the_state_comparison_sees_a_changed_value():
    a = {"x": [torch.zeros(3), 1.0], "y": None}
    b = {"x": [torch.tensor([0.0, 0.0, 1e-7]), 1.0], "y": None}
    assert equal(a, a) and not equal(a, b) and not equal(a, {"x": [torch.zeros(3)], "y": None})
    assert equal({"seconds": 1.0, "acc": 0.5}, {"seconds": 2.0, "acc": 0.5})
    assert not equal({"seconds": 1.0, "acc": 0.5}, {"seconds": 1.0, "acc": 0.6})
