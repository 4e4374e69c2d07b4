"""Hostile inputs end in one line on stderr and exit code 2, never a traceback (issue 19); no training runs."""

import errno
import os
import shutil

import pytest
import torch

import lifelong
from lifelong import store
from lifelong.cli import main
from lifelong.config import build_config

TINY = ["--max-tasks", "2", "--train-fraction", "0.1", "--epochs", "1", "--device", "cpu", "--quiet",
        "--set", "data.validation=0"]


def one_line_error(capsys, argv):
    """Run the CLI; assert exit 2 with exactly one line on stderr and no traceback; return that line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lifelong: error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


CONFIG_FILES = {
    "date": "seed: 2020-01-01\n",
    "binary": "train: {lr: !!binary aGVsbG8=}\n",
    "recursive": "a: &a [*a]\n",
    "duplicate": "seed: 1\nseed: 2\n",
    "list": "[1, 2]\n",
    "hidden-zero": "model: {hidden: [0]}\n",
    "hidden-negative": "model: {hidden: [-5]}\n",
    "unused-section": "method: naive\newc: {lam: 10}\n",
    "huge-int": "seed: " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_hostile_config_files(tmp_path, capsys, name):
    path = tmp_path / "c.yml"
    path.write_text(CONFIG_FILES[name])
    one_line_error(capsys, ["run", "--config", path, "--out", tmp_path / "runs", *TINY])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_config_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "c.yml"
    path.write_bytes(b"seed: \xff\xfe\n")
    assert "not UTF-8" in one_line_error(capsys, ["run", "--config", path])


@pytest.mark.parametrize("argv", [
    ["--set", "data.class_order=[]"],
    ["--set", "data.class_order=[[1,1]]"],
    ["--seed", "1180591620717411303424"],
    ["--set", "train.lr=" + "1" * 100_000],
    ["--method", "m" * 100_000],
    ["--set", "seed=true"],
    ["--set", "train.lr=.inf"],
    ["--max-tasks", "100"],
    ["--set", "model.hidden=[0]"],
    ["--benchmark", "no-such"],
], ids=lambda a: " ".join(a)[:40])
def test_hostile_flags(tmp_path, capsys, argv):
    one_line_error(capsys, ["run", "--out", tmp_path / "runs", *TINY, *argv])
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_long_paths(tmp_path, capsys):
    one_line_error(capsys, ["run", "--out", tmp_path / ("o" * 300), *TINY])
    one_line_error(capsys, ["run", "--out", tmp_path / "runs", "--data-dir", "d" * 5000, "--benchmark",
                            "split-mnist", *TINY])


def test_a_dataset_file_that_is_a_directory(tmp_path, capsys):
    folder = tmp_path / "data" / "mnist"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (folder / name).mkdir(parents=True)
    one_line_error(capsys, ["run", "--benchmark", "split-mnist", "--data-dir", tmp_path / "data", "--out",
                            tmp_path / "runs", *TINY])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run (its directory is copied, never changed)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = build_config({"out": str(out), "device": "cpu", "model": {"hidden": [8]}, "train": {"epochs": 1},
                        "data": {"max_tasks": 2, "train_fraction": 0.1, "validation": 0.0}})
    run_dir, _ = lifelong.run(cfg)
    return run_dir


def copy_of(finished, tmp_path):
    run_dir = tmp_path / finished.name
    shutil.copytree(finished, run_dir)
    return run_dir


@pytest.mark.parametrize("content", [b"[1, 2]\n", b"seed: \xff\n"])
def test_a_damaged_config_yaml(finished, tmp_path, capsys, content):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "config.yaml").write_bytes(content)
    one_line_error(capsys, ["resume", run_dir])


def test_a_results_json_that_is_a_list(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "results.json").write_text("[1, 2]")
    one_line_error(capsys, ["resume", run_dir])


@pytest.mark.parametrize("damage", ["no-rng", "extra-loop-key", "list"])
def test_a_damaged_checkpoint(finished, tmp_path, capsys, damage):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "results.json").unlink()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    if damage == "no-rng":
        del ckpt["rng"]
    elif damage == "extra-loop-key":
        ckpt["loop"]["surprise"] = 1
    else:
        ckpt = [1, 2]
    torch.save(ckpt, run_dir / "checkpoint.pt")
    one_line_error(capsys, ["resume", run_dir])


def test_a_report_into_an_unwritable_place(finished, capsys):
    err = one_line_error(capsys, ["report", finished, "--out", "/proc/no/report.html"])
    assert "/proc/no" in err


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_file_system_names_the_path_and_the_run_stays_resumable(tmp_path, capsys, monkeypatch,
                                                                                    code):
    real = store.tempfile.mkstemp

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
    err = one_line_error(capsys, ["run", "--out", tmp_path / "runs", *TINY])
    assert str(tmp_path / "runs") in err
    monkeypatch.setattr(store.tempfile, "mkstemp", real)
    assert main(["run", "--out", str(tmp_path / "runs"), *TINY]) == 0
    capsys.readouterr()


def test_bare_lifelong_with_run_flags_suggests_lifelong_run(capsys):
    assert "did you mean `lifelong run --epochs 1`" in one_line_error(capsys, ["--epochs", "1"])


def test_run_and_compare_share_the_trial_flags(tmp_path, capsys):
    assert "model 'no-such'" in one_line_error(capsys, ["run", "--model", "no-such", "--out", tmp_path, *TINY])
    err = one_line_error(capsys, ["compare", "--methods", "naive", "--max-tasks", "100", "--train-fraction", "0.1",
                                  "--model", "mlp", "--out", tmp_path])
    assert "data.max_tasks=100 exceeds" in err


def test_ctrl_c_names_the_run_directory(tmp_path, capsys, monkeypatch):
    from lifelong import loop

    def interrupted(cfg, **kwargs):
        store.write_config(store.run_directory(cfg), cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run", interrupted)
    assert main(["run", "--out", str(tmp_path), *TINY]) == 130
    captured = capsys.readouterr()
    run_dir = next(tmp_path.iterdir())
    assert f"in {run_dir}" in captured.out.replace("\n", "")
    assert f"continue with `lifelong resume {run_dir}`" in captured.err
