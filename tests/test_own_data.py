"""Your own data (data.source): every format trains from small files written from the embedded Fashion-MNIST
subset; tasks from the config; the data's hash in the fingerprint; every bad input is one line naming the file."""

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lifelong.cli import main
from lifelong.config import DataConfig, build_config
from lifelong.data.benchmarks import build_benchmark, load_embedded_fashion_subset
from lifelong.data.own import source_sha256
from lifelong.errors import UserError
from lifelong.loop import run

CLASSES = 4  # T-shirt/top, Trouser, Pullover, Dress
TRAIN, TEST = 60, 20  # per class


@pytest.fixture(scope="module")
def fmnist():
    """Train and test images (N, 28, 28) uint8 with labels and class names, 4 classes, 60 + 20 each."""
    d = load_embedded_fashion_subset()
    splits = []
    for part, count in ((d.train, TRAIN), (d.test, TEST)):
        y = part.labels.numpy()
        rows = np.concatenate([np.flatnonzero(y == c)[:count] for c in range(CLASSES)])
        splits.append((part.images[rows, 0].numpy(), y[rows]))
    return splits, [name.replace("/", "-") for name in d.class_names[:CLASSES]]


def features(x):
    """7×7 average-pooled images as 49 float features: a table's rows."""
    return x.reshape(len(x), 7, 4, 7, 4).mean((2, 4)).reshape(len(x), -1).astype(np.float32)


def write_images(root, x, y, names, start=0):
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{start + i}.png")


def table_rows(fmnist):
    """(features, label name, month, split) per row, train rows then test rows."""
    ((x, y), (xt, yt)), names = fmnist
    rows = []
    for part, (images, labels) in (("train", (x, y)), ("test", (xt, yt))):
        for i, (row, label) in enumerate(zip(features(images), labels)):
            rows.append((row, names[label], f"2024-0{1 + i % 3}", part))
    return rows


def write_csv(path, rows, label="label"):
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([f"f{i}" for i in range(49)] + [label, "month", "split"])
        for row, name, month, part in rows:
            writer.writerow([f"{v:.2f}" for v in row] + [name, month.replace("-", ""), part])  # month 202401
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {f"f{i}": [float(r[0][i]) for r in rows] for i in range(49)}
    columns.update(label=[r[1] for r in rows], month=[r[2] for r in rows], split=[r[3] for r in rows])
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def source(tmp_path, fmnist):
    """Writes the data in one format under tmp_path and returns its data.source section."""
    ((x, y), (xt, yt)), names = fmnist

    def make(fmt):
        if fmt == "images":  # one folder per class, the test split made by lifelong
            write_images(tmp_path / "images", np.concatenate([x, xt]), np.concatenate([y, yt]), names)
            return {"path": str(tmp_path / "images"), "size": 28, "grey": True}
        if fmt == "images-train-test":
            write_images(tmp_path / "split" / "train", x, y, names)
            write_images(tmp_path / "split" / "test", xt, yt, names)
            return {"path": str(tmp_path / "split"), "size": 14}  # colour, resized
        if fmt == "npz-images":
            np.savez(tmp_path / "images.npz", x_train=x, y_train=y, x_test=xt[..., None], y_test=yt)
            return {"path": str(tmp_path / "images.npz")}
        if fmt == "npz-features":
            np.savez(tmp_path / "features.npz", x_train=features(x), y_train=y, x_test=features(xt), y_test=yt,
                     class_names=np.array(names))
            return {"path": str(tmp_path / "features.npz")}
        if fmt == "csv":
            return {"path": str(write_csv(tmp_path / "table.csv", table_rows(fmnist))), "split_column": "split"}
        if fmt == "parquet":
            return {"path": str(write_parquet(tmp_path / "table.parquet", table_rows(fmnist))),
                    "features": [f"f{i}" for i in range(49)]}  # month, split: text, left out
        raise ValueError(fmt)

    return make


def config(tmp_path, data, method="naive", **sections):
    return {"out": str(tmp_path / "runs"), "device": "cpu", "method": method, "data": {"validation": 0.0, **data},
            "model": {"hidden": [32]}, "train": {"epochs": 2, "batch_size": 16}, **sections}


