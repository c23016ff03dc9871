"""Tests for ``flower_suite.models.pufferfish``: spec §10 reference counts and hybrid layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flower_suite.models import ResNet18, count_parameters
from flower_suite.models.lowrank import (
    GateLSTM,
    LowRankConv2d,
    LowRankLinear,
    LowRankLSTM,
    count_macs,
    factorize,
)
from flower_suite.models.pufferfish import (
    VGG19BN,
    LSTMLanguageModel,
    Transformer,
    hybrid_keep,
    pufferfish_lstm,
    pufferfish_resnet18,
    pufferfish_transformer,
    pufferfish_vgg19,
    resnet18_keep_full_rank,
)

META = torch.device("meta")

# -------------------------------------------------------------- spec §10 counts (meta device)


@pytest.mark.parametrize(
    ("build", "convert", "vanilla", "hybrid"),
    [
        (VGG19BN, pufferfish_vgg19, 20_560_330, 8_370_634),
        (lambda: ResNet18(stem_bn=False), pufferfish_resnet18, 11_173_834, 3_336_138),
        (lambda: ResNet18(stem_bn=True), pufferfish_resnet18, 11_173_962, 3_336_266),
        (LSTMLanguageModel, pufferfish_lstm, 85_962_278, 67_962_278),
        (Transformer, pufferfish_transformer, 48_978_432, 26_696_192),
    ],
)
def test_reference_parameter_counts(build, convert, vanilla: int, hybrid: int) -> None:
    """Vanilla and PUFFERFISH (rho = 0.25) counts equal spec §10 exactly."""
    with META:
        model = build()
        low = convert(model, 0.25)
    assert count_parameters(model) == vanilla
    assert count_parameters(low) == hybrid


def test_default_builders_match_reference() -> None:
    """With model=None each converter builds the reference vanilla network itself."""
    with META:
        assert count_parameters(pufferfish_resnet18()) == 3_336_138
        assert count_parameters(pufferfish_vgg19()) == 8_370_634


@pytest.mark.parametrize(
    ("build", "convert", "vanilla", "hybrid"),
    [
        (VGG19BN, pufferfish_vgg19, 398_660_608, 289_346_560),
        (lambda: ResNet18(stem_bn=False), pufferfish_resnet18, 555_422_720, 216_208_384),
    ],
)
def test_reference_macs(build, convert, vanilla: int, hybrid: int) -> None:
    """Conv+FC multiply-adds for one 3x32x32 image equal spec §10 exactly."""
    with META:
        model = build()
        low = convert(model, 0.25)
    assert count_macs(model, (1, 3, 32, 32)) == vanilla
    assert count_macs(low, (1, 3, 32, 32)) == hybrid


# ------------------------------------------------------------------------- hybrid layouts (§4)


def test_vgg19_layout() -> None:
    """K=10: conv1..conv9 and fc19 full-rank; conv10..16 and fc17/fc18 rank 128 (P3)."""
    with META:
        model = VGG19BN()
        low = pufferfish_vgg19(model)
    convs = [m for m in low.features if isinstance(m, nn.Conv2d | LowRankConv2d)]
    assert len(convs) == 16
    assert all(isinstance(m, nn.Conv2d) for m in convs[:9])
    assert all(isinstance(m, LowRankConv2d) and m.rank == 128 for m in convs[9:])
    fc17, fc18, fc19 = low.classifier[0], low.classifier[2], low.classifier[4]
    for fc in (fc17, fc18):
        assert isinstance(fc, LowRankLinear) and fc.rank == 128
        assert fc.u.bias is None and fc.v.bias is not None
    assert isinstance(fc19, nn.Linear)
    assert len(hybrid_keep(model, 10)) == 9


def test_resnet18_layout() -> None:
    """Stem, block 1, shortcuts and FC full-rank; the other 14 3x3 convs have r = planes/4."""
    with META:
        model = ResNet18(stem_bn=False)
        low = pufferfish_resnet18(model)
    assert resnet18_keep_full_rank(model) == [
        "conv1",
        "layers.0.0",
        "linear",
        "layers.1.0.shortcut.0",
        "layers.2.0.shortcut.0",
        "layers.3.0.shortcut.0",
    ]
    assert isinstance(low.conv1, nn.Conv2d) and isinstance(low.linear, nn.Linear)
    assert isinstance(low.layers[0][0].conv1, nn.Conv2d)
    assert isinstance(low.layers[0][0].conv2, nn.Conv2d)
    ranks = []
    for stage in low.layers:
        for block in stage:
            if isinstance(block.shortcut, nn.Sequential):
                assert isinstance(block.shortcut[0], nn.Conv2d)
            for conv in (block.conv1, block.conv2):
                if isinstance(conv, LowRankConv2d):
                    ranks.append(conv.rank)
                    assert conv.v.kernel_size == (1, 1) and conv.v.stride == (1, 1)
    assert ranks == [16, 16, 32, 32, 32, 32, 64, 64, 64, 64, 128, 128, 128, 128]
    assert low.layers[1][0].conv1.u.stride == (2, 2)


def test_transformer_and_lstm_layout() -> None:
    """Transformer layer 1 kept, layers 2..6 at r=128; both LSTM layers at r=375."""
    with META:
        t = pufferfish_transformer(Transformer())
        lm = pufferfish_lstm(LSTMLanguageModel())
    assert not any(isinstance(m, LowRankLinear) for m in t.encoder[0].modules())
    assert not any(isinstance(m, LowRankLinear) for m in t.decoder[0].modules())
    for layer in list(t.encoder[1:]) + list(t.decoder[1:]):
        for lin in [m for m in layer.modules() if isinstance(m, LowRankLinear)]:
            assert lin.rank == 128
        assert isinstance(layer.ffn.w1, LowRankLinear) and isinstance(layer.ffn.w2, LowRankLinear)
    assert isinstance(t.decoder[3].cross_attn.o, LowRankLinear)
    assert t.out_proj.weight is t.embedding.weight
    assert isinstance(lm.lstm, LowRankLSTM) and lm.lstm.rank == 375 and lm.lstm.num_layers == 2
    assert lm.decoder.weight is lm.embedding.weight


# --------------------------------------------------------------------- conversion invariants


def test_resnet18_full_rank_conversion_preserves_logits_and_buffers() -> None:
    """rho=1, no savings skip: eval logits match within 1e-4; BN buffers bit-identical."""
    torch.manual_seed(0)
    model = ResNet18(stem_bn=False)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # move BN running statistics off their defaults
    model.eval()
    low = factorize(model, 1.0, resnet18_keep_full_rank(model), skip_no_savings=False)
    assert isinstance(low.layers[3][1].conv2, LowRankConv2d)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(low(x), model(x), atol=1e-4, rtol=1e-4)
    ref = model.state_dict()
    for key, value in low.state_dict().items():
        if "bn" in key or "shortcut" in key or key.startswith(("linear", "conv1")):
            assert torch.equal(value, ref[key]), key


def test_small_lm_and_transformer_train_after_conversion() -> None:
    """Converted small LM and Transformer run forward/backward with finite gradients."""
    torch.manual_seed(1)
    lm = LSTMLanguageModel(vocab_size=30, dim=16, num_layers=2, dropout=0.1)
    assert isinstance(lm.lstm, GateLSTM)
    t = Transformer(vocab_size=30, d_model=32, heads=4, d_ff=128, num_layers=2)
    tokens = torch.randint(0, 30, (2, 5))
    for model, args in (
        (pufferfish_lstm(lm), (tokens,)),
        (pufferfish_transformer(t), (tokens,) * 2),
    ):
        out = model(*args)
        assert out.shape == (2, 5, 30)
        nn.functional.cross_entropy(out.flatten(0, 1), tokens.flatten()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
