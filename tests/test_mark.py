"""MARK: masks against a hand-written forward pass, the KB meta-update against θ + β Σ_k (w_k/Σw)(θ_k − θ) by
hand, frozen per-task modules, state round trips and kill/resume equality, the pretrained-backbone option,
parameter counts by hand, and the shipped configs end to end on generated data in the official formats."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import lifelong
from lifelong.config import build_config, read_yaml
from lifelong.data.batches import TaskView
from lifelong.data.benchmarks import build_benchmark
from lifelong.errors import UserError
from lifelong.loop import build_method
from lifelong.methods.mark import reptile_step
from lifelong.models.mark import KnowledgeBase, MaskGenerator, TaskExtractor, parameter_counts

from fakedata import checksum_tables, make_data_root, patch_checksums

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"kb_channels": [8, 8, 8], "latent": 16, "features": 8, "extractor_epochs": 1, "kb_epochs": 1,
         "mask_epochs": 1, "meta_epochs": 1, "mini_tasks": 2, "inner_loop": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(tmp_path, mark=None, **sections):
    """A run of a few seconds: 3 quickstart tasks as 3×32×32 images, a tiny KB, one epoch of every phase."""
    cfg = {"method": "mark", "device": "cpu", "out": str(tmp_path / "runs"),
           "data": {"benchmark": "quickstart", "rgb32": True, "max_tasks": 3, "train_fraction": 0.08,
                    "validation": 0.1},
           "train": {"epochs": 2, "batch_size": 16}, "mark": {**SMALL, **(mark or {})}}
    cfg.update(sections)
    return cfg


def method_for(tmp_path, mark=None, **sections):
    cfg = build_config(config(tmp_path, mark, **sections))
    torch.manual_seed(cfg.seed)
    benchmark = build_benchmark(cfg.data, cfg.seed)
    return build_method(cfg, benchmark, torch.device("cpu")), benchmark


def on_first_task(tmp_path, mark=None):
    """A method set up to train task 0 (its F^0, M^0 and C^0 made, untrained), and task 0's training data."""
    method, benchmark = method_for(tmp_path, mark)
    task = benchmark.tasks[0]
    method.task_id = 0
    method.model.add_task(0)
    return method, TaskView(task, task.train, torch.device("cpu"))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- masks ---

def test_masks_scale_each_sample_and_channel_after_each_blocks_pooling():
    torch.manual_seed(0)
    kb = KnowledgeBase((3, 32, 32), channels=(4, 5, 6), latent=7, dropout=0.0).eval()
    x = torch.randn(3, 3, 32, 32)
    masks = [torch.rand(3, c) for c in (4, 5, 6)]
    h = x
    for block, mask in zip(kb.blocks, masks):  # the paper's order: Conv → ReLU → MaxPool, then the mask
        conv = block[0]
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias)), 2) * mask[:, :, None, None]
    expected = F.relu(F.linear(h.flatten(1), kb.fc[1].weight, kb.fc[1].bias))
    assert torch.allclose(kb(x, masks), expected, atol=1e-6)
    changed = [m.clone() for m in masks]
    changed[1][1, 2] = 0.0  # one channel of one sample
    out, new = kb(x, masks), kb(x, changed)
    assert torch.equal(out[[0, 2]], new[[0, 2]]) and not torch.equal(out[1], new[1])
    assert torch.equal(kb(x), kb(x, [torch.ones(3, c) for c in (4, 5, 6)]))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_mask_generator_gives_one_mask_per_sample_and_channel(activation):
    torch.manual_seed(0)
    generator = MaskGenerator(10, [4, 6], activation)
    features = torch.randn(5, 10)
    masks = generator(features)
    assert [m.shape for m in masks] == [(5, 4), (5, 6)]
    for layer, mask in zip(generator.layers, masks):
        pre = features @ layer.weight.T + layer.bias
        assert torch.allclose(mask, torch.sigmoid(pre) if activation == "sigmoid" else pre.clamp_min(0))
    assert not torch.equal(masks[1][0], masks[1][1])


