"""Tests for ``flower_suite.models``: parameter counts, shapes, gradients and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flower_suite.models import (
    MLP,
    MODELS,
    VGG9,
    CharLSTM,
    DigitsCNN,
    LeNet,
    ResNet18,
    count_parameters,
    create_model,
    register_model,
)
from flower_suite.registry import RegistryError

# ------------------------------------------------------------- hand-computed parameter counts


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    """Parameters of a k x k convolution."""
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear(n_in: int, n_out: int) -> int:
    """Parameters of a linear layer with bias."""
    return n_in * n_out + n_out


def bn(c: int) -> int:
    """Trainable BatchNorm parameters (weight and bias; running stats are buffers)."""
    return 2 * c


def resnet18_count(num_classes: int = 10, stem_bn: bool = True) -> int:
    """ResNet-18 (CIFAR variant) parameters from its architecture description.

    Stem: conv3x3 3->64 (no bias) [+ BN]. Stages (64,s1), (128,s2), (256,s2), (512,s2), two
    BasicBlocks each; a block has conv3x3-BN-conv3x3-BN and, when the shape changes, a
    1x1 conv-BN shortcut. Head: linear 512 -> classes.
    """
    total = conv(3, 64, 3, bias=False) + (bn(64) if stem_bn else 0)
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            block_in = c_in if block == 0 else c_out
            block_stride = stride if block == 0 else 1
            total += conv(block_in, c_out, 3, bias=False) + bn(c_out)
            total += conv(c_out, c_out, 3, bias=False) + bn(c_out)
            if block_stride != 1 or block_in != c_out:
                total += conv(block_in, c_out, 1, bias=False) + bn(c_out)
        c_in = c_out
    return total + linear(512, num_classes)


def test_mlp_parameter_count() -> None:
    """Default MLP 64-64-10: 64*64 + 64 + 64*10 + 10 = 4,810."""
    expected = (64 * 64 + 64) + (64 * 10 + 10)

    assert expected == 4_810
    assert count_parameters(MLP()) == expected


def test_mlp_parameter_count_with_two_hidden_layers() -> None:
    """A 20-30-40-5 MLP has the sum of its three linear layers' parameters."""
    expected = (20 * 30 + 30) + (30 * 40 + 40) + (40 * 5 + 5)

    assert count_parameters(MLP(in_features=20, hidden=(30, 40), num_classes=5)) == expected


def test_digits_cnn_parameter_count() -> None:
    """DigitsCNN: conv 1->16, conv 16->32 (3x3), fc 512->64, fc 64->10 = 38,282."""
    expected = (1 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 4 * 4 * 64 + 64) + (64 * 10 + 10)

    assert expected == 38_282
    assert count_parameters(DigitsCNN()) == expected


def test_lenet_parameter_count() -> None:
    """LeNet: (1*20*25+20)+(20*50*25+50)+(800*500+500)+(500*10+10) = 431,080."""
    expected = (1 * 20 * 25 + 20) + (20 * 50 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)

    assert expected == 431_080
    assert count_parameters(LeNet()) == expected