@pytest.mark.parametrize("fmt", ["images", "images-train-test", "npz-images", "npz-features", "csv", "parquet"])
def test_every_format_trains_above_chance(tmp_path, source, fmt):
    section = source(fmt)
    run_dir, results = run(config(tmp_path, {"source": section}))
    assert results["benchmark"] == "source" and run_dir.name.startswith("source-naive-")
    assert results["tasks"] == [[0, 1], [2, 3]] and len(results["acc_matrix"]) == 2
    assert results["acc"] > 0.7, results["acc_matrix"]  # two classes per task: chance is 0.5
    benchmark = build_benchmark(build_config(config(tmp_path, {"source": section})).data, 0)
    assert benchmark.data_sha256 == source_sha256(section["path"])
    float_rows = fmt in ("npz-features", "csv", "parquet")
    assert benchmark.tasks[0].train.features == float_rows
    assert benchmark.input_shape == {"images": (1, 28, 28), "images-train-test": (3, 14, 14),
                                     "npz-images": (1, 28, 28), "csv": (50, 1, 1)}.get(fmt, (49, 1, 1))  # csv: month


@pytest.mark.parametrize("method", ["er", "der++"])
def test_a_task_column_is_domain_incremental_and_rehearsal_replays_float_rows(tmp_path, source, method):
    section = {**source("csv"), "task_column": "month"}
    _, results = run(config(tmp_path, {"source": section}, method=method, memory={"size": 60}))
    assert results["scenario"] == "domain"
    assert results["task_names"] == ["table 202401", "table 202402", "table 202403"]
    assert results["tasks"] == [[0, 1, 2, 3]] * 3
    assert results["acc"] > 0.5  # four classes: chance is 0.25


def test_a_crashed_run_on_float_rows_resumes_to_the_same_results(tmp_path, source, crash_and_resume):
    data = {"source": {**source("npz-features")}, "scenario": "class"}
    _, straight = run(config(tmp_path / "straight", data, method="der++", memory={"size": 40}))
    _, resumed = crash_and_resume(config(tmp_path / "crash", data, method="der++", memory={"size": 40}), [(1, 0)])
    assert resumed["acc_matrix"] == straight["acc_matrix"]


def test_task_order_picks_and_orders_the_tasks(tmp_path, source):
    section = {**source("parquet"), "task_column": "month", "task_order": ["2024-03", "2024-01"]}
    benchmark = build_benchmark(DataConfig(source=section, normalize=False), 0)
    assert [t.name for t in benchmark.tasks] == ["table 2024-03", "table 2024-01"]
    assert benchmark.tasks[0].mean == (0.0,) * 49  # normalize false: features as they are


def test_tasks_by_name_or_id_and_classes_per_task(tmp_path, source):
    section = source("npz-features")
    benchmark = build_benchmark(DataConfig(source=section, tasks=[["Dress", 0], [1]], validation=0.0), 0)
    assert [t.classes for t in benchmark.tasks] == [[3, 0], [1]]
    assert benchmark.tasks[0].class_names == ["Dress", "T-shirt-top"]
    benchmark = build_benchmark(DataConfig(source=section, classes_per_task=3, scenario="class"), 0)
    assert [t.classes for t in benchmark.tasks] == [[0, 1, 2], [3]]
    assert benchmark.tasks[0].mean != (0.0,) * 49  # standardised per feature
    with pytest.raises(UserError, match="exceeds the 2 tasks"):
        build_benchmark(DataConfig(source=section, max_tasks=3), 0)


def test_cli_runs_a_config_file_and_a_set_path(tmp_path, source, capsys, monkeypatch):
    section = source("npz-features")
    monkeypatch.chdir(tmp_path)
    Path("own.yml").write_text("data:\n  source: {path: features.npz}\n  validation: 0.0\n  tasks: [[Trouser, Dress]]\n"
                               "model: {hidden: [16]}\ntrain: {epochs: 1}\ndevice: cpu\n")
    assert main(["run", "--config", "own.yml", "--quiet"]) == 0
    assert "Running naive on source" in capsys.readouterr().out
    assert main(["run", "--config", "own.yml", "--set", "data.source.path=" + section["path"], "--quiet"]) == 0
    assert "already run" in capsys.readouterr().out  # a relative and an absolute path: one run
    assert main(["run", "--config", "own.yml", "--set", "data.source=features.npz", "--quiet"]) == 0
    assert "already run" in capsys.readouterr().out  # a path alone is short for {path: ...}
    cfg = build_config({"data": {"source": "features.npz"}})
    assert cfg.data.source.path == str(tmp_path / "features.npz") and cfg.data.benchmark == "source"


