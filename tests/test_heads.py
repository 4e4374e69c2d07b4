import torch

from lifelong.config import build_config
from lifelong.learner import Learner
from lifelong.models import build_backbone
from lifelong.models.heads import Network


def net(scenario, counts=(2, 3, 2), seed=0):
    torch.manual_seed(0)
    return Network(build_backbone("mlp", (1, 2, 2), hidden=[5]), scenario, list(counts), head_seed=seed)


def test_heads_do_not_depend_on_creation_order():
    a, b = net("task"), net("task")
    a.head(0), a.head(2)
    b.head(2), b.head(0)
    assert torch.equal(a.head(2).weight, b.head(2).weight)
    assert not torch.equal(a.head(0).weight[:2], a.head(2).weight[:2])


def test_heads_created_in_inference_mode_are_trainable():
    n = net("task")
    with torch.inference_mode():
        n(torch.zeros(1, 1, 2, 2), 1)
    out = n(torch.zeros(1, 1, 2, 2), 1).sum()
    out.backward()
    assert n.head(1).weight.grad is not None


def test_mixed_batch_gives_each_sample_its_task_logits():
    n = net("task")
    x = torch.randn(4, 1, 2, 2)
    ids = torch.tensor([1, 0, 1, 2])
    out = n(x, ids)
    assert out.shape == (4, 3)
    assert torch.allclose(out[1, :2], n(x[1:2], 0)[0]) and out[1, 2] == float("-inf")
    assert torch.allclose(out[0], n(x[0:1], 1)[0])


def test_class_incremental_masks_classes_not_reached():
    n = net("class")
    x = torch.randn(2, 1, 2, 2)
    assert n(x, 0).shape == (2, 2)
    n.start_task(1)
    assert n(x, 0).shape == (2, 5)  # after reaching task 1, all 5 classes seen so far compete
    assert n(x, 2).shape == (2, 7)


def test_unseen_outputs_trained_keeps_every_class_in_the_loss_and_predictions(tiny):
    """train.unseen_outputs trained: a class-incremental head gives every class's output from the first task on
    (loss and predictions); the run's network is built so; only a value away from the default is hashed."""
    n = Network(build_backbone("mlp", (1, 2, 2), hidden=[5]), "class", [2, 3, 2], mask_unseen=False)
    x = torch.randn(2, 1, 2, 2)
    assert n(x, 0).shape == (2, 7) and torch.equal(n(x, 0), n.logits(n.features(x), 0, all_classes=True))
    learner = Learner.create("naive", input_shape=(4,), classes=[2, 2], config={"train": {"unseen_outputs": "trained"}})
    assert learner.model.mask_unseen is False and learner.model(torch.randn(3, 4), 0).shape == (3, 4)
    assert Learner.create("naive", input_shape=(4,), classes=[2, 2]).model(torch.randn(3, 4), 0).shape == (3, 2)
    plain = build_config(tiny()).fingerprint()
    assert build_config(tiny(train={"unseen_outputs": "masked"})).fingerprint() == plain
    assert build_config(tiny(train={"unseen_outputs": "trained"})).fingerprint() != plain


def test_domain_incremental_shares_one_head():
    n = net("domain", counts=(2, 2, 2))
    x = torch.randn(2, 1, 2, 2)
    assert torch.equal(n(x, 0), n(x, 2))


def test_state_dict_round_trip_creates_heads():
    a = net("task")
    a.start_task(0)
    a.start_task(1)
    b = net("task", seed=9)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(a(x, 1), b(x, 1))
