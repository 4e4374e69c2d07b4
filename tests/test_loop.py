import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lifelong
from lifelong import loop, store
from lifelong.config import build_config
from lifelong.errors import UserError

from conftest import Crash


def test_results_have_the_design_keys_and_consistent_metrics(tiny):
    run_dir, results = lifelong.run(tiny())
    assert set(store.RESULT_KEYS) <= set(results)
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == results
    R = results["acc_matrix"]
    assert len(R) == 3 and all(len(r) == 3 for r in R)
    assert all(0.0 <= v <= 1.0 for row in R for v in row)
    assert results["acc"] == pytest.approx(sum(R[-1]) / 3)
    assert results["bwt"] == pytest.approx(((R[2][0] - R[0][0]) + (R[2][1] - R[1][1])) / 2)
    assert results["tasks"] == [[0, 1], [2, 3], [4, 5]]
    assert (run_dir / "config.yaml").is_file() and (run_dir / "model.safetensors").is_file()
    events = [r["event"] for r in store.read_metrics(run_dir)]
    assert events == ["random_init"] + (["epoch"] * 2 + ["task"]) * 3
    assert all("val_acc" in r for r in store.read_metrics(run_dir) if r["event"] == "epoch")


def test_training_learns_the_current_task(tiny):
    _, results = lifelong.run(tiny(train={"epochs": 3}))
    diagonal = [results["acc_matrix"][i][i] for i in range(3)]
    assert min(diagonal) > 0.8  # chance is 0.5


def test_same_seed_same_matrix_other_seed_differs(tiny, tmp_path):
    _, a = lifelong.run(tiny(out=str(tmp_path / "a")))
    _, b = lifelong.run(tiny(out=str(tmp_path / "b")))
    _, c = lifelong.run(tiny(out=str(tmp_path / "c"), seed=1))
    assert a["acc_matrix"] == b["acc_matrix"]
    assert a["acc_matrix"] != c["acc_matrix"]


def test_running_a_finished_config_returns_its_results_without_training(tiny):
    run_dir, first = lifelong.run(tiny())
    mtime = (run_dir / "results.json").stat().st_mtime_ns
    _, again = lifelong.run(tiny())
    assert again == first and (run_dir / "results.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("crash_at", [(0, 1), (1, 0), (2, 1)])
@pytest.mark.parametrize("method", ["naive"])  # every method: tests/test_method_contract.py
def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny, tmp_path, method, crash_at, crash_and_resume):
    _, reference = lifelong.run(tiny(method=method, out=str(tmp_path / "ref")))
    run_dir, resumed = crash_and_resume(tiny(method=method, out=str(tmp_path / "crash")), [crash_at])
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert resumed["random_init_acc"] == reference["random_init_acc"]
    events = [r["event"] for r in store.read_metrics(run_dir)]
    assert events.count("task") == 3 and events.count("epoch") == 6


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_reset_optimizer_false_carries_the_optimizer_state_into_the_next_task(optimizer):
    from lifelong.config import TrainConfig
    from lifelong.methods.naive import Naive
    from lifelong.models import build_backbone
    from lifelong.models.heads import Network

    from conftest import make_view

    views = [make_view(0), make_view(1)]

    def trained(reset):
        torch.manual_seed(0)
        build = lambda: Network(build_backbone("mlp", (1, 3, 3), hidden=[4]), "task", [2, 2])  # noqa: E731
        method = Naive(build, Naive.Params(), TrainConfig(optimizer=optimizer, momentum=0.9 * (optimizer == "sgd"),
                                                          reset_optimizer=reset))
        method.before_task(views[0].task)
        for _ in range(3):
            method.train_step(views[0].inputs(slice(None)), views[0].targets, 0)
        before = {p: {k: v.clone() for k, v in method.optimizer.state[p].items()}
                  for p in method.model.backbone.parameters()}
        method.before_task(views[1].task)
        return method, before

    method, before = trained(reset=False)
    for p, state in before.items():  # the backbone's moments (and Adam's step count) go on
        assert state and all(torch.equal(method.optimizer.state[p][k], v) for k, v in state.items())
    assert not any(method.optimizer.state[p] for p in method.model.head(1).parameters())  # new head: fresh
    method, _ = trained(reset=True)
    assert not any(method.optimizer.state[p] for p in method.model.parameters())


