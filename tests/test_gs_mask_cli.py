"""Document 000's command with our entry point: flag mapping, the shipped configs it equals, bad values, and the
cifar100 / multi / pmnist runs end to end on generated data in the official formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lifelong import cli
from lifelong.config import build_config, read_yaml
from lifelong.data import sources

from fakedata import checksum_tables, make_data_root, patch_checksums

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "notmnist")


def settings(argv: list[str]):
    args = cli._parser().parse_args(["run", *argv])
    return build_config(*cli._run_settings(args))


@pytest.mark.parametrize("dataset,benchmark_name", [("pmnist", "pmnist"), ("cifar100", "split-cifar100"),
                                               ("multi", "multi")])
def test_origin_command_equals_the_shipped_config(dataset, benchmark_name):
    cfg = settings(["--dataset", dataset, "--meta-learn", "True", "--task-reg", "gs_mask", "--num-iterations", "50"])
    shipped = build_config(read_yaml(ROOT / "configs" / f"gs_mask_{dataset}.yml"))
    assert cfg.method_params("gs-mask") == shipped.method_params("gs-mask")
    strip = lambda c: {k: v for k, v in c.to_dict().items() if k != "gs-mask"}  # noqa: E731
    assert strip(cfg) == strip(shipped)
    assert (cfg.method, cfg.data.benchmark, cfg.model.name) == ("gs-mask", benchmark_name, "gs-conv")
    assert (cfg.train.epochs, cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.data.validation) == (
        50, "sgd", 0.003, 64, 0.15)
    assert cfg.data.num_tasks == {"pmnist": 10, "cifar100": 20, "multi": None}[dataset]


def test_meta_learn_false_is_the_ablation_and_flags_still_override():
    cfg = settings(["--dataset", "pmnist", "--meta-learn", "False", "--task-reg", "gs_mask", "--num-iterations", "7",
                    "--epochs", "3", "--set", "gs-mask.meta_algo=reptile"])
    params = cfg.method_params("gs-mask")
    assert (params.meta_learn, params.num_iterations, params.meta_algo, cfg.train.epochs) == (False, 7, "reptile", 3)
    cfg = settings(["--config", str(ROOT / "configs" / "gs_mask_multi.yml"), "--meta-learn", "false"])
    assert cfg.method_params("gs-mask").meta_learn is False and cfg.data.benchmark == "multi"


@pytest.mark.parametrize("argv,fragment", [
    (["--dataset", "mnist"], "--dataset must be one of pmnist, cifar100, multi"),
    (["--dataset", "pmnist", "--meta-learn", "maybe"], "--meta-learn expects True or False"),
    (["--dataset", "pmnist", "--task-reg", "ewc"], "--task-reg must be gs_mask"),
    (["--dataset", "pmnist", "--num-iterations", "many"], "--num-iterations expects a positive integer"),
    (["--dataset", "pmnist", "--num-iterations", "0"], "gs-mask.num_iterations"),
    (["--dataset", "pmnist", "--config", "x.yml"], "either --dataset or --config"),
    (["--dataset", "pmnist", "--benchmark", "split-mnist"], "use either --dataset or --benchmark"),
    (["--meta-learn", "False"], "add --task-reg gs_mask (or --method gs-mask)"),  # was: section not used by naive
    (["--num-iterations", "3", "--method", "ewc"], "set gs-mask's meta-iteration"),
    (["--method", "gs-mask", "--device", "cpu", "--model", "mlp"], "runs on its own network, gs-conv"),
    (["--method", "gs-mask", "--device", "cpu", "--scenario", "class"], "serves only task-incremental scenarios"),
])
def test_bad_values_exit_2_with_one_line(argv, fragment, tmp_path, capsys):
    assert cli.main(["run", *argv, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_data_root(root, DATASETS, 3)
    return root, checksum_tables(root)


@pytest.fixture
def root(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_ROOTS", ())
    patch_checksums(monkeypatch, data[0], tables=data[1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield data[0]
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset,tasks,extra", [
    ("cifar100", [list(range(0, 5)), list(range(5, 10))], ["--max-tasks", "2"]),
    ("multi", [list(range(10))] * 5, []),
    ("pmnist", [list(range(10))] * 2, ["--max-tasks", "2"]),
])
def test_origin_command_runs_end_to_end(dataset, tasks, extra, root, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(["run", "--dataset", dataset, "--meta-learn", "True", "--task-reg", "gs_mask",
                     "--num-iterations", "1", "--data-dir", str(root), "--out", str(out), "--device", "cpu",
                     "--epochs", "2", "--quiet", *extra, "--set", "gs-mask.meta_every=1", "--set",
                     "gs-mask.meta_batch=2", "--set", "gs-mask.inner_steps=2", "--set", "gs-mask.shots=4",
                     "--set", "gs-mask.min_free_share=0"])
    assert code == 0, capsys.readouterr().err
    [run_dir] = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == tasks and results["method"] == "gs-mask" and results["scenario"] == "task"
    assert results["bwt"] == 0.0
    matrix = results["acc_matrix"]
    assert all(matrix[i][j] == matrix[j][j] for i in range(len(tasks)) for j in range(i))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["event"] == "task"][-1]["gs_mask"]
    assert last["filters_owned"] == results["method_info"]["filters_owned"]
    assert last["filters_free"] == [32 - sum(layer) for layer in last["filters_owned"]]


def test_gs_mask_alone_picks_its_network_and_other_methods_keep_theirs():
    assert settings(["--method", "gs-mask"]).model.name == "gs-conv"
    named = build_config({"method": "gs-mask", "model": {"name": "gs-conv"}})
    assert build_config({"method": "gs-mask"}).fingerprint() == named.fingerprint()  # one experiment, one directory
    assert settings(["--method", "gs-mask", "--model", "mlp"]).model.name == "mlp"  # refused when the method starts
    for method in ("naive", "ewc", "mas", "lwf", "er"):
        assert build_config({"method": method}).model.name == "mlp"
    # the fingerprint of a config at defaults, as before gs-mask declared its default model
    assert build_config({"method": "ewc"}).fingerprint().startswith("41e790ee7243eaec")


def test_gs_mask_runs_made_before_its_fixes_are_not_reused(monkeypatch):
    """gs-mask's results changed for unchanged configs (issue 18): its revision is hashed into the fingerprint."""
    from lifelong.config import build_config
    from lifelong.methods import METHODS

    raw = {"method": "gs-mask", "data": {"benchmark": "split-mnist", "scenario": "task"}}
    assert METHODS["gs-mask"].revision >= 1
    now = build_config(raw).fingerprint()
    monkeypatch.setattr(METHODS["gs-mask"], "revision", 0)
    assert build_config(raw).fingerprint() != now
