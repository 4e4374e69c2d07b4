"""Closed-form per-sample importances of conv, BatchNorm and position-wise linear layers against the vmap
reference and a plain loop of one backward pass per sample."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.methods.importance import (
    _closed_form,
    _vmapped,
    _padded,
    _window_view,
    parameter_names,
    summed_per_sample,
)
from lifelong.models import build_backbone
from lifelong.models.heads import Network


class TinyConv(nn.Module):
    """Conv → BatchNorm → ReLU → conv → ReLU → a linear layer applied at every position → flatten."""

    def __init__(self, stride=1, padding=0, groups=1, dilation=1, bias=True, in_shape=(2, 9, 8)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 4, 3, stride=stride, padding=padding, dilation=dilation,
                               groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, (2, 3), padding=(1, 0), groups=groups, bias=bias)
        self.token = nn.Linear(6, 3)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)
            self.out_features = self(torch.zeros(1, *in_shape)).shape[1]

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.norm(self.conv1(x)))))
        return torch.relu(self.token(h.flatten(2).transpose(1, 2))).flatten(1)


CONFIGS = [
    {},
    {"stride": 2, "padding": 1, "bias": False},
    {"padding": 2, "groups": 2, "dilation": 2},
    {"stride": (2, 1), "padding": (1, 2), "groups": 2, "dilation": (1, 2)},
    {"padding": "valid", "groups": 2, "bias": False},
]


def network(backbone):
    torch.manual_seed(0)
    net = Network(backbone, "task", [3, 4])
    net.start_task(0)
    net.start_task(1)
    return net.eval()


def loop_reference(net, names, x, task_id, loss_of, transform):
    """One backward pass per sample: the slow, obviously correct computation."""
    total = None
    params = dict(net.named_parameters())
    for i in range(x.shape[0]):
        net.zero_grad()
        loss_of(net(x[i : i + 1], task_id), i).backward()
        g = torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1)
                       for n in names])
        total = transform(g) if total is None else total + transform(g)
    return total


def objectives(transform, y):
    """(per-sample objective, loop loss) pairs as EWC (squared log-likelihood) and MAS (|output norm|) use them."""
    if transform is torch.square:
        return lambda z, e: F.cross_entropy(z[None], e[None]), lambda out, i: F.cross_entropy(out, y[i : i + 1])
    return lambda z, e: z.pow(2).sum(), lambda out, i: out.pow(2).sum()


def close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "contiguous"])
@pytest.mark.parametrize("transform", [torch.square, torch.abs])
@pytest.mark.parametrize("config", CONFIGS)
def test_conv_closed_form_equals_vmap_and_a_loop(config, transform, channels_last, monkeypatch):
    """Every layer shape, with the activations in either memory layout (the closed form reads them as they are)."""
    monkeypatch.setattr("lifelong.methods.importance.CHANNELS_LAST", channels_last)
    layouts = []
    net_hook = lambda m, args, out: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    torch.manual_seed(1)
    net = network(TinyConv(**config))
    names = parameter_names(net)
    x, y = torch.randn(5, 2, 9, 8), torch.tensor([0, 3, 1, 2, 3])
    objective, loss_of = objectives(transform, y)
    handle = net.backbone.conv2.register_forward_hook(net_hook)
    closed = _closed_form(net, names, x, 1, objective, transform, y)
    handle.remove()
    assert layouts == [channels_last]  # the layout under test is the one the layers saw
    assert closed is not None
    assert close(closed, _vmapped(net, names, x, 1, objective, transform, y))
    assert close(closed, loop_reference(net, names, x, 1, loss_of, transform))
    assert closed.abs().sum() > 0


def test_one_channel_inputs_run_channels_last_too():
    """Grayscale inputs: their channels-last strides are ambiguous, so the pass views them with channel stride 1
    and every conv after reads channels last; the result is the vmap reference's."""
    layouts = []
    torch.manual_seed(1)
    net = network(TinyConv(stride=2, padding=1, in_shape=(1, 9, 8)))
    handle = net.backbone.conv2.register_forward_hook(
        lambda m, args, out: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                            and args[0].stride(1) == 1))
    names = parameter_names(net)
    x, y = torch.randn(5, 1, 9, 8), torch.tensor([0, 3, 1, 2, 3])
    objective, _ = objectives(torch.square, y)
    closed = _closed_form(net, names, x, 1, objective, torch.square, y)
    handle.remove()
    assert layouts == [True]
    assert close(closed, _vmapped(net, names, x, 1, objective, torch.square, y))