@pytest.mark.parametrize("use_masks", [True, False])
def test_model_applies_its_tasks_masks_or_none(tmp_path, use_masks):
    method, benchmark = method_for(tmp_path, {"use_masks": use_masks})
    model = method.model.eval()
    model.add_task(0)
    x = TaskView(benchmark.tasks[0], benchmark.tasks[0].train, torch.device("cpu")).inputs(torch.arange(4))
    masks = model.masks(x, 0)
    head = model.network.head(0)
    if use_masks:
        assert [m.shape for m in masks] == [(4, c) for c in SMALL["kb_channels"]]
        assert torch.allclose(model(x, 0), head(model.kb(x, masks)))
        assert not torch.allclose(model(x, 0), head(model.kb(x)))
    else:
        assert masks is None and len(model.mask_generators) == 0
        ones = [torch.ones(4, c) for c in SMALL["kb_channels"]]
        assert torch.equal(model(x, 0), head(model.kb(x, ones)))


# --- the meta-update ---

def test_reptile_step_matches_a_hand_computation():
    theta = [torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])]
    adapted = [[torch.tensor([2.0, 0.0]), torch.tensor([[1.5]])],
               [torch.tensor([0.0, -1.0]), torch.tensor([[-0.5]])],
               [torch.tensor([9.0, 9.0]), torch.tensor([[9.0]])]]
    weights, beta = [0.75, 0.25, 0.0], 0.5
    expected = []
    for i, t in enumerate(theta):
        flat = t.flatten().tolist()
        moved = []
        for j, value in enumerate(flat):
            step = sum(w / sum(weights) * (a[i].flatten().tolist()[j] - value) for w, a in zip(weights, adapted))
            moved.append(value + beta * step)
        expected.append(moved)
    reptile_step(theta, adapted, weights, beta)
    assert theta[0].tolist() == pytest.approx(expected[0]) and theta[1].flatten().tolist() == pytest.approx(expected[1])
    assert theta[0].tolist() == pytest.approx([1.0 + 0.5 * 0.5, -2.0 + 0.5 * 1.75])  # towards the adapted weights
    theta = [torch.tensor([0.0])]
    reptile_step(theta, [[torch.tensor([1.0])], [torch.tensor([3.0])]], [0.0, 0.0], 1.0)
    assert theta[0].item() == pytest.approx(2.0)  # no accuracy at all: equal weights


def test_meta_update_moves_the_kb_to_the_accuracy_weighted_adapted_weights(tmp_path, monkeypatch):
    method, view = on_first_task(tmp_path, {"mini_tasks": 3, "inner_loop": 3, "lr_meta": 0.3})
    recorded = []
    adapt = method.adapt
    monkeypatch.setattr(method, "adapt", lambda *a: recorded.append(adapt(*a)) or recorded[-1])
    before = [p.detach().clone() for p in method.model.kb.parameters()]
    weights = method.meta_update(view, torch.Generator().manual_seed(0))
    assert weights == [w for _, w in recorded] and len(recorded) == 3
    assert all(0.0 <= w <= 1.0 for w in weights) and sum(weights) > 0
    for i, (theta, after) in enumerate(zip(before, method.model.kb.parameters())):
        by_hand = theta + 0.3 * sum(w / sum(weights) * (thetas[i] - theta) for thetas, w in recorded)
        assert torch.allclose(after, by_hand, atol=1e-6)
        assert not torch.equal(after, theta)


def test_inner_loop_uses_the_tasks_masks(tmp_path):
    method, view = on_first_task(tmp_path)
    second_conv = method.model.kb.blocks[1][0].weight.detach().clone()
    adapted, _ = method.adapt(view, torch.Generator().manual_seed(0))
    assert not torch.equal(adapted[2], second_conv)  # blocks.1.0.weight moves
    with torch.no_grad():  # masks of 0 on block 1's input: block 2's conv weights get no gradient
        first = method.model.mask_generators["0"].layers[0]
        first.weight.zero_()
        first.bias.zero_()
    adapted, _ = method.adapt(view, torch.Generator().manual_seed(0))
    assert torch.equal(adapted[2], second_conv)