def test_the_fingerprint_follows_the_files_content(tmp_path, source):
    path = Path(source("csv")["path"])
    first = build_config({"data": {"source": str(path)}}).fingerprint()
    os.utime(path, ns=(1, 1))  # touched, same content: the same run
    assert build_config({"data": {"source": str(path)}}).fingerprint() == first
    path.write_text(path.read_text().replace("T-shirt-top", "Tshirt"))
    assert build_config({"data": {"source": str(path)}}).fingerprint() != first
    folder = Path(source("images")["path"])
    before = source_sha256(folder)
    image = next(folder.glob("Dress/*.png"))
    Image.new("L", (28, 28), 7).save(image)
    assert source_sha256(folder) != before
    named = build_config({"data": {"benchmark": "split-mnist"}}).to_dict()["data"]
    assert named["source"] is None  # named benchmarks: test_config checks their hash is unchanged


def test_changed_files_are_named_when_their_run_is_resumed(tmp_path, source, crash_and_resume):
    """Finished or interrupted, a run whose source files changed says so, and names the command that trains on
    the new files (in a new directory)."""
    import lifelong

    section = source("csv")
    config = {"out": str(tmp_path / "runs"), "device": "cpu", "data": {"source": section, "validation": 0.0},
              "model": {"hidden": [16]}, "train": {"epochs": 1}}
    finished, _ = lifelong.run(config)
    path = Path(section["path"])
    original = path.read_text()
    path.write_text(original.replace("T-shirt-top", "Tshirt"))
    with pytest.raises(UserError, match="files of data.source .* changed since the run was made; train on them"):
        lifelong.resume(finished)
    path.write_text(original)
    interrupted, _ = crash_and_resume({**config, "out": str(tmp_path / "crashed")}, [(1, 0)])
    (interrupted / "results.json").unlink()
    path.write_text(original.replace("T-shirt-top", "Tshirt"))
    with pytest.raises(UserError, match="files of data.source .* changed since the run was made; train on them"):
        lifelong.resume(interrupted)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the fix