def test_chunks_of_samples_do_not_change_the_closed_form(monkeypatch):
    net = network(TinyConv(stride=2, padding=1, groups=2))
    names = parameter_names(net)
    x = torch.randn(7, 2, 9, 8)
    objective = lambda z, e: z.pow(2).sum()
    whole = _closed_form(net, names, x, 0, objective, torch.abs, torch.zeros(7))
    monkeypatch.setattr("lifelong.methods.importance.CLOSED_FORM_BYTES", 1)  # one sample per chunk
    chunked = _closed_form(net, names, x, 0, objective, torch.abs, torch.zeros(7))
    assert close(whole, chunked)


@pytest.mark.parametrize("transform", [torch.square, torch.abs])
@pytest.mark.parametrize("name, shape, options", [
    ("resnet18-reduced", (3, 8, 8), {"nf": 2}),
    ("alexnet", (3, 12, 12), {"fc": [16, 16]}),
    ("gs-conv", (1, 8, 8), {"filters": 4, "blocks": 2, "reduction": 2}),  # per-task BatchNorm and calibration
])
def test_conv_backbones_use_the_closed_form(name, shape, options, transform):
    net = network(build_backbone(name, shape, **options))
    with torch.no_grad():  # BatchNorm with statistics other than the initial ones
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    names = parameter_names(net)
    x, y = torch.randn(4, *shape), torch.tensor([0, 1, 3, 2])
    objective, loss_of = objectives(transform, y)
    closed = _closed_form(net, names, x, 1, objective, transform, y)
    assert closed is not None
    assert close(closed, _vmapped(net, names, x, 1, objective, transform, y))
    assert close(closed, loop_reference(net, names, x, 1, loss_of, transform))


class Reused(nn.Module):
    """The same conv twice: its per-sample gradient is a sum over both calls, which has no formula here."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.out_features = 2 * 6 * 5

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x))).flatten(1)


class InPlace(nn.Module):
    """A conv whose output an in-place ReLU overwrites: the recorded output is no longer the conv's."""

    def __init__(self, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=padding)
        self.act = nn.ReLU(inplace=True)
        self.out_features = 3 * 4 * 3 if padding == 0 else 3 * 6 * 5

    def forward(self, x):
        return self.act(self.conv(x)).flatten(1)


@pytest.mark.parametrize("backbone", [Reused, InPlace, lambda: InPlace(padding="same")])
def test_layers_without_a_formula_fall_back_to_vmap(backbone):
    net = network(backbone())
    names = parameter_names(net)
    x = torch.randn(4, 2, 6, 5)
    objective, loss_of = objectives(torch.abs, None)
    assert _closed_form(net, names, x, 0, objective, torch.abs, torch.zeros(4)) is None
    fast = summed_per_sample(net, names, x, 0, objective, torch.abs)
    assert close(fast, loop_reference(net, names, x, 0, loss_of, torch.abs))