def test_vgg9_parameter_count() -> None:
    """VGG-9: six 3x3 convs 3-32-64-128-128-256-256, fc 4096-512-512-10 = 3,491,530."""
    convs = (
        (3 * 32 * 9 + 32)
        + (32 * 64 * 9 + 64)
        + (64 * 128 * 9 + 128)
        + (128 * 128 * 9 + 128)
        + (128 * 256 * 9 + 256)
        + (256 * 256 * 9 + 256)
    )
    fcs = (4096 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    expected = convs + fcs

    assert expected == 3_491_530
    assert count_parameters(VGG9()) == expected


def test_resnet18_parameter_count_with_stem_bn() -> None:
    """CIFAR ResNet-18 with the stem BatchNorm has 11,173,962 parameters."""
    expected = resnet18_count(stem_bn=True)

    assert expected == 11_173_962
    assert count_parameters(ResNet18()) == expected


def test_resnet18_parameter_count_without_stem_bn() -> None:
    """Without the stem BatchNorm: 11,173,834 (PUFFERFISH's count), 128 fewer."""
    expected = resnet18_count(stem_bn=False)

    assert expected == 11_173_834
    assert resnet18_count(stem_bn=True) - expected == bn(64) == 128
    assert count_parameters(ResNet18(stem_bn=False)) == expected


def test_char_lstm_parameter_count() -> None:
    """CharLSTM: 80*8 + 4*256*(8+256) + 2*4*256 + (256*80 + 80) = 293,584."""
    embedding = 80 * 8
    lstm = 4 * 256 * (8 + 256) + 2 * 4 * 256  # W_ih, W_hh, b_ih, b_hh
    decoder = 256 * 80 + 80
    expected = embedding + lstm + decoder

    assert expected == 293_584
    assert count_parameters(CharLSTM()) == expected


def test_batchnorm_running_stats_are_not_counted() -> None:
    """ResNet-18's BatchNorm running mean/var are buffers, absent from the count."""
    model = ResNet18()
    buffer_elems = sum(b.numel() for b in model.buffers())

    assert buffer_elems > 0
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------- forward and backward

# (name, model factory, input factory, output shape) with batch size 2.
CASES = [
    ("mlp", MLP, lambda: torch.rand(2, 1, 8, 8), (2, 10)),
    ("digits_cnn", DigitsCNN, lambda: torch.rand(2, 1, 8, 8), (2, 10)),
    ("lenet", LeNet, lambda: torch.rand(2, 1, 28, 28), (2, 10)),
    ("vgg9", VGG9, lambda: torch.rand(2, 3, 32, 32), (2, 10)),
    ("resnet18", ResNet18, lambda: torch.rand(2, 3, 32, 32), (2, 10)),
    ("char_lstm", CharLSTM, lambda: torch.randint(0, 80, (2, 80)), (2, 80)),
]


@pytest.mark.parametrize(
    ("name", "factory", "make_input", "out_shape"), CASES, ids=[c[0] for c in CASES]
)
def test_forward_shape(name: str, factory, make_input, out_shape: tuple[int, int]) -> None:
    """A batch of 2 gives one logit row per sample with the expected width."""
    torch.manual_seed(0)
    model = factory()

    out = model(make_input())

    assert tuple(out.shape) == out_shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "factory", "make_input", "out_shape"), CASES, ids=[c[0] for c in CASES]
)
def test_backward_gives_finite_gradients_everywhere(
    name: str, factory, make_input, out_shape: tuple[int, int]
) -> None:
    """One cross-entropy backward pass gives a finite gradient for every parameter."""
    # Prepare
    torch.manual_seed(0)
    model = factory()
    model.train()
    targets = torch.tensor([1, 3])

    # Execute
    loss = nn.functional.cross_entropy(model(make_input()), targets)
    loss.backward()

    # Assert
    assert torch.isfinite(loss)
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"
        assert param.grad.shape == param.shape
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {param_name}"
    total_norm = sum(float(p.grad.abs().sum()) for p in model.parameters())
    assert total_norm > 0


def test_resnet18_eval_mode_is_deterministic() -> None:
    """In eval mode (no dropout, BN on running stats) two forward passes agree."""
    torch.manual_seed(0)
    model = ResNet18().eval()
    x = torch.rand(2, 3, 32, 32)

    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_stem_bn_false_replaces_bn_with_identity() -> None:
    """``stem_bn=False`` builds an identity after the stem convolution."""
    assert isinstance(ResNet18(stem_bn=False).bn1, nn.Identity)
    assert isinstance(ResNet18().bn1, nn.BatchNorm2d)


# ------------------------------------------------------------------------------- registry


def test_registry_holds_the_reference_models() -> None:
    """Every reference network is registered under its config name."""
    expected = {"mlp", "digits_cnn", "lenet", "vgg9", "resnet18", "char_lstm"}

    assert expected <= set(MODELS)
    for name in expected:
        assert name in MODELS


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mlp", MLP),
        ("digits_cnn", DigitsCNN),
        ("Digits-CNN", DigitsCNN),
        ("lenet", LeNet),
        ("VGG9", VGG9),
        ("resnet18", ResNet18),
        ("char-lstm", CharLSTM),
    ],
)
def test_create_model_by_name(name: str, cls: type) -> None:
    """``create_model`` instantiates the class registered under ``name`` (any spelling)."""
    assert isinstance(create_model(name), cls)