def refused(data, match, tmp_path):
    """Building the run's benchmark (and its fingerprint) fails with one UserError line matching ``match``."""
    with pytest.raises(UserError, match=match) as info:
        cfg = build_config(config(tmp_path, data))
        cfg.fingerprint()
        build_benchmark(cfg.data, cfg.seed)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_ragged_or_mismatched_arrays(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((28, 28), np.uint8), np.zeros((14, 14), np.uint8)
    np.savez(tmp_path / "ragged.npz", x_train=ragged, y_train=[0, 1], x_test=ragged, y_test=[0, 1])
    message = refused({"source": str(tmp_path / "ragged.npz")}, "x_train of .*ragged.npz is an object array", tmp_path)
    assert "one size" in message
    x = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "sizes.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x[:, :14], y_test=[0, 1, 0, 1])
    refused({"source": str(tmp_path / "sizes.npz")}, "x_train and x_test of .*sizes.npz differ", tmp_path)
    np.savez(tmp_path / "half.npz", x_train=x, y_train=[0, 1, 0, 1])
    refused({"source": str(tmp_path / "half.npz")}, "half.npz lacks x_test, y_test", tmp_path)
    np.savez(tmp_path / "mixed.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x.astype(np.float32), y_test=[0, 1, 0, 1])
    refused({"source": str(tmp_path / "mixed.npz")}, "is float32 of shape", tmp_path)
    np.savez(tmp_path / "nan.npz", x_train=np.full((4, 3), np.nan), y_train=[0, 1, 0, 1], x_test=np.ones((2, 3)),
             y_test=[0, 1])
    refused({"source": str(tmp_path / "nan.npz")}, "x_train of .*nan.npz holds a missing", tmp_path)


def test_unreadable_images_are_listed_unless_skipped(tmp_path, fmnist):
    ((x, y), _), names = fmnist
    write_images(tmp_path / "imgs", x, y, names)
    for i in range(5):
        (tmp_path / "imgs" / "Dress" / f"broken{i}.png").write_bytes(b"not a png")
    message = refused({"source": str(tmp_path / "imgs")}, r"5 unreadable image file\(s\) under .*imgs: "
                      r"Dress/broken0.png, Dress/broken1.png, Dress/broken2.png and 2 more", tmp_path)
    assert "skip_unreadable: true" in message
    cfg = build_config(config(tmp_path, {"source": {"path": str(tmp_path / "imgs"), "skip_unreadable": True}}))
    with pytest.warns(UserWarning, match="skipped 5 unreadable"):
        benchmark = build_benchmark(cfg.data, 0)
    assert len(benchmark.tasks) == 2


def test_unknown_class_and_class_without_test_samples(tmp_path, fmnist):
    ((x, y), (xt, yt)), names = fmnist
    write_images(tmp_path / "d" / "train", x, y, names)
    write_images(tmp_path / "d" / "test", xt[yt != 3], yt[yt != 3], names)
    root = str(tmp_path / "d")
    refused({"source": root, "tasks": [["cat", "Dress"]]}, "data.tasks names class 'cat', which .*/d does not "
            "have; its classes: Dress, Pullover, T-shirt-top, Trouser", tmp_path)
    refused({"source": root, "tasks": [[7]]}, "names class 7", tmp_path)
    refused({"source": root, "tasks": [["Trouser", "Dress"]]}, "class 'Dress' of .*/d has no test samples",
            tmp_path)
    (tmp_path / "d" / "test" / "Zebra").mkdir()
    refused({"source": root}, "test/Zebra is a class with no folder in .*train", tmp_path)


def test_table_errors_name_the_column_and_row(tmp_path, fmnist):
    rows = table_rows(fmnist)
    broken = [(r[0], "" if i == 5 else r[1], r[2], r[3]) for i, r in enumerate(rows)]
    data = {"source": str(write_csv(tmp_path / "a.csv", broken))}
    refused(data, "column 'label' of .*a.csv has missing values \\(first at row 6\\); fill them", tmp_path)
    mixed = [(r[0], r[1], "late" if i == 3 else str(i), r[3]) for i, r in enumerate(rows)]
    data = {"source": {"path": str(write_csv(tmp_path / "b.csv", mixed)), "split_column": "split"}}
    refused(data, "column 'month' of .*b.csv mixes numbers and text \\('late' at row 4\\)", tmp_path)
    data = {"source": {"path": str(write_csv(tmp_path / "c.csv", rows, label="kind"))}}
    refused(data, "c.csv has no column 'label' \\(data.source.label_column\\)", tmp_path)
    (tmp_path / "short.csv").write_text("a,label\n1,x\n2\n")
    refused({"source": str(tmp_path / "short.csv")}, "row 2 of .*short.csv has 1 fields", tmp_path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"f": [1.0, 2.0, 3.0], "label": ["a", None, "b"]}), tmp_path / "n.parquet")
    refused({"source": str(tmp_path / "n.parquet")}, "'label' of .*n.parquet has missing values", tmp_path)
    pq.write_table(pa.table({"f": [1.0, None, 3.0], "label": ["a", "b", "a"]}), tmp_path / "f.parquet")
    refused({"source": str(tmp_path / "f.parquet")}, "'f' of .*f.parquet has missing values", tmp_path)
    data = {"source": {"path": str(write_parquet(tmp_path / "t.parquet", rows))}}
    refused(data, "column 'month' of .*t.parquet is text \\('2024-01' at row 1\\)", tmp_path)
    data = {"source": {"path": str(tmp_path / "t.parquet"), "features": ["f0"], "task_column": "month",
                       "task_order": ["2024-01", "2025-01"]}}
    refused(data, "task_order names '2025-01', which column 'month' of .*t.parquet does not hold", tmp_path)


def test_missing_pyarrow_names_the_extra(tmp_path, fmnist, monkeypatch):
    path = write_parquet(tmp_path / "t.parquet", table_rows(fmnist)[:8])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    refused({"source": str(path)}, "reading .*t.parquet needs pyarrow: pip install 'lifelong\\[parquet\\]'", tmp_path)