def test_inner_loop_steps_are_clipped_to_grad_clip(tmp_path):
    method, view = on_first_task(tmp_path, {"inner_loop": 1, "lr_inner": 1.0, "grad_clip": 1e-3})
    before = [p.detach().clone() for p in method.model.kb.parameters()]
    adapted, _ = method.adapt(view, torch.Generator().manual_seed(0))
    moved = torch.cat([(a - b).flatten() for a, b in zip(adapted, before)]).norm().item()
    assert 0.0 < moved <= 1e-3 * (1 + 1e-4)  # one SGD step of lr 1 on a gradient clipped to norm 1e-3


def test_a_diverged_copy_is_left_out_of_the_meta_update(tmp_path, monkeypatch):
    method, view = on_first_task(tmp_path, {"mini_tasks": 3, "lr_meta": 0.5})
    before = [p.detach().clone() for p in method.model.kb.parameters()]
    copies = iter([([b + 1.0 for b in before], 0.5), ([torch.full_like(b, float("nan")) for b in before], 0.9),
                   ([b + 3.0 for b in before], 0.5)])
    monkeypatch.setattr(method, "adapt", lambda *a: next(copies))
    assert method.meta_update(view, torch.Generator().manual_seed(0)) == [0.5, 0.5]  # the NaN copy's 0.9 is out
    for theta, after in zip(before, method.model.kb.parameters()):
        assert torch.allclose(after, theta + 0.5 * 2.0)  # towards the mean of the two finite copies only


def test_before_task_counts_the_diverged_copies_of_each_task(tmp_path, monkeypatch):
    method, benchmark = method_for(tmp_path, {"mini_tasks": 3, "meta_epochs": 2})
    adapt = method.adapt
    calls = iter(range(100))

    def every_third_diverges(*args):
        thetas, w = adapt(*args)
        return ([torch.full_like(t, float("nan")) for t in thetas], w) if next(calls) % 3 == 1 else (thetas, w)

    monkeypatch.setattr(method, "adapt", every_third_diverges)
    method.before_task(benchmark.tasks[0])
    assert method.meta_diverged == [2]  # one of 3 copies in each of 2 meta epochs
    assert all(torch.isfinite(q).all() for q in method.model.kb.parameters())
    assert method.report()["meta_diverged"] == [2]


# --- per-task modules, state, resume ---

def test_old_tasks_modules_stay_bit_identical_while_later_tasks_train(tmp_path):
    method, benchmark = method_for(tmp_path)
    model = method.model
    kept, kb_after_first = {}, None
    for task in benchmark.tasks:
        method.before_task(task)
        view = TaskView(task, task.train, torch.device("cpu"))
        model.train()
        for start in range(0, len(view), 16):
            rows = torch.arange(start, min(start + 16, len(view)))
            method.train_step(view.inputs(rows), view.targets[rows], task.id)
        method.after_task(task, view)
        key = str(task.id)
        kept[task.id] = [snapshot(model.extractors[key]), snapshot(model.mask_generators[key]),
                         snapshot(model.network.head(task.id))]
        kb_after_first = kb_after_first or snapshot(model.kb)
    for task_id, (extractor, masks, head) in kept.items():
        key = str(task_id)
        assert same(extractor, snapshot(model.extractors[key]))  # BatchNorm statistics included
        assert same(masks, snapshot(model.mask_generators[key]))
        assert same(head, snapshot(model.network.head(task_id)))
    assert not same(kb_after_first, snapshot(model.kb))  # the meta-update did change the shared KB
    assert not any(p.requires_grad for e in model.extractors.values() for p in e.parameters())


