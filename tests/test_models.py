"""Backbone shapes, parameter counts, determinism, MLP activations and name/option errors."""

from __future__ import annotations

import pytest
import torch

from lifelong.errors import UserError
from lifelong.models import MLP, MODELS, AlexNetLike, ReducedResNet18, build_backbone

SHAPES = [(1, 28, 28), (3, 32, 32)]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "in_shape", "options", "expected"),
    [
        *[("mlp", s, {}, 400) for s in SHAPES],
        *[("alexnet", s, {}, 2048) for s in SHAPES],
        *[("resnet18-reduced", s, {}, 160) for s in [*SHAPES, (3, 84, 84)]],
        ("mlp", (1, 28, 28), {"hidden": [100, 50]}, 50),
        ("alexnet", (3, 32, 32), {"fc": (512,)}, 512),
        ("resnet18-reduced", (3, 32, 32), {"nf": 8}, 64),
    ],
)
def test_output_shape_matches_out_features(
    name: str, in_shape: tuple[int, int, int], options: dict, expected: int
) -> None:
    model = build_backbone(name, in_shape, **options)
    assert model.out_features == expected
    assert model(torch.rand(2, *in_shape)).shape == (2, expected)


def test_mlp_parameter_count_by_hand() -> None:
    assert n_params(MLP((1, 28, 28))) == (784 * 400 + 400) + (400 * 400 + 400)
    assert n_params(MLP((3, 32, 32), hidden=(100,))) == 3072 * 100 + 100


@pytest.mark.parametrize(
    ("in_shape", "flat"), [((3, 32, 32), 256 * 2 * 2), ((1, 28, 28), 256 * 2 * 2), ((3, 84, 84), 256 * 7 * 7)]
)
def test_alexnet_flattened_size(in_shape: tuple[int, int, int], flat: int) -> None:
    model = AlexNetLike(in_shape)
    assert model.fc[0].in_features == flat
    assert model.conv(torch.rand(1, *in_shape)).flatten(1).shape[1] == flat


def test_alexnet_rejects_too_small_inputs() -> None:
    with pytest.raises(UserError, match="12×12"):
        AlexNetLike((1, 11, 11))


@pytest.mark.parametrize("name", list(MODELS))
def test_same_seed_same_parameters(name: str) -> None:
    torch.manual_seed(0)
    first = build_backbone(name, (3, 32, 32)).state_dict()
    torch.manual_seed(0)
    second = build_backbone(name, (3, 32, 32)).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_mlp_forward_with_activations(dropout: float) -> None:
    model = MLP((1, 28, 28), hidden=(300, 200, 100), dropout=dropout).eval()
    x = torch.randn(4, 1, 28, 28)
    features, activations = model.forward_with_activations(x)
    assert torch.equal(features, model(x))
    assert [a.shape for a in activations] == [(4, 300), (4, 200), (4, 100)]
    assert all((a >= 0).all() for a in activations)
    assert (activations[0] == 0).any()  # the ReLU actually clipped something


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError, match="mlp, alexnet, resnet18-reduced"):
        build_backbone("vgg", (3, 32, 32))


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(UserError, match="model option 'widths' is not valid for mlp; valid: hidden, dropout"):
        build_backbone("mlp", (1, 28, 28), widths=(10,))


def test_bad_option_value_is_user_error() -> None:
    with pytest.raises(UserError, match="mlp"):
        build_backbone("mlp", (1, 28, 28), dropout=1.5)
    with pytest.raises(UserError, match="dropout"):
        build_backbone("alexnet", (3, 32, 32), dropout=(0.2,))
    for hidden in ([], 100, "400"):  # no hidden layer left the network without parameters (StopIteration)
        with pytest.raises(UserError, match=r"hidden must be a list of one or more positive widths"):
            build_backbone("mlp", (1, 28, 28), hidden=hidden)
    with pytest.raises(UserError, match=r"dropout must be in \[0, 1\), got -1"):
        build_backbone("mlp", (1, 28, 28), dropout=-1)


def test_registry_entries_are_described() -> None:
    assert all(callable(ctor) and desc for ctor, desc in MODELS.values())
    assert isinstance(build_backbone("resnet18-reduced", (3, 32, 32)), ReducedResNet18)
