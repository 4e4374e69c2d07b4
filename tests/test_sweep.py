"""lifelong sweep: grid and random trials, chosen on validation accuracy over every task seen, never on test data."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from lifelong import lock, store, sweep
from lifelong.cli import main
from lifelong.errors import UserError


def spec(tiny, **extra):
    return sweep.sweep_from_dict({"name": "t", "base": tiny(method="ewc", train={"epochs": 1}),
                                  "params": {"ewc.lam": [1, 100000]}, **extra})


def test_grid_is_the_product_and_random_draws_are_reproducible(tiny):
    grid = spec(tiny, params={"ewc.lam": [1, 10], "train.lr": [0.1, 0.01, 0.001]})
    assert len(sweep.trials(grid)) == 6 and sweep.trials(grid)[1] == {"ewc.lam": 1, "train.lr": 0.01}
    rnd = spec(tiny, search="random", trials=5, params={"train.lr": {"log_uniform": [1e-4, 1e-2]},
                                                        "ewc.lam": {"choice": [1, 10]}})
    drawn = sweep.trials(rnd)
    assert drawn == sweep.trials(rnd) and all(1e-4 <= t["train.lr"] <= 1e-2 for t in drawn)
    assert drawn != sweep.trials(rnd.model_copy(update={"sample_seed": 1}))


@pytest.mark.parametrize("extra, message", [
    ({"params": {"train.lr": {"uniform": [0.1, 0.2]}}}, "a grid search needs a list"),
    ({"search": "random", "params": {"train.lr": [0.1]}}, "needs `trials`"),
    ({"search": "random", "trials": 2, "params": {"train.lr": {"log_uniform": [0, 1]}}}, "low > 0"),
    ({"params": {"train.lr": {"normal": [0, 1]}}}, "must be a list of values or one of"),
    ({"params": {"train.lr": []}}, "lists no values"),
    ({"params": {"seed": [0, 7]}}, "sweep params cannot vary 'seed': list the seeds under `seeds`"),
    ({"search": "bayes"}, "invalid sweep key 'search'"),
    ({"seeds": [1, 1]}, "invalid sweep key 'seeds': seed 1 is given twice"),
    ({"seeds": []}, "invalid sweep key 'seeds': give at least one seed"),
])
def test_bad_sweep_files_are_user_errors(tiny, extra, message):
    with pytest.raises(UserError, match=message):
        spec(tiny, **extra)


def test_a_sweep_without_validation_data_is_refused(tiny):
    with pytest.raises(UserError, match="set data.validation above 0"):
        sweep.sweep_from_dict({"base": tiny(data={"validation": 0.0}), "params": {"train.lr": [0.1]}})


def test_trials_are_ranked_on_validation_accuracy_not_test():
    def entry(variant, val, test):
        return {"variant": variant, "run_dir": "x", "error": None, "val_acc": val,
                "results": {"acc": test, "bwt": 0.0, "train_seconds": 1.0}}

    tried = [{"k": 1}, {"k": 2}, {"k": 3}]
    entries = [entry("k=1", 0.5, 0.9), entry("k=2", 0.8, 0.1),
               {"variant": "k=3", "run_dir": "x", "error": "diverged", "results": None}]
    rows = sweep.trial_table(entries, tried)
    assert [r["trial"] for r in rows] == ["k=2", "k=1", "k=3"] and rows[2]["error"] == "diverged"


def test_the_loops_validation_matrix_is_used_when_results_hold_one():
    results = {"val_acc_matrix": [[0.9, 0.0], [0.6, 0.8]], "acc_matrix": [[0.1, 0.0], [0.1, 0.1]]}
    assert sweep.final_validation_accuracy(Path("nowhere"), results) == pytest.approx(0.7)


def test_cli_sweep_chooses_writes_tables_and_a_config_that_reproduces_the_trial(tiny, tmp_path, capsys):
    raw = {"name": "lam", "base": tiny(method="ewc", train={"epochs": 1}),
           "params": {"ewc.lam": [1, 1.0e12]}}  # λ 1e12 wrecks every task after the first
    path = tmp_path / "sweep.yml"
    path.write_text(yaml.safe_dump(raw))
    best_out = tmp_path / "best" / "ewc.yml"
    assert main(["sweep", "--config", str(path), "--best-out", str(best_out)]) == 0
    assert "Chosen: ewc.lam=1 " in capsys.readouterr().out
    folder = next((tmp_path / "runs").glob("sweep-lam-*"))
    rows = json.loads((folder / "trials.json").read_text())
    assert [r["params"]["ewc.lam"] for r in rows] == [1, 1.0e12] and rows[0]["val_acc"][0] > rows[1]["val_acc"][0]
    run_dir = Path(rows[0]["run_dirs"][0])
    by_hand = sweep._evaluate_validation(run_dir)
    assert rows[0]["val_acc"][0] == pytest.approx(sum(by_hand) / len(by_hand))
    assert (folder / "trials.md").read_text().startswith("| rank | ewc.lam |")
    text = best_out.read_text()
    assert text == (folder / "best.yml").read_text() and text.startswith(f"# Chosen by `lifelong sweep --config {path}`")
    loaded = yaml.safe_load(text)
    assert "out" not in loaded and "data_dir" not in loaded["data"] and loaded["ewc"] == {"lam": 1}
    mtime = (run_dir / store.RESULTS_FILE).stat().st_mtime_ns
    assert main(["run", "--config", str(best_out), "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert (run_dir / store.RESULTS_FILE).stat().st_mtime_ns == mtime  # the same run: found, not retrained


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    assert sweep.trials(sweep.sweep_from_dict(yaml.safe_load(path.read_text())))


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "best").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_best_configs_build_and_name_their_sweep(path):
    from lifelong.config import build_config

    text = path.read_text()
    assert text.startswith("# Chosen by `lifelong sweep --config configs/sweeps/")
    build_config(yaml.safe_load(text))


def test_asha_without_ray_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    with pytest.raises(UserError, match=r"pip install 'lifelong\[ray\]'"):
        sweep.run_sweep(spec(tiny, scheduler="asha"))
    with pytest.raises(UserError, match="add `scheduler: asha`"):
        spec(tiny, grace_tasks=2)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'lifelong[ray]')")
def test_asha_stops_poor_runs_after_a_task_and_never_chooses_them(tiny):
    """Four λ on a local Ray instance, one trial at a time (grid order, so ASHA's decisions are fixed): λ 1e12 and
    1e9 lose at the rung of 2 tasks and stop there; the choice is a run that finished every task."""
    raw = {"name": "asha", "base": tiny(method="ewc", data={"max_tasks": 4}, train={"epochs": 1}),
           "params": {"ewc.lam": [1, 1.0e12, 1.0e9, 10]}, "scheduler": "asha"}
    rows, best = sweep.run_sweep(sweep.sweep_from_dict(raw))
    stopped = [r for r in rows if r["error"] and r["error"].startswith("stopped by asha after")]
    assert {r["params"]["ewc.lam"] for r in stopped} == {1.0e12, 1.0e9}
    assert best["params"]["ewc.lam"] in (1, 10) and best["runs"] == 1 and best["error"] is None
    finished = [r for r in rows if r["error"] is None]
    assert all(store.read_results(Path(r["run_dirs"][0]))["val_acc_matrix"] for r in finished)

    # A stopped run's worker was killed mid-run: whatever lock file it left is free to take (a dead owner's
    # flock is released), and the same sweep without the scheduler resumes it from its checkpoint to the end,
    # with the results of a run that was never stopped.
    for row in stopped:
        run_dir = Path(row["run_dirs"][0])
        assert store.load_checkpoint(run_dir) is not None and not (run_dir / "results.json").exists()
        with lock.run_lock(run_dir):
            pass
    plain, _ = sweep.run_sweep(sweep.sweep_from_dict({**raw, "scheduler": "none"}))
    assert all(r["error"] is None for r in plain)
    again = {r["params"]["ewc.lam"]: store.read_results(Path(r["run_dirs"][0])) for r in plain}
    fresh = sweep.run_sweep(sweep.sweep_from_dict(
        {**raw, "scheduler": "none", "params": {"ewc.lam": [1.0e9]},
         "base": {**raw["base"], "out": str(Path(raw["base"]["out"]).parent / "fresh")}}))[0][0]
    assert store.read_results(Path(fresh["run_dirs"][0]))["acc_matrix"] == again[1.0e9]["acc_matrix"]