def test_paths_formats_and_settings_refused(tmp_path):
    refused({"source": str(tmp_path / "nowhere")}, "data.source.path .*nowhere does not exist", tmp_path)
    (tmp_path / "empty").mkdir()
    refused({"source": str(tmp_path / "empty")}, "no class folders in .*empty", tmp_path)
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    refused({"source": str(tmp_path / "data.xlsx")}, "unknown data format of .*data.xlsx \\('.xlsx'\\)", tmp_path)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    refused({"source": str(tmp_path / "bad.npz")}, "bad.npz is not a readable .npz file", tmp_path)
    (tmp_path / "t.csv").write_text("a,label\n1,x\n2,y\n3,x\n4,y\n")
    refused({"source": {"path": str(tmp_path / "t.csv"), "size": 64}}, "data.source.size does not apply to .*t.csv",
            tmp_path)
    refused({"source": str(tmp_path / "t.csv"), "benchmark": "split-mnist"}, "name two datasets", tmp_path)
    refused({"tasks": [[0, 1]]}, "data.tasks applies to data.source; for quickstart use data.class_order", tmp_path)
    refused({"benchmark": "source"}, "data.benchmark 'source' needs data.source", tmp_path)
    refused({"source": str(tmp_path / "t.csv"), "class_order": [[0, 1]]}, "use data.tasks", tmp_path)
    refused({"source": str(tmp_path / "t.csv"), "augment": True}, "data.augment applies to images", tmp_path)
    refused({"source": {"path": str(tmp_path / "t.csv"), "task_column": "label"}, "classes_per_task": 2},
            "task_column makes the tasks", tmp_path)


def test_a_column_in_two_roles_is_refused(tmp_path, fmnist):
    path = str(write_csv(tmp_path / "t.csv", table_rows(fmnist)))
    features = [f"f{i}" for i in range(49)]
    message = refused({"source": {"path": path, "task_column": "label", "features": features}},
                      "data.source.task_column names the label column 'label' of .*t.csv", tmp_path)
    assert "each task one class" in message
    refused({"source": {"path": path, "split_column": "month", "task_column": "month", "features": features}},
            "split_column and task_column both name column 'month'", tmp_path)
    refused({"source": {"path": path, "split_column": "split", "features": ["f0", "label"]}},
            "data.source.features names the label column 'label'", tmp_path)


