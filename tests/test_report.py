"""`lifelong report`: runs found and grouped, tables from real runs, figures that follow the data, HTML that a
real browser shows without errors, and bad input refused with exit code 2."""

import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from lifelong import compare, figures, report_data, run, store
from lifelong.cli import main
from lifelong.errors import UserError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny real runs: naive seeds 0 and 1, ewc seed 0 in runs/; a compare folder with an order sweep in sweep/."""
    root = tmp_path_factory.mktemp("report")
    for method, seed in (("naive", 0), ("naive", 1), ("ewc", 0)):
        run(tiny_config(root / "runs", method=method, seed=seed, train={"epochs": 1}))
    exp = compare.experiment_from_dict({
        "base": tiny_config(root / "sweep", train={"epochs": 1}, data={"validation": 0.0}),
        "variants": [{"name": "plain", "set": {"method": "naive"}}], "seeds": [0],
        "order_sweep": {"task": [2, 3], "positions": [1, 3]}})
    entries = compare.run_experiment(exp)
    folder = root / "sweep" / "compare-quickstart"
    compare.write_manifest(folder, entries, [2, 3])
    return root, folder


def fake_run(method="naive", seed=0, tasks=([0, 1], [2, 3]), **config):
    """A Run with hand-written results, for grouping logic that needs no training."""
    return report_data.Run(Path(f"/x/{method}{seed}{config}{tasks}"), {
        "method": method, "seed": seed, "tasks": [list(t) for t in tasks], "benchmark": "b",
        "config": {"method": method, "seed": seed, "out": "runs", "train": {"lr": 0.001}, **config}})


def test_tables_are_mean_and_std_over_the_seeds_of_each_method(runs):
    root, _ = runs
    found = report_data.collect([root / "runs"])
    variants, sweeps = report_data.group(found)
    assert [(v.label, len(v.runs)) for v in variants] == [("ewc", 1), ("naive", 2)] and sweeps == {}
    results = [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*naive*/results.json"))]
    rows = {r["variant"]: r for r in report_data.summary_rows(variants)}
    a, b = results[0]["max_forgetting"], results[1]["max_forgetting"]
    assert rows["naive"]["max_forgetting"] == pytest.approx(((a + b) / 2, abs(a - b) / 2 ** 0.5))
    assert rows["ewc"]["acc"] == (pytest.approx(np.mean(variants[0].runs[0].results["acc_matrix"][-1])), 0.0)
    mean, std = report_data.task_curves(variants[1])
    assert mean[0] == pytest.approx([(x + y) / 2 for x, y in zip(*(r["random_init_acc"] for r in results))])
    assert std[3, 1] == pytest.approx(abs(results[0]["acc_matrix"][2][1] - results[1]["acc_matrix"][2][1]) / 2 ** 0.5)
    (curve, _), starts = report_data.validation_curve(variants[1])
    epochs = [[r["val_acc"] for r in store.read_metrics(run.path) if r["event"] == "epoch"] for run in variants[1].runs]
    assert starts == [1, 2, 3] and curve == pytest.approx(np.mean(epochs, axis=0))


def test_a_compare_folder_names_its_variants_and_its_order_sweep(runs):
    _, folder = runs
    found = report_data.collect([folder])
    variants, sweeps = report_data.group(found)
    assert [v.label for v in variants] == ["plain · task (2, 3) at 1", "plain · task (2, 3) at 3"]
    assert sweeps == {"plain": [2, 3]}
    positions, mean, _ = report_data.sweep_points(variants, "plain", [2, 3])
    finals = [v.runs[0].results["acc_matrix"][-1][p - 1] for v, p in zip(variants, (1, 3))]
    assert positions == [1, 3] and mean == pytest.approx(finals)
    assert report_data.validation_curve(variants[0]) is None  # validation 0: no val_acc records


def test_variants_of_one_method_are_told_apart_by_the_keys_that_differ():
    found = report_data.Collection([fake_run(seed=0), fake_run(seed=1), fake_run(train={"lr": 0.01}), fake_run("ewc"),
                                 fake_run("ewc", model={"name": "conv"})])
    variants, sweeps = report_data.group(found)
    assert [(v.label, len(v.runs)) for v in variants] == [
        ("naive (train.lr=0.001)", 2), ("naive (train.lr=0.01)", 1), ("ewc (model.name=unset)", 1),
        ("ewc (model.name=conv)", 1)]
    assert sweeps == {}


def test_the_moved_task_is_inferred_from_the_orders():
    orders = [[[1, 2], [3, 4], [5, 6]], [[3, 4], [1, 2], [5, 6]], [[3, 4], [5, 6], [1, 2]]]
    assert report_data.moved_task(orders) == [1, 2]
    assert report_data.moved_task(orders[:2]) == [1, 2] and report_data.moved_task(orders[:2], hint=[3, 4]) == [3, 4]
    assert report_data.moved_task([[[1, 2], [3, 4], [5, 6]], [[5, 6], [3, 4], [1, 2]]]) is None  # two tasks moved
    found = report_data.Collection([fake_run(tasks=o) for o in orders] + [fake_run(tasks=orders[0], seed=1)])
    variants, sweeps = report_data.group(found)
    assert [len(v.runs) for v in variants] == [2, 1, 1] and sweeps == {"naive": [1, 2]}
    assert variants[2].label == "naive · task (1, 2) at 3"


def png(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_figures_are_images_that_follow_the_data():
    R = np.array([[0.9, 0.5, 0.4], [0.7, 0.95, 0.5], [0.6, 0.8, 0.97]])
    one, _ = figures.render(figures.accuracy_matrices, ["a"], [R])
    two, svg = figures.render(figures.accuracy_matrices, ["a", "b"], [R, R])
    other, _ = figures.render(figures.accuracy_matrices, ["a"], [R[::-1, ::-1]])
    assert png(two).size[0] > png(one).size[0] and png(one).size == png(other).size
    assert np.abs(np.asarray(png(one), dtype=float) - np.asarray(png(other), dtype=float)).mean() > 1.0
    assert ET.fromstring(svg).tag.endswith("svg") and b"cannot" not in svg
    assert figures.render(figures.accuracy_matrices, ["a"], [R])[0] == one  # reproducible byte for byte
    four = np.full((4, 3), 0.5), np.zeros((4, 3))
    small = png(figures.render(figures.task_accuracy, ["a"], [four[0]], [four[1]])[0])
    wide = png(figures.render(figures.task_accuracy, ["a"], [np.full((7, 6), 0.5)], [np.zeros((7, 6))])[0])
    assert wide.size[0] > small.size[0]


@pytest.fixture(scope="module")
def written(runs):
    """The report of every test run (plain runs and the order sweep) through the command line."""
    root, folder = runs
    out = root / "out" / "report.html"
    assert main(["report", str(root / "runs"), str(folder), "--out", str(out)]) == 0
    return out


def test_report_writes_one_self_contained_html_and_the_figures(written):
    folder = written.parent / "report_figures"
    names = {"accuracy_matrix", "task_accuracy", "forgetting", "validation_accuracy", "order_sweep",
             "inside1_importance_histograms", "inside1_importance_growth"}  # inside: ewc's diagnostics (issue 21)
    assert {p.stem for p in folder.glob("*.png")} == names == {p.stem for p in folder.glob("*.svg")}
    for path in folder.glob("*.png"):
        assert min(png(path.read_bytes()).size) > 200
    text = written.read_text()
    assert text.count('src="data:image/svg+xml;base64,') == len(names) == text.count("src=")
    assert "<script" not in text and "<link" not in text and "http" not in text and "url(" not in text
    assert "plain · task (2, 3) at 3" in text and "<td>naive</td><td>2</td>" in text
    assert len((folder / "summary.csv").read_text().splitlines()) == 1 + 4


def test_a_report_written_again_keeps_no_figure_of_the_earlier_one(runs, tmp_path):
    """The same --out for a report without an order sweep: the first report's order_sweep figure goes."""
    root, folder = runs
    out = tmp_path / "again.html"
    assert main(["report", str(root / "runs"), str(folder), "--out", str(out)]) == 0
    assert (tmp_path / "again_figures" / "order_sweep.png").exists()
    assert main(["report", str(root / "runs"), "--out", str(out)]) == 0
    left = {p.name for p in (tmp_path / "again_figures").iterdir()}
    assert "order_sweep.png" not in left and "order_sweep.svg" not in left and "accuracy_matrix.png" in left


