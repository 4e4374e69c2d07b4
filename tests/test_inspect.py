"""Issue 21: diagnostics saved by the run after each task (safetensors, atomic, the same after a resume), the
linear probe, `lifelong inspect` and the report's "Inside the model" section."""

import io
import json

import pytest
import torch
from PIL import Image

from lifelong import diagnostics, inside, run, store
from lifelong.cli import main
from lifelong.errors import UserError

from test_method_contract import contract_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def saved(run_dir):
    return diagnostics.load_run(run_dir)


def test_ewc_saves_its_penalty_importance_after_each_task_and_a_resume_writes_the_same_files_and_probe(
        tiny, crash_and_resume):
    config = tiny(method="ewc", train={"epochs": 2, "probe": True})
    ref_dir, reference = run(config)
    files = saved(ref_dir)
    assert sorted(files) == [0, 1, 2]
    ckpt = store.load_checkpoint(ref_dir)["method"]["extra"]["penalty"]
    last = files[2]
    assert set(last) == {f"importance/{n}" for n in ckpt["names"]}
    flat = torch.cat([last[f"importance/{n}"].float().reshape(-1) for n in ckpt["names"]])
    assert torch.equal(flat, ckpt["weight"].to(torch.bfloat16).float())  # A = Σ c Ω, the penalty's own
    layer = files[0]["importance/backbone.layers.0.weight"].float()
    assert (files[2]["importance/backbone.layers.0.weight"].float() >= layer).all()  # EWC's Fishers add up

    crash_dir, resumed = crash_and_resume({**config, "out": str(ref_dir.parent.parent / "c")}, [(1, 1), (2, 0)])
    assert resumed["probe_matrix"] == reference["probe_matrix"]
    again = saved(crash_dir)
    assert sorted(again) == [0, 1, 2]
    assert all(torch.equal(again[t][k], files[t][k]) for t in files for k in files[t])
    assert not [p for p in (crash_dir / "diagnostics").iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_no_file_and_a_stale_temporary_file_is_removed(tmp_path, monkeypatch):
    folder = tmp_path / diagnostics.DIAGNOSTICS_DIR
    folder.mkdir()
    (folder / ".task-0.safetensors.abc123").write_bytes(b"half")  # a write killed earlier
    monkeypatch.setattr(store.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(UserError, match="No space left"):
        diagnostics.save_task(tmp_path, 0, {"x": torch.ones(3)}, "ewc")
    assert list(folder.iterdir()) == []
    monkeypatch.undo()
    diagnostics.save_task(tmp_path, 0, {"x": torch.ones(3)}, "ewc")
    assert torch.equal(diagnostics.load_run(tmp_path)[0]["x"], torch.ones(3))
    (folder / "task-1.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="task-1.safetensors"):
        diagnostics.load_run(tmp_path)


def test_replay_memory_histogram_matches_the_memory_and_inspect_shows_it(tiny, capsys):
    run_dir, results = run(tiny(method="er", memory={"size": 30, "batch_size": 8}, data={"scenario": "class"},
                                train={"epochs": 1}))
    memory = store.load_checkpoint(run_dir)["method"]["extra"]["memory"]
    rows = saved(run_dir)[2]["memory/rows"]
    assert rows.dtype == torch.int64 and int(rows.sum()) == memory["count"] == 30
    assert rows.sum(1).tolist() == torch.bincount(memory["task_ids"], minlength=3).tolist()
    found = inside.read(run_dir)
    labels, table = inside.memory_by_class(found)
    assert labels == [str(c) for task in results["tasks"] for c in task] and table[-1].sum() == 30
    assert table[0, 2:].sum() == 0  # after task 1 the memory holds only task 1's classes
    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Replay memory" in out and (run_dir / "inspect" / "memory_classes.png").is_file()


def test_the_probe_records_a_matrix_without_changing_the_run(tiny, capsys):
    _, plain = run(tiny(method="naive", train={"epochs": 1}))
    run_dir, probed = run(tiny(method="naive", train={"epochs": 1, "probe": True}))
    assert probed["acc_matrix"] == plain["acc_matrix"]  # the probe draws no random numbers, trains nothing
    P = probed["probe_matrix"]
    assert len(P) == 3 and all(len(row) == 3 and all(0.5 <= v <= 1.0 for v in row) for row in P)
    records = store.read_metrics(run_dir)
    assert [r["probe"] for r in records if r["event"] == "task"] == P
    assert records[0]["probe"] == probed["probe_random_init"]
    assert "probe_matrix" not in plain
    assert main(["inspect", str(run_dir), "--out", str(run_dir.parent / "figs")]) == 0
    out = capsys.readouterr().out
    assert "linear-probe" in out and f"{P[2][0]:.3f}" in out
    png = (run_dir.parent / "figs" / "probe.png").read_bytes()
    assert Image.open(io.BytesIO(png)).size[0] > 300


def test_slni_and_mark_save_their_sparsities(tmp_path, tiny):
    slni_dir, _ = run(tiny(method="mas", slni={"lam": 1e-3}, train={"epochs": 1}))
    files = saved(slni_dir)
    sparsity = files[2]["slni/activation_sparsity"]
    assert sparsity.shape == (1,) and 0.0 <= float(sparsity[0]) <= 1.0
    assert "importance/backbone.layers.0.weight" in files[2] and files[2]["slni/alpha/0"].shape == (32,)
    mark_dir, _ = run(contract_config(tmp_path, "mark", "mark"))
    masks = [saved(mark_dir)[t]["mark/mask_sparsity"] for t in range(3)]
    assert all(m.shape == (3,) and ((m >= 0) & (m <= 1)).all() for m in masks)
    found = inside.read(mark_dir)
    assert len(found.mask_sparsity) == 3 and not found.importance
    titles = [t for t, _, _ in inside.tables(found)]
    assert titles == ["MARK: mask sparsity (share of mask values below 0.01) per task"]


def test_gs_mask_ownership_is_read_from_the_task_records(tiny):
    run_dir, _ = run(tiny(method="naive", train={"epochs": 1}))
    records = store.read_metrics(run_dir)
    owned = [[[3], [1]], [[3, 2], [1, 4]], [[3, 2, 1], [1, 4, 0]]]
    for record, filters in zip([r for r in records if r["event"] == "task"], owned):
        record["gs_mask"] = {"filters_owned": filters}
    (run_dir / store.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    results = store.read_results(run_dir)
    store.write_json(run_dir / store.RESULTS_FILE, {**results, "method_info": {"filters": 8}})
    found = inside.read(run_dir)
    assert found.ownership == owned and found.filters == 8
    (title, header, rows), = [t for t in inside.tables(found) if t[0].startswith("gs-mask")]
    assert header == ["layer", "T1", "T2", "T3", "free"] and rows == [["conv 1", "3", "2", "1", "2"],
                                                                        ["conv 2", "1", "4", "0", "3"]]
    assert "filter_ownership" in [s[0] for s in inside.figure_specs(found, "naive")]


def test_the_report_has_an_inside_the_model_section(tiny, tmp_path):
    run_dir, _ = run(tiny(method="ewc", train={"epochs": 1, "probe": True}))
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Inside the model</h2>" in page and "ewc: importance per layer" in page
    assert (tmp_path / "r_figures" / "inside1_probe.svg").is_file()


def test_inspect_refuses_what_it_cannot_read(tmp_path, tiny, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run_dir, _ = run(tiny(method="naive", train={"epochs": 1}))
    assert main(["inspect", str(run_dir)]) == 0
    assert "saved no diagnostics" in capsys.readouterr().out
    (run_dir / store.RESULTS_FILE).unlink()
    assert main(["inspect", str(run_dir)]) == 2
    assert "lifelong resume" in capsys.readouterr().err


@pytest.mark.parametrize("name, tensor", [("memory/rows", torch.ones(3, dtype=torch.int64)),
                                          ("importance/fc.weight", torch.zeros(0))])
def test_inspect_refuses_diagnostics_it_cannot_draw(tiny, capsys, name, tensor):
    """A method's own diagnostics may hold anything: a shape the figures cannot draw is one line, not a traceback."""
    from safetensors.torch import save_file

    run_dir, _ = run(tiny(method="naive", train={"epochs": 1}))
    folder = run_dir / diagnostics.DIAGNOSTICS_DIR
    folder.mkdir(exist_ok=True)
    existing = sorted(folder.glob("*.safetensors"))
    save_file({name: tensor}, existing[0] if existing else folder / "task-0.safetensors")
    assert main(["inspect", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"hold '{name}' of shape" in err and len(err.strip().splitlines()) == 1


def test_importance_growth_keeps_its_axes_with_many_layers():
    """One legend entry per layer: a network with dozens (gs-conv's per-task modules, a ResNet) gets a taller
    figure instead of axes squeezed to nothing."""
    import warnings

    from lifelong import figures

    layers = [f"backbone.tasks.{t}.calibrations.{b}.excite" for t in range(5) for b in range(8)]
    means = [[1.0 + k, 2.0 + k] for k in range(len(layers))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when constrained layout collapses the axes
        png, _ = figures.render(figures.importance_growth, layers, means, [[0.1, 0.2]] * len(layers), [1, 2])
    few, _ = figures.render(figures.importance_growth, layers[:3], means[:3], [[0.1, 0.2]] * 3, [1, 2])
    heights = [Image.open(io.BytesIO(image)).size[1] for image in (png, few)]
    assert heights[0] > heights[1] + 450  # 40 entries in two columns: 20 rows of legend below the plots