def test_a_source_of_one_class_is_refused_but_a_task_of_one_class_is_not(tmp_path, fmnist):
    ((x, y), (xt, yt)), names = fmnist
    np.savez(tmp_path / "one.npz", x_train=x[y == 1], y_train=y[y == 1], x_test=xt[yt == 1], y_test=yt[yt == 1])
    refused({"source": str(tmp_path / "one.npz")}, "one.npz holds a single class \\('1'\\); a classifier needs at "
            "least two classes: add samples of another class$", tmp_path)
    write_images(tmp_path / "pullovers", x[y == 2], y[y == 2], names)
    refused({"source": str(tmp_path / "pullovers")}, "pullovers holds a single class \\('Pullover'\\)", tmp_path)
    rows = [r for r in table_rows(fmnist) if r[1] == "Dress"]
    path = str(write_csv(tmp_path / "dress.csv", rows))
    refused({"source": {"path": path, "split_column": "split"}}, "dress.csv holds a single class \\('Dress'\\); .*"
            "or check data.source.label_column \\('label'\\)", tmp_path)
    np.savez(tmp_path / "two.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    benchmark = build_benchmark(DataConfig(source=str(tmp_path / "two.npz"), tasks=[[3]], validation=0.0), 0)
    assert [t.classes for t in benchmark.tasks] == [[3]]  # data.tasks may pick one class (docs/own-data.md)


def test_unreadable_files_are_named_in_whole_words(tmp_path, fmnist):
    import pyarrow.parquet as pq

    empty = np.zeros((0, 28, 28), np.uint8)
    np.savez(tmp_path / "empty.npz", x_train=empty, y_train=[], x_test=empty, y_test=[])
    refused({"source": str(tmp_path / "empty.npz")}, "empty.npz has no rows \\(x_train and x_test are empty\\)",
            tmp_path)
    ((x, y), _), names = fmnist
    np.savez(tmp_path / "notest.npz", x_train=x, y_train=y, x_test=empty, y_test=[])
    refused({"source": str(tmp_path / "notest.npz")}, "x_test of .*notest.npz has no rows", tmp_path)
    (tmp_path / "hello.npz").write_text("hello\n")
    message = refused({"source": str(tmp_path / "hello.npz")}, "hello.npz is not a readable .npz file \\(not a zip "
                      "archive of arrays\\); save x_train", tmp_path)
    assert "pickle" not in message
    (tmp_path / "text.parquet").write_text("a,b\n")
    message = refused({"source": str(tmp_path / "text.parquet")}, "text.parquet is not a readable Parquet file "
                      "\\(Parquet file size is 4 bytes", tmp_path)
    with pytest.raises(Exception) as arrow:
        pq.read_table(tmp_path / "text.parquet")
    assert message.endswith(f" ({str(arrow.value).splitlines()[0].split(': ', 1)[1]}); write it again")
    write_images(tmp_path / "half" / "train", x, y, names)
    refused({"source": str(tmp_path / "half")}, "half/train holds class folders, but there is no test/ beside it: "
            "without both train/ and test/, the folders under .*half are taken as classes; add .*half/test/CLASS/"
            "\\*.png, or put the class folders directly under .*half", tmp_path)


def test_cli_bad_source_exits_2_with_one_line(tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path), "--set", f"data.source.path={tmp_path / 'missing.csv'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.csv does not exist" in err and len(err.splitlines()) == 1


def test_pandas_unnamed_index_columns_are_not_features(tmp_path):
    """pandas writes an unnamed index (after a filter, say) as '__index_level_0__'; it reads it back as the index,
    and so must this reader: as a feature it would leak the row order (sorted by label, a perfect predictor)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lifelong.data.tables import read_parquet

    table = pa.table({"a": [0.5, 0.1, 0.9, 0.3], "label": ["x", "x", "y", "y"], "__index_level_0__": [7, 8, 9, 10]})
    pandas = {"index_columns": ["__index_level_0__"], "columns": [], "pandas_version": "2"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas).encode()})
    pq.write_table(table, tmp_path / "t.parquet")
    assert list(read_parquet(tmp_path / "t.parquet")) == ["a", "label"]
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "plain.parquet")  # no pandas: a plain column
    assert "__index_level_0__" in read_parquet(tmp_path / "plain.parquet")


def test_task_and_class_keys_of_the_test_split_do_not_collide(tmp_path):
    """Task 1 with class '12' and task 11 with class '2' are two keys (tasks are numbered in order): each of the
    pairs below keeps one of its two rows for training."""
    pairs = [(f"m{t:02d}", str(t + 20)) for t in range(12)]  # a class of its own for the other tasks
    pairs += [("m01", f"1{c}") for c in range(6)] + [("m11", str(c)) for c in range(6)]  # "1"+"1c" = "11"+"c"
    with open(tmp_path / "t.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["f", "month", "label"])
        for i, (month, label) in enumerate(pairs * 2):
            writer.writerow([i, month, label])
    benchmark = build_benchmark(DataConfig(source={"path": str(tmp_path / "t.csv"), "task_column": "month",
                                                   "test_split": 0.5}, normalize=False, validation=0.0), 0)
    for task in benchmark.tasks:
        train, test = task.train.labels.tolist(), task.test.labels.tolist()
        assert sorted(train) == sorted(test) == sorted(set(train)), task.name  # one row of each class each


def test_16_bit_grey_pngs_keep_their_contrast(tmp_path):
    """A 16-bit PNG is scaled to 8 bits (its top byte), not clipped to white by PIL's conversion."""
    from lifelong.data.readers import _load_image

    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "deep.png")
    for mode in ("L", "RGB"):
        read = _load_image(tmp_path / "deep.png", (8, 8), mode)
        grey = read if mode == "L" else read[..., 0]
        assert np.array_equal(grey, (values >> 8).astype(np.uint8)), mode


def test_channel_first_npz_images_are_refused_with_the_fix(tmp_path):
    x = np.zeros((6, 3, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x, y_test=np.arange(6) % 2)
    with pytest.raises(UserError, match=r"looks channel-first; save images as N×H×W×C"):
        build_benchmark(DataConfig(source={"path": str(tmp_path / "nchw.npz")}), 0)


def test_a_class_only_in_the_test_split_of_a_task_column_table_is_refused(tmp_path):
    """With a task column as without one: a class that has test rows but no training rows is an error."""
    with open(tmp_path / "t.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["f", "month", "split", "label"])
        for i in range(24):
            writer.writerow([i, f"m{i % 2}", "train" if i % 3 else "test", "ab"[i // 2 % 2]])
        writer.writerow([99, "m1", "test", "e"])
    source = {"path": str(tmp_path / "t.csv"), "task_column": "month", "split_column": "split"}
    with pytest.raises(UserError, match="class 'e' of .*t.csv has test samples but no training samples"):
        build_benchmark(DataConfig(source=source, validation=0.0), 0)