def test_state_round_trip_keeps_kb_task_modules_and_optimizer(tmp_path):
    method, benchmark = method_for(tmp_path)
    for task in benchmark.tasks[:2]:
        method.before_task(task)
        view = TaskView(task, task.train, torch.device("cpu"))
        method.train_step(view.inputs(torch.arange(16)), view.targets[:16], task.id)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored, _ = method_for(tmp_path)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert same(method.model.state_dict(), restored.model.state_dict())
    assert sorted(restored.model.extractors) == sorted(restored.model.mask_generators) == ["0", "1"]
    assert restored.task_id == 1 and restored.meta_accuracy == method.meta_accuracy
    old, new = method.optimizer.state_dict(), restored.optimizer.state_dict()
    assert old["param_groups"] == new["param_groups"]
    assert all(torch.equal(old["state"][k]["momentum_buffer"], new["state"][k]["momentum_buffer"])
               for k in old["state"])
    x = TaskView(benchmark.tasks[0], benchmark.tasks[0].test, torch.device("cpu")).inputs(torch.arange(8))
    method.model.eval(), restored.model.eval()
    assert torch.equal(method.predict(x, 0), restored.predict(x, 0))


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, crash_and_resume):
    _, reference = lifelong.run(config(tmp_path, out=str(tmp_path / "ref")))
    run_dir, resumed = crash_and_resume(config(tmp_path, out=str(tmp_path / "crash")), [(0, 1), (2, 0), (2, 1)])
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert resumed["method_info"] == reference["method_info"]
    assert len(reference["method_info"]["meta_accuracy"]) == 3


@pytest.mark.parametrize("mark, fraction", [({}, 0.3), ({"use_masks": False}, 0.3), ({"use_meta": False}, 0.08),
                                             ({"mask_activation": "sigmoid"}, 0.08)])
def test_mark_and_its_ablations_run(tmp_path, mark, fraction):
    cfg = config(tmp_path, {"kb_epochs": 2, **mark})
    cfg["data"]["train_fraction"] = fraction
    _, results = lifelong.run(cfg)
    R = results["acc_matrix"]
    assert len(R) == 3 and len(results["method_info"]["meta_accuracy"]) == (0 if "use_meta" in mark else 3)
    if fraction > 0.1:  # enough data to learn every task
        assert min(R[i][i] for i in range(3)) > 0.7


# --- pretrained backbone, errors ---

@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_pretrained_backbone_is_loaded_frozen_and_shared(tmp_path, suffix):
    torch.manual_seed(3)
    pretrained = TaskExtractor((3, 32, 32), SMALL["features"])
    path = tmp_path / f"backbone{suffix}"
    weights = {k: v.contiguous() for k, v in pretrained.state_dict().items()}
    save_file(weights, str(path)) if suffix == ".safetensors" else torch.save(weights, path)
    method, benchmark = method_for(tmp_path, {"backbone_weights": str(path)})
    shared = method.model.shared_extractor
    assert same(snapshot(shared), weights) and not any(p.requires_grad for p in shared.parameters())
    for task in benchmark.tasks[:2]:
        method.before_task(task)
    assert len(method.model.extractors) == 0 and same(snapshot(shared), weights)
    assert not shared.training


def test_bad_backbone_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="backbone_weights"):
        method_for(tmp_path, {"backbone": "resnet18"})
    with pytest.raises(UserError, match="not found"):
        method_for(tmp_path, {"backbone_weights": str(tmp_path / "missing.safetensors")})
    save_file({"unrelated": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="does not fit"):
        method_for(tmp_path, {"backbone_weights": str(tmp_path / "other.safetensors")})
    with pytest.raises(UserError, match="task-incremental"):
        method_for(tmp_path, data={"benchmark": "quickstart", "rgb32": True, "scenario": "class"})
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="torchvision"):
            method_for(tmp_path, {"backbone": "resnet18", "backbone_weights": str(tmp_path / "other.safetensors")})


