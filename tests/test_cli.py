import subprocess
import sys

import pytest

from lifelong.cli import main


def test_run_prints_matrix_and_run_directory(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path), "--max-tasks", "2", "--train-fraction", "0.2", "--epochs", "1",
                 "--set", "model.hidden=[16]", "--quiet", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ACC" in out and "BWT" in out and "forgetting" in out and "Run directory:" in out
    assert len(list(tmp_path.glob("*/results.json"))) == 1
    assert main(["run", "--out", str(tmp_path), "--max-tasks", "2", "--train-fraction", "0.2", "--epochs", "1",
                 "--set", "model.hidden=[16]", "--quiet", "--device", "cpu"]) == 0
    assert "already run" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["run", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["run", "--epochs", "-2"], "invalid config value for 'train.epochs'"),
        (["run", "--scenario", "sideways"], "data.scenario"),
        (["run", "--config", "/nonexistent/c.yml"], "not found"),
        (["run", "--config", "/tmp"], "config file '/tmp' is a folder; pass a YAML file in it"),
        (["run", "--set", "model.name=vgg"], "unknown model 'vgg'"),
        (["run", "--set", "model.widths=[3]"], "widths"),
        (["resume", "/nonexistent/run"], "is not a run directory"),
        (["download", "nope"], "unknown dataset 'nope'"),
        (["run", "--method", "ewcc"], "unknown method 'ewcc'; did you mean 'ewc'? choose one of: naive,"),
        (["run", "--model", "alexnett"], "did you mean 'alexnet'?"),
        (["run", "--benchmark", "split-mnst"], "did you mean 'split-mnist'?"),
        (["download", "cifar-10"], "did you mean 'cifar10'?"),
        (["run", "--set", "data.eval_every=3"], "'data.eval_every'; did you mean 'train.eval_every'?"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, fragment, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--benchmark", "nope"], ["--benchmark", "split-mnist", "--max-tasks", "9"]])
def test_a_data_config_that_cannot_work_stops_before_running_is_announced(argv, tmp_path, capsys):
    code = main(["run", *argv, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2 and "Running" not in captured.out and len(captured.err.strip().splitlines()) == 1


def test_missing_data_file_names_the_file_and_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    code = main(["run", "--benchmark", "split-mnist", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "mnist" in err and "download" in err and len(err.splitlines()) == 1


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("naive", "joint", "single-task", "split-mnist", "pmnist", "mlp", "alexnet", "cifar10", "er",
                 "tensorboard"):
        assert name in out
    assert "lifelong[tensorboard]" in out  # descriptions are printed as written, not read as markup


@pytest.mark.parametrize("name, section, rows", [
    ("ewc", "ewc.KEY", [("lam", "10000.0"), ("fisher", '"empirical"'), ("fisher_samples", "null")]),
    ("memory", "memory.KEY", [("size", "500"), ("batch_size", "32")]),
    ("train", "train.KEY", [("epochs", "5"), ("unseen_outputs", '"masked"')]),
    ("mlp", "model.KEY", [("hidden", "[400, 400]"), ("dropout", "0.0")]),
])
def test_list_shows_the_keys_and_defaults_of_a_method_section_or_model(name, section, rows, capsys):
    from lifelong.config import build_config
    from lifelong.methods import method_class

    assert main(["list", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(section in line for line in lines[:3])
    for key, default in rows:  # each key on a row of its own, with the default the config really has
        assert any(line.split("│")[1:3] and [c.strip() for c in line.split("│")[1:3]] == [key, default]
                   for line in lines), key
    if name in ("ewc", "train"):  # the printed default is what a config that leaves the key unset gets
        cfg = build_config({"method": "ewc"})
        value = method_class("ewc").make_params(cfg).lam if name == "ewc" else cfg.train.epochs
        assert value == float(rows[0][1])


def test_list_of_an_unknown_name_is_one_line_exit_2(capsys):
    assert main(["list", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing called 'nope'" in err and len(err.splitlines()) == 1


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "lifelong.cli", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--set KEY=VALUE" in out.stdout


def test_warnings_are_one_line_on_the_command_line(monkeypatch, capsys):
    """Python's form named a file and line of the library and echoed its source line (e.g. gs-mask's capacity)."""
    import warnings

    from lifelong import cli

    monkeypatch.setattr(cli, "_list", lambda console, what: warnings.warn("few filters free", UserWarning))
    assert main(["list"]) == 0
    assert capsys.readouterr().err == "lifelong: warning: few filters free\n"


@pytest.mark.parametrize("text, command", [("variants: [{name: a, set: {method: naive}}]\n", "compare"),
                                           ("name: s\nbase: {method: ewc}\nparams: {ewc.lam: [1, 10]}\n", "sweep")])
def test_run_on_an_experiment_or_sweep_file_names_the_command(tmp_path, capsys, text, command):
    (tmp_path / "exp.yml").write_text(text)
    assert main(["run", "--config", str(tmp_path / "exp.yml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"run it with `lifelong {command} --config" in err and len(err.strip().splitlines()) == 1