CHROMIUM = shutil.which("chromium")
CHECK_IMAGES = ("<script>window.addEventListener('load', () => { for (const img of document.images) "
                "if (!img.complete || img.naturalWidth === 0) console.error('figure did not load: ' + img.alt); });"
                "</script>")


def open_in_chromium(page, workdir):
    """Console messages and a screenshot of ``page`` shown by headless Chromium (a fresh profile, no network)."""
    workdir.mkdir()
    shot = workdir / "shot.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1200,2400",
         f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line], Image.open(shot).convert("L")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run "
                                             "installs it)")
def test_the_report_opens_in_a_browser_without_errors(written, tmp_path):
    """The page plus a script that logs every figure the browser could not decode; a copy with one figure
    damaged shows that such an error would be seen."""
    checked = tmp_path / "checked.html"
    checked.write_text(written.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    console, shot = open_in_chromium(checked, tmp_path / "good")
    assert console == []
    pixels = np.asarray(shot, dtype=float)
    assert (pixels < 128).mean() > 0.01 and pixels.std() > 20  # text, tables and figures, not a blank page
    damaged = tmp_path / "damaged.html"
    damaged.write_text(checked.read_text().replace("base64,", "base64,AAAA", 1))
    console, _ = open_in_chromium(damaged, tmp_path / "bad")
    assert len(console) == 1 and "figure did not load: Accuracy matrix" in console[0]


def test_bad_input_is_a_one_line_error(runs, tmp_path, capsys):
    root, _ = runs
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "is not a run directory and holds none" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(next((root / "runs").glob("*ewc*")), unfinished)
    (unfinished / "results.json").unlink()
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert "has no results.json" in err and "lifelong resume" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other"
    shutil.copytree(next((root / "runs").glob("*ewc*")), other)
    results = json.loads((other / "results.json").read_text())
    store.write_json(other / "results.json", {**results, "benchmark": "split-mnist", "fingerprint": "f" * 64})
    assert main(["report", str(root / "runs"), str(other), "--out", str(tmp_path / "r.html")]) == 2
    assert "different benchmarks: quickstart (3 runs), split-mnist (1 run)" in capsys.readouterr().err
    old = tmp_path / "old"
    shutil.copytree(next((root / "runs").glob("*ewc*")), old)
    store.write_json(old / "results.json", {k: v for k, v in results.items() if k != "acc_matrix"})
    assert main(["report", str(old)]) == 2
    err = capsys.readouterr().err
    assert "results.json' lacks acc_matrix" in err and len(err.strip().splitlines()) == 1
    # valid JSON with the wrong figures: before, tracebacks in report (and in run, which prints them)
    # and figures that contradict the matrix they summarise (an edited acc or bwt), or a short random_init_acc
    for name, (key, value) in enumerate([("acc_matrix", [[0.5]]), ("acc_matrix", [[0.5, "x"], [None, 1]]),
                                         ("acc", "x"), ("forgetting", None), ("acc", 0.5), ("bwt", 0.3),
                                         ("random_init_acc", [0.5])]):
        edited = tmp_path / f"edited{name}"
        shutil.copytree(next((root / "runs").glob("*ewc*")), edited)
        store.write_json(edited / "results.json", {**results, key: value})
        assert main(["report", str(edited), "--out", str(tmp_path / "e.html")]) == 2
        err = capsys.readouterr().err
        assert "results.json' is damaged (" in err and "lifelong resume" in err and len(err.strip().splitlines()) == 1
    damaged = tmp_path / "compare-x"
    damaged.mkdir()
    (damaged / "runs.json").write_text("{")
    assert main(["report", str(damaged)]) == 2
    assert "is damaged; run the same `lifelong compare` again" in capsys.readouterr().err
    parent = tmp_path / "parent"
    shutil.copytree(unfinished, parent / "run")
    with pytest.raises(UserError, match="no finished runs"):
        report_data.collect([parent])  # an unfinished run inside a folder is left out, not an error by itself


def test_a_copy_of_a_run_is_counted_once(runs, tmp_path):
    """Before, the same config run into two folders was averaged as two seeds ([0, 0, 1])."""
    root, _ = runs
    naive = sorted((root / "runs").glob("*naive*"))
    copy = tmp_path / "elsewhere" / naive[0].name
    shutil.copytree(naive[0], copy)
    with pytest.warns(UserWarning, match="is the same run as .* counted once"):
        found = report_data.collect([*naive, copy])
    assert sorted(r.results["seed"] for r in found.runs) == [0, 1]