def test_rgb32_pads_grey_images_to_three_channels():
    from lifelong.config import DataConfig

    grey = build_benchmark(DataConfig(max_tasks=1, validation=0.0), 0).tasks[0]
    rgb = build_benchmark(DataConfig(max_tasks=1, validation=0.0, rgb32=True), 0).tasks[0]
    assert rgb.input_shape == (3, 32, 32)
    assert torch.equal(rgb.train.images[:, :, 2:30, 2:30], grey.train.images.expand(-1, 3, -1, -1))


# --- parameter count ---

def test_parameter_counts_match_a_hand_count(tmp_path):
    kb = (3 * 64 * 16 + 64) + (64 * 128 * 9 + 128) + (128 * 256 * 4 + 256) + (256 * 2 * 2 * 128 + 128)
    extractor = (3 * 32 * 16 + 32) + 2 * 32 + (32 * 32 * 9 + 32) + 2 * 32 + (32 * 6 * 6 * 128 + 128)
    masks = (128 * 64 + 64) + (128 * 128 + 128) + (128 * 256 + 256)
    head = 128 * 2 + 2
    defaults = {"kb_channels": [64, 128, 256], "latent": 128, "features": 128}
    method, benchmark = method_for(tmp_path, defaults, data={"benchmark": "quickstart", "rgb32": True})
    model = method.model
    for n in (5, 20):
        counts = parameter_counts(model, n, classes=2)
        assert counts == {"mark": kb + n * (extractor + masks + head), "one_network_per_task": n * (kb + head)}
    for task in range(5):
        model.add_task(task)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(model, 5, 2)["mark"]


# --- the shipped configs ---

@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_data_root(root, ["cifar100", "mini-imagenet"], per_class=2)
    return root, checksum_tables(root)


@pytest.mark.parametrize("name, shape", [("mark_cifar100.yml", (3, 32, 32)), ("mark_miniimagenet.yml", (3, 84, 84))])
def test_paper_configs_run_end_to_end_on_generated_data(tmp_path, monkeypatch, official, name, shape):
    root, tables = official
    patch_checksums(monkeypatch, root, tables=tables)
    raw = read_yaml(ROOT / "configs" / name)
    assert raw["method"] == "mark" and raw["data"]["validation"] == 0.15
    raw["data"].update(data_dir=str(root), validation=0.0)
    raw.update(out=str(tmp_path / "runs"), device="cpu", train={**raw["train"], "epochs": 1})
    raw["mark"] = {**raw.get("mark", {}), **SMALL, "kb_channels": [2, 2, 2], "extractor_channels": 2, "mini_tasks": 1,
                   "inner_loop": 1}
    _, results = lifelong.run(raw)
    assert len(results["acc_matrix"]) == 20 and all(len(row) == 20 for row in results["acc_matrix"])
    assert all(len(t) == 5 for t in results["tasks"]) and len(results["method_info"]["meta_accuracy"]) == 20
    assert tuple(build_benchmark(build_config(raw).data, 0).input_shape) == shape


@pytest.mark.parametrize("scenario", ["class", "domain"])
def test_mark_refuses_scenarios_without_a_task_id(tiny, scenario):
    with pytest.raises(UserError, match="task-incremental"):
        lifelong.run({k: v for k, v in tiny(method="mark", data={"scenario": scenario}).items() if k != "model"})


def test_a_model_section_is_said_to_be_ignored_as_mark_builds_its_own(tmp_path, monkeypatch):
    """Before, ``--method mark --model alexnet`` ran MARK's KB silently; a saved config (model.name mlp, the default)
    and one naming mark-kb say nothing. A warning, not an error: old run directories and compare bases keep working."""
    monkeypatch.setattr("lifelong.loop._run_locked", lambda *a, **k: "ran")  # the check comes before the run
    for model in ({"name": "alexnet"}, {"hidden": [10]}):
        with pytest.warns(UserWarning, match=r"method mark builds its own network \(mark-kb\).*model section is "
                                             "ignored"):
            lifelong.run(config(tmp_path, model=model))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in ({"name": "mark-kb"}, {"name": "mlp"}):
            lifelong.run(config(tmp_path, model=model))