@pytest.mark.parametrize("crash_at", [(1, 0), (2, 1)])
def test_resume_with_carried_optimizer_state_equals_an_uninterrupted_run(tiny, tmp_path, crash_at, crash_and_resume):
    config = dict(train={"reset_optimizer": False})
    _, reference = lifelong.run(tiny(out=str(tmp_path / "ref"), **config))
    _, fresh = lifelong.run(tiny(out=str(tmp_path / "fresh")))
    assert reference["acc_matrix"] != fresh["acc_matrix"]
    _, resumed = crash_and_resume(tiny(out=str(tmp_path / "crash"), **config), [crash_at])
    assert resumed["acc_matrix"] == reference["acc_matrix"]


def test_sigkill_then_resume_equals_uninterrupted(tiny, tmp_path):
    """A real process killed with SIGKILL mid-run continues to the same accuracy matrix."""
    config = tiny(out=str(tmp_path / "killed"), data={"max_tasks": 4, "train_fraction": 1.0},
                  train={"epochs": 3, "batch_size": 16})
    cfg = build_config(config)
    run_dir = store.run_directory(cfg)
    script = f"import lifelong; lifelong.run({config!r})"
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [r for r in store.read_metrics(run_dir) if r["event"] == "task"]
        if len(done) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    resumed = lifelong.resume(run_dir)
    _, reference = lifelong.run({**config, "out": str(tmp_path / "reference")})
    assert resumed["acc_matrix"] == reference["acc_matrix"]


def test_checkpoint_of_another_config_is_refused(tiny):
    cfg = build_config(tiny())
    run_dir = store.run_directory(cfg)
    store.write_config(run_dir, cfg)
    with pytest.raises(Crash):
        loop.execute(cfg, run_dir, progress=False, on_checkpoint=lambda s: (_ for _ in ()).throw(Crash()))
    store.write_config(run_dir, build_config(tiny(seed=5)))
    with pytest.raises(UserError, match="does not match its config.yaml"):
        lifelong.resume(run_dir)


def test_corrupt_checkpoint_is_a_user_error(tiny):
    cfg = build_config(tiny())
    run_dir = store.run_directory(cfg)
    store.write_config(run_dir, cfg)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        lifelong.resume(run_dir)


def test_checkpoints_load_without_unpickling_code(tiny):
    run_dir, _ = lifelong.run(tiny())
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["loop"]["task"] == 3


def test_iterations_override_epochs(tiny):
    run_dir, _ = lifelong.run(tiny(train={"iterations": 7, "batch_size": 32}, data={"max_tasks": 1}))
    epochs = [r for r in store.read_metrics(run_dir) if r["event"] == "epoch"]
    # 162 training samples / 32 = 6 batches per epoch, so 7 steps = one full epoch + one step
    assert len(epochs) == 2


def test_class_incremental_naive_forgets_everything_but_joint_does_not(tiny, tmp_path):
    base = tiny(scenario=None, data={"scenario": "class"}, train={"epochs": 3})
    base.pop("scenario")
    _, naive = lifelong.run({**base, "out": str(tmp_path / "n")})
    _, joint = lifelong.run({**base, "method": "joint", "out": str(tmp_path / "j")})
    assert naive["acc_matrix"][2][0] < 0.2  # old classes are never predicted after the last task
    assert joint["acc_matrix"][2][0] > 0.5


def test_unknown_method_or_cuda_without_gpu(tiny):
    with pytest.raises(UserError, match="unknown method 'nope'"):
        lifelong.run(tiny(method="nope"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            lifelong.run(tiny(device="cuda"))


def test_a_diverging_run_stops_with_a_user_error_at_its_last_checkpoint(tiny):
    cfg = tiny(train={"optimizer": "sgd", "lr": 1e12, "epochs": 2})
    with pytest.raises(UserError, match=r"training diverged: the loss of task 1, epoch \d is (nan|inf).*train.lr"):
        lifelong.run(cfg)
    assert not any(r["event"] == "task" for r in store.read_metrics(next((Path(cfg["out"])).iterdir())))


def test_validation_accuracy_of_every_task_after_each_task(tiny):
    """val_acc_matrix: what a sweep selects on, shaped like acc_matrix, from the validation rows only."""
    import lifelong

    _, results = lifelong.run(tiny())
    matrix = results["val_acc_matrix"]
    assert len(matrix) == len(results["acc_matrix"]) and all(len(r) == len(results["tasks"]) for r in matrix)
    assert all(0.0 <= a <= 1.0 for row in matrix for a in row) and matrix != results["acc_matrix"]
    _, without = lifelong.run(tiny(data={"validation": 0.0}))
    assert "val_acc_matrix" not in without