@pytest.mark.parametrize(
    ("name", "make_input"),
    [
        ("mlp", lambda: torch.rand(2, 1, 8, 8)),
        ("digits_cnn", lambda: torch.rand(2, 1, 8, 8)),
        ("lenet", lambda: torch.rand(2, 1, 28, 28)),
        ("vgg9", lambda: torch.rand(2, 3, 32, 32)),
        ("resnet18", lambda: torch.rand(2, 3, 32, 32)),
    ],
)
def test_num_classes_override_changes_output_width(name: str, make_input) -> None:
    """``num_classes=7`` gives 7 logits and shrinks the last layer accordingly."""
    default = create_model(name)
    seven = create_model(name, num_classes=7)

    assert tuple(seven(make_input()).shape) == (2, 7)
    last_default = [m for m in default.modules() if isinstance(m, nn.Linear)][-1]
    delta = (last_default.in_features + 1) * 3  # three fewer output units
    assert count_parameters(default) - count_parameters(seven) == delta


def test_char_lstm_vocab_size_changes_output_width() -> None:
    """CharLSTM's output width follows ``vocab_size``."""
    model = create_model("char_lstm", vocab_size=30)

    assert tuple(model(torch.randint(0, 30, (2, 12))).shape) == (2, 30)


def test_create_model_unknown_keyword() -> None:
    """An unknown constructor keyword fails (TypeError from the constructor)."""
    with pytest.raises(TypeError):
        create_model("mlp", depth=3)


def test_create_model_unknown_name() -> None:
    """An unknown model name raises a RegistryError with a suggestion."""
    with pytest.raises(RegistryError, match="did you mean lenet"):
        create_model("lenett")


def test_check_kwargs_on_models() -> None:
    """Config validation accepts real constructor keywords and rejects others."""
    MODELS.check_kwargs("resnet18", {"num_classes": 100, "stem_bn": False}, field="model")

    with pytest.raises(RegistryError, match=r"model\.width"):
        MODELS.check_kwargs("resnet18", {"width": 2}, field="model")


def test_register_model_then_create(monkeypatch: pytest.MonkeyPatch) -> None:
    """``register_model`` makes a new factory available to ``create_model``; twice is refused."""
    # Prepare: work on a copy of the shared table so the registration is undone afterwards.
    monkeypatch.setattr(MODELS, "_factories", dict(MODELS._factories))
    name = "test_models_tiny_linear"

    def tiny(num_classes: int = 2) -> nn.Module:
        return nn.Linear(4, num_classes)

    # Execute
    register_model(name, tiny)
    model = create_model(name, num_classes=3)

    # Assert
    assert isinstance(model, nn.Linear)
    assert model.out_features == 3
    with pytest.raises(RegistryError, match="already registered"):
        register_model(name, tiny)


# ----------------------------------------------------------------------- count_parameters


def test_count_parameters_trainable_only_after_freezing() -> None:
    """Freezing the first linear layer removes its 64*64 + 64 weights from the trainable count."""
    # Prepare
    model = MLP()
    first = model.net[1]
    assert isinstance(first, nn.Linear)

    # Execute
    for p in first.parameters():
        p.requires_grad_(False)

    # Assert
    assert count_parameters(model) == 4_810
    assert count_parameters(model, trainable_only=True) == 4_810 - (64 * 64 + 64)


def test_count_parameters_trainable_only_without_freezing() -> None:
    """With nothing frozen both counts agree."""
    model = LeNet()

    assert count_parameters(model, trainable_only=True) == count_parameters(model) == 431_080


def test_count_parameters_all_frozen() -> None:
    """A fully frozen model has no trainable parameters but keeps its total."""
    model = DigitsCNN()
    for p in model.parameters():
        p.requires_grad_(False)

    assert count_parameters(model, trainable_only=True) == 0
    assert count_parameters(model) == 38_282