def test_batch_statistics_fall_back_to_vmap():
    """BatchNorm in training mode makes samples interact: no closed form."""
    net = network(TinyConv())
    net.backbone.norm.train()
    names = parameter_names(net)
    x = torch.randn(3, 2, 9, 8)
    assert _closed_form(net, names, x, 0, lambda z, e: z.pow(2).sum(), torch.abs, torch.zeros(3)) is None


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels-last", "contiguous"])
@pytest.mark.parametrize("config", CONFIGS)
def test_windows_equal_torch_unfold(config, channels_last):
    conv = TinyConv(**config).conv1
    a = torch.randn(3, 2, 9, 8)
    padding = 0 if conv.padding == "valid" else conv.padding
    unfolded = F.unfold(a, conv.kernel_size, conv.dilation, padding, conv.stride)  # (n, C·kh·kw, positions)
    (kh, kw), groups = conv.kernel_size, conv.groups
    expected = unfolded.view(3, groups, 2 // groups, kh, kw, -1).permute(0, 1, 5, 3, 4, 2).reshape(3, groups, -1,
                                                                                                    kh * kw * 2 // groups)
    a = a.contiguous(memory_format=torch.channels_last) if channels_last else a
    view = _window_view(conv, _padded(conv, a))  # (n, groups, rows, columns, kh, kw, C/groups)
    assert torch.equal(view.reshape(*view.shape[:2], view.shape[2] * view.shape[3], -1), expected)


@pytest.mark.parametrize("backbone", [TinyConv, Reused], ids=["closed-form", "vmap"])
def test_extra_as_a_function_of_the_logits(backbone, monkeypatch):
    """Labels computed from the model's own logits (EWC's ``sample`` / ``max`` modes) on the closed form's forward
    pass, in batches of CLOSED_FORM_BATCH: the same sum as with the labels given."""
    monkeypatch.setattr("lifelong.methods.importance.CLOSED_FORM_BATCH", 3)
    net = network(backbone())
    names = parameter_names(net)
    x = torch.randn(7, 2, 9, 8) if backbone is TinyConv else torch.randn(7, 2, 6, 5)
    with torch.no_grad():
        labels = net(x, 1).argmax(1)
    objective = lambda z, e: F.cross_entropy(z[None], e[None])
    seen = []
    argmax = lambda logits: seen.append(logits.shape[0]) or logits.argmax(1)
    given = summed_per_sample(net, names, x, 1, objective, torch.square, labels)
    assert close(summed_per_sample(net, names, x, 1, objective, torch.square, argmax), given)
    assert seen == [3, 3, 1]  # once per batch, no forward pass of its own
    assert close(given, loop_reference(net, names, x, 1, lambda out, i: F.cross_entropy(out, labels[i : i + 1]),
                                       torch.square))


class DenseNorm(nn.Module):
    """Flatten → linear → BatchNorm1d (running statistics) → ReLU: the BatchNorm formula on (n, features)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2 * 6 * 5, 5)
        self.norm = nn.BatchNorm1d(5)
        self.out_features = 5
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return torch.relu(self.norm(self.fc(x.flatten(1))))


@pytest.mark.parametrize("transform", [torch.square, torch.abs])
def test_batchnorm1d_closed_form_equals_vmap_and_a_loop(transform):
    net = network(DenseNorm())
    names = parameter_names(net)
    x, y = torch.randn(5, 2, 6, 5), torch.tensor([0, 3, 1, 2, 3])
    objective, loss_of = objectives(transform, y)
    closed = _closed_form(net, names, x, 1, objective, transform, y)
    assert closed is not None
    assert close(closed, _vmapped(net, names, x, 1, objective, transform, y))
    assert close(closed, loop_reference(net, names, x, 1, loss_of, transform))


def test_closed_form_batches_conv_nets_only():
    """Conv nets run the closed form CLOSED_FORM_BATCH samples at a time; a linear net takes the caller's batch in
    one pass (one matrix product per layer, faster on more rows)."""
    from lifelong.methods.importance import CLOSED_FORM_BATCH, _closed_form_batch

    assert _closed_form_batch(network(TinyConv()), 1024) == CLOSED_FORM_BATCH
    assert _closed_form_batch(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 1024) == 1024


@pytest.mark.parametrize("norm, shape", [(nn.BatchNorm2d(4), (3, 4, 5, 6)), (nn.BatchNorm1d(4), (3, 4)),
                                         (nn.BatchNorm2d(4, affine=False), (3, 4, 5, 6))])
def test_norms_as_affine_match_batchnorm_and_are_undone(norm, shape):
    """During the closed form's forward pass an eval BatchNorm is y = s x + t: its own output up to rounding, the
    same input gradient, and its own forward again afterwards (also when the pass raises)."""
    from lifelong.methods.importance import _norms_as_affine

    with torch.no_grad():
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        if norm.affine:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    norm.eval()
    x, g = torch.randn(shape, requires_grad=True), torch.randn(shape)
    expected = norm(x)
    with _norms_as_affine(norm):
        assert "forward" in vars(norm)
        affine = norm(x)
    assert "forward" not in vars(norm)
    assert close(affine, expected)
    assert close(*(torch.autograd.grad(y, x, g)[0] for y in (affine, expected)))
    with pytest.raises(RuntimeError), _norms_as_affine(norm):
        raise RuntimeError
    assert "forward" not in vars(norm)


@pytest.mark.parametrize("transform", [torch.square, torch.abs])
def test_samples_added_one_at_a_time_or_in_one_sum(transform, monkeypatch):
    """``_accumulate``'s two ways of summing transformed per-sample gradients give the same closed form."""
    net = network(TinyConv(stride=2, padding=1))
    names = parameter_names(net)
    x, y = torch.randn(6, 2, 9, 8), torch.tensor([0, 3, 1, 2, 3, 0])
    objective, loss_of = objectives(transform, y)
    monkeypatch.setattr("lifelong.methods.importance.ADD_EACH_SAMPLE", 1)
    each = _closed_form(net, names, x, 1, objective, transform, y)
    monkeypatch.setattr("lifelong.methods.importance.ADD_EACH_SAMPLE", 2**62)
    summed = _closed_form(net, names, x, 1, objective, transform, y)
    assert close(each, summed)
    assert close(each, loop_reference(net, names, x, 1, loss_of, transform))
