"""train.precision (bf16, fp16 autocast; fp16 with loss scaling) and channels_last for conv backbones on CUDA."""

import pytest
import torch

import lifelong
from lifelong.config import build_config
from lifelong.errors import UserError


def test_precision_is_hashed_only_when_set(tiny):
    assert build_config(tiny()).fingerprint() == build_config(tiny(train={"precision": "fp32"})).fingerprint()
    assert build_config(tiny()).fingerprint() != build_config(tiny(train={"precision": "bf16"})).fingerprint()
    with pytest.raises(UserError, match="train.precision"):
        build_config(tiny(train={"precision": "fp8"}))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_learn_like_fp32(tiny, tmp_path, precision):
    _, full = lifelong.run(tiny(out=str(tmp_path / "fp32")))
    _, mixed = lifelong.run(tiny(out=str(tmp_path / precision), train={"precision": precision}))
    assert mixed["config"]["train"]["precision"] == precision
    assert abs(mixed["acc"] - full["acc"]) < 0.1 and min(mixed["acc_matrix"][i][i] for i in range(3)) > 0.8


def test_fp16_is_refused_by_a_method_with_its_own_step(tiny):
    with pytest.raises(UserError, match="fp16 needs loss scaling, which method si"):
        lifelong.run(tiny(method="si", train={"precision": "fp16"}))


def test_conv_backbones_go_channels_last_on_cuda_only(monkeypatch):
    from lifelong.data.benchmarks import build_benchmark
    from lifelong.learner import Learner

    cfg = build_config({"device": "cpu", "model": {"name": "alexnet"},
                        "data": {"benchmark": "quickstart", "rgb32": True, "max_tasks": 1, "train_fraction": 0.05}})
    method = Learner.for_benchmark(cfg, build_benchmark(cfg.data, 0), torch.device("cpu")).method
    convs = [m.weight for m in method.model.modules() if isinstance(m, torch.nn.Conv2d)]
    with method.train_context():
        pass
    assert not any(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    monkeypatch.setattr(type(method), "device", lambda self: torch.device("cuda"))  # the same path as on a GPU
    with method.train_context():
        pass
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_a_resumed_fp16_run_keeps_its_loss_scale(tiny, tmp_path, crash_and_resume):
    """The GradScaler's scale and growth count are checkpointed: a run crashed mid-task and at a task boundary
    resumes with the scaler state an uninterrupted run has (a fresh scaler would restart its growth count)."""
    from lifelong import store

    config = tiny(train={"precision": "fp16"})
    ref_dir, reference = lifelong.run({**config, "out": str(tmp_path / "ref")})
    seen = []
    run_dir, resumed = crash_and_resume({**config, "out": str(tmp_path / "crash")}, [(1, 1), (2, 0)],
                                        inspect=lambda d, s: seen.append(store.load_checkpoint(d)["method"]["scaler"]))
    assert all(s["_growth_tracker"] > 0 for s in seen)  # the crashes came mid-count
    scaler = store.load_checkpoint(ref_dir)["method"]["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] > seen[-1]["_growth_tracker"]
    assert store.load_checkpoint(run_dir)["method"]["scaler"] == scaler
    assert resumed["acc_matrix"] == reference["acc_matrix"]


def test_a_saved_fp16_learner_keeps_its_loss_scale(tmp_path):
    from lifelong.learner import Learner

    learner = Learner.create("naive", "mlp", input_shape=(4,), classes=2, config={"train": {"precision": "fp16"}})
    for _ in range(3):
        learner.learn(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    learner.save(tmp_path / "learner.pt")
    loaded = Learner.load(tmp_path / "learner.pt")
    assert loaded.method._scaler.state_dict() == learner.method._scaler.state_dict()
    assert learner.method._scaler.state_dict()["_growth_tracker"] == 3
