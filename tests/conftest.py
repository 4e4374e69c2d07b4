"""Shared fixtures: tiny real runs on the Fashion-MNIST subset shipped with the package."""

import pytest
import torch

from lifelong.data.arrays import ImageArrays
from lifelong.data.batches import TaskView
from lifelong.data.scenarios import Task


def make_view(task_id, n=10, seed=0):
    """A 2-class task of n random 1×3×3 images, as the TaskView that after_task receives."""
    g = torch.Generator().manual_seed(seed + task_id)
    arrays = ImageArrays(torch.randint(0, 256, (n, 1, 3, 3), dtype=torch.uint8, generator=g),
                         torch.randint(0, 2, (n,), generator=g))
    task = Task(task_id, f"t{task_id}", [0, 1], ["a", "b"], arrays, arrays, mean=(0.5,), std=(0.3,))
    return TaskView(task, arrays, torch.device("cpu"))


def tiny_config(runs_dir, /, **sections):
    """A config dict for a run that takes about a second: 3 quickstart tasks, a small MLP, a data fraction;
    its runs go to ``runs_dir`` unless a section sets ``out``."""
    cfg = {
        "out": str(runs_dir),
        "device": "cpu",
        "data": {"benchmark": "quickstart", "max_tasks": 3, "train_fraction": 0.3, "validation": 0.1},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
        "train": {"epochs": 2, "batch_size": 32},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def tiny(tmp_path):
    """tiny_config with run directories under the test's tmp_path/runs."""
    return lambda **sections: tiny_config(tmp_path / "runs", **sections)


class Crash(Exception):
    """Raised from a checkpoint hook to simulate a crash."""


@pytest.fixture
def crash_and_resume():
    """Run a config crashing right after the checkpoint of each (task, epoch) in ``crash_points`` — every crash
    continuing the same run directory — then resume it to the end; returns (run_dir, results).
    ``inspect(run_dir, state)`` can look at the checkpoint before each crash."""
    import lifelong
    from lifelong import loop, store
    from lifelong.config import build_config

    def go(config, crash_points, inspect=None):
        cfg = build_config(config)
        run_dir = store.run_directory(cfg)
        store.write_config(run_dir, cfg)
        for crash_at in crash_points:
            def crash(state, crash_at=crash_at):
                if (state.task, state.epoch) == crash_at:
                    if inspect is not None:
                        inspect(run_dir, state)
                    raise Crash

            with pytest.raises(Crash):
                loop.execute(cfg, run_dir, progress=False, on_checkpoint=crash)
            assert not (run_dir / "results.json").exists()
        return run_dir, lifelong.resume(run_dir)

    return go


@pytest.fixture
def one_thread():
    """Small convs gain nothing from a second thread, and lose much when another process keeps it busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
