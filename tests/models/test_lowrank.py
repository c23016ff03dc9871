"""Tests for ``flower_suite.models.lowrank``: PUFFERFISH layers, SVD conversion, MAC counting."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flower_suite.models import count_parameters
from flower_suite.models.lowrank import (
    GateLSTM,
    LowRankConv2d,
    LowRankLinear,
    LowRankLSTM,
    count_macs,
    factorize,
    rank_for,
    svd_factors,
    weight_layer_names,
)


def weights_only(module: nn.Module) -> int:
    """Parameter count without biases (spec Table 4.1 convention)."""
    return sum(p.numel() for n, p in module.named_parameters() if "bias" not in n)


def tol(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances: 1e-5 in float32, 1e-10 in float64."""
    if dtype == torch.float64:
        return {"atol": 1e-10, "rtol": 1e-10}
    return {"atol": 1e-5, "rtol": 1e-4}


# ------------------------------------------------------------------------------------ ranks


@pytest.mark.parametrize(
    ("a", "b", "expected"), [(576, 64, 16), (4608, 512, 128), (1024, 2048, 256), (1500, 1500, 375)]
)
def test_rank_for_matches_spec_examples(a: int, b: int, expected: int) -> None:
    """r = floor(0.25 * min(a, b)) for the spec's acceptance shapes."""
    assert rank_for(a, b, 0.25) == expected


def test_rank_for_floor_min_one_and_roundoff() -> None:
    """Rank is at least 1 and 0.29 * 100 gives 29 despite float round-off."""
    assert rank_for(3, 10, 0.1) == 1
    assert rank_for(100, 100, 0.29) == 29
    assert rank_for(7, 9, 1.0) == 7


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_rank_ratio_outside_unit_interval_rejected(ratio: float) -> None:
    """rank_for and factorize raise a clear ValueError for ratios outside (0, 1]."""
    with pytest.raises(ValueError, match="rank_ratio"):
        rank_for(10, 10, ratio)
    with pytest.raises(ValueError, match="rank_ratio"):
        factorize(nn.Sequential(nn.Linear(4, 4)), ratio)


# ------------------------------------------------------------------- per-layer formulas (§11.1)


def test_per_layer_parameter_formulas() -> None:
    """Bias-free counts of spec §11.1, built on the meta device."""
    with torch.device("meta"):
        assert weights_only(nn.Linear(512, 512)) == 262_144
        assert weights_only(LowRankLinear(512, 512, 128)) == 131_072
        assert weights_only(nn.Conv2d(512, 512, 3)) == 2_359_296
        assert weights_only(LowRankConv2d(512, 512, 3, 128)) == 655_360
        assert weights_only(nn.Conv2d(64, 64, 3)) == 36_864
        assert weights_only(LowRankConv2d(64, 64, 3, 16)) == 10_240
        assert weights_only(nn.Conv2d(1024, 2048, 1)) == 2_097_152
        assert weights_only(LowRankConv2d(1024, 2048, 1, 256)) == 786_432
        assert weights_only(GateLSTM(1500, 1500)) == 18_000_000
        assert weights_only(LowRankLSTM(1500, 1500, 375)) == 9_000_000
        attn = [LowRankLinear(512, 512, 128, bias=False) for _ in range(4)]
        assert sum(weights_only(m) for m in attn) == 524_288
        ffn = [LowRankLinear(512, 2048, 128), LowRankLinear(2048, 512, 128)]
        assert sum(weights_only(m) for m in ffn) == 655_360


def test_bias_placement() -> None:
    """First factor has no bias, second carries the original bias (spec §3.1, §3.2)."""
    lin = LowRankLinear(8, 6, 3)
    conv = LowRankConv2d(4, 6, 3, 2)
    assert lin.u.bias is None and lin.v.bias is not None
    assert conv.u.bias is None and conv.v.bias is not None
    assert lin.rank == 3 and conv.rank == 2
    assert count_parameters(LowRankLinear(8, 6, 3, bias=False)) == 3 * 14


def test_invalid_rank_rejected() -> None:
    """A rank above min(a, b) or below 1 is an error."""
    with pytest.raises(ValueError):
        LowRankLinear(4, 6, 5)
    with pytest.raises(ValueError):
        LowRankConv2d(2, 3, 1, 0)
    with pytest.raises(ValueError):
        LowRankLSTM(4, 6, 5)


# ------------------------------------------------------------ full-rank SVD init is exact (§11.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "layer_factory",
    [
        lambda: nn.Linear(20, 12),
        lambda: nn.Linear(7, 30, bias=False),
        lambda: nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=True),
        lambda: nn.Conv2d(8, 16, 1, stride=2, bias=False),
        lambda: nn.Conv2d(3, 5, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2),
    ],
)
def test_full_rank_conversion_reproduces_layer(layer_factory, dtype: torch.dtype) -> None:
    """With r = min(a, b) the factorized layer's output equals the original's."""
    torch.manual_seed(0)
    layer = layer_factory().to(dtype)
    if isinstance(layer, nn.Linear):
        full = min(layer.in_features, layer.out_features)
        low: nn.Module = LowRankLinear.from_linear(layer, full)
        x = torch.randn(4, layer.in_features, dtype=dtype)
    else:
        full = min(layer.out_channels, layer.weight[0].numel())
        low = LowRankConv2d.from_conv(layer, full)
        x = torch.randn(2, layer.in_channels, 11, 9, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(low(x), layer(x), **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_first", [True, False])
def test_full_rank_lstm_matches_nn_lstm(dtype: torch.dtype, batch_first: bool) -> None:
    """A 2-layer nn.LSTM converted at full rank (biases summed) gives the same sequences."""
    torch.manual_seed(1)
    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=batch_first).to(dtype)
    low = LowRankLSTM.from_lstm(lstm, 5)
    x = torch.randn(3, 7, 6, dtype=dtype)
    h0 = torch.randn(2, 3 if batch_first else 7, 5, dtype=dtype)
    c0 = torch.randn_like(h0)
    with torch.no_grad():
        ref, (h_ref, c_ref) = lstm(x, (h0, c0))
        out, (h, c) = low(x, (h0, c0))
    torch.testing.assert_close(out, ref, **tol(dtype))
    torch.testing.assert_close(h, h_ref, **tol(dtype))
    torch.testing.assert_close(c, c_ref, **tol(dtype))


def test_full_rank_lstm_from_gate_lstm_and_gate_weights() -> None:
    """GateLSTM converts exactly at full rank; at rank r each gate is its best rank-r part."""
    torch.manual_seed(2)
    dense = GateLSTM(4, 4, num_layers=2).double()
    full = LowRankLSTM.from_lstm(dense, 4)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(full(x)[0], dense(x)[0], **tol(torch.float64))
        w_ih, w_hh = full.gate_weights(1)
    torch.testing.assert_close(w_ih, dense.weight_ih_l1.detach(), **tol(torch.float64))
    torch.testing.assert_close(w_hh, dense.weight_hh_l1.detach(), **tol(torch.float64))
    low = LowRankLSTM.from_lstm(dense, 2)
    gate = dense.weight_hh_l0.detach()[4:8]  # forget gate, recurrent matrix
    p, s, qt = torch.linalg.svd(gate)
    best = (p[:, :2] * s[:2]) @ qt[:2]
    torch.testing.assert_close(low.gate_weights(0)[1].detach()[4:8], best)


def test_gate_lstm_equals_nn_lstm_with_folded_bias() -> None:
    """GateLSTM with nn.LSTM's weights and b_ih + b_hh computes what nn.LSTM computes."""
    torch.manual_seed(3)
    lstm = nn.LSTM(3, 4, batch_first=True).double()
    dense = GateLSTM(3, 4).double()
    with torch.no_grad():
        dense.weight_ih_l0.copy_(lstm.weight_ih_l0)
        dense.weight_hh_l0.copy_(lstm.weight_hh_l0)
        dense.bias_l0.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        x = torch.randn(2, 6, 3, dtype=torch.float64)
        torch.testing.assert_close(dense(x)[0], lstm(x)[0], **tol(torch.float64))


# ------------------------------------------------------- truncation is the best rank-r (§11.6)


@pytest.mark.parametrize("rank", [1, 3, 5])
def test_truncated_linear_is_best_rank_r_approximation(rank: int) -> None:
    """U V^T equals the SVD truncation; the residual is the tail of the spectrum."""
    torch.manual_seed(4)
    layer = nn.Linear(9, 7).double()
    low = LowRankLinear.from_linear(layer, rank)
    w = layer.weight.detach()
    p, s, qt = torch.linalg.svd(w, full_matrices=False)
    best = p[:, :rank] @ torch.diag(s[:rank]) @ qt[:rank]
    torch.testing.assert_close(low.full_weight().detach(), best, atol=1e-12, rtol=1e-10)
    residual = (w - low.full_weight().detach()).square().sum()
    assert math.isclose(residual.item(), s[rank:].square().sum().item(), rel_tol=1e-6)
    u_norms = low.v.weight.detach().norm(dim=0)  # columns of U = P_r S_r^1/2
    v_norms = low.u.weight.detach().norm(dim=1)  # rows of V^T = S_r^1/2 Q_r^T
    torch.testing.assert_close(u_norms, s[:rank].sqrt())
    torch.testing.assert_close(v_norms, s[:rank].sqrt())


def test_truncated_conv_is_best_rank_r_of_unrolled_weight() -> None:
    """The conv factors reproduce the truncation of the (c_out, c_in k k) unrolled weight."""
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 10, 3, padding=1).double()
    low = LowRankConv2d.from_conv(conv, 3)
    m = conv.weight.detach().flatten(1)
    p, s, qt = torch.linalg.svd(m, full_matrices=False)
    best = (p[:, :3] * s[:3]) @ qt[:3]
    torch.testing.assert_close(low.full_weight().detach().flatten(1), best)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    expected = nn.functional.conv2d(x, best.reshape(conv.weight.shape), conv.bias, padding=1)
    torch.testing.assert_close(low(x), expected)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), data=st.data())
def test_svd_factors_reconstruct(rows: int, cols: int, data: st.DataObject) -> None:
    """svd_factors at full rank reconstructs any matrix; left/right have the S^1/2 split."""
    rank = data.draw(st.integers(1, min(rows, cols)))
    gen = torch.Generator().manual_seed(rows * 13 + cols)
    m = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    left, right = svd_factors(m, min(rows, cols))
    torch.testing.assert_close(left @ right, m, atol=1e-10, rtol=1e-10)
    left, right = svd_factors(m, rank)
    torch.testing.assert_close(left.norm(dim=0), right.norm(dim=1))


# ---------------------------------------------------------------------- forward and backward


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (LowRankLinear(6, 5, 2), torch.randn(3, 6)),
        (LowRankConv2d(3, 4, 3, 2, stride=2, padding=1), torch.randn(2, 3, 8, 8)),
        (LowRankLSTM(4, 5, 2, num_layers=2, dropout=0.1), torch.randn(2, 3, 4)),
        (GateLSTM(4, 5, num_layers=2), torch.randn(2, 3, 4)),
    ],
)
def test_forward_backward_finite(layer: nn.Module, x: torch.Tensor) -> None:
    """Every low-rank layer runs forward/backward with finite gradients on all parameters."""
    out = layer(x)
    out = out[0] if isinstance(out, tuple) else out
    out.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


# -------------------------------------------------------------------------------- factorize


def small_cnn() -> nn.Sequential:
    """conv(3->8) BN conv(8->16) BN conv(16->16, stride 2) pool fc(16->32) fc(32->5)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    )


def test_factorize_does_not_mutate_input_and_defaults() -> None:
    """Input untouched; first conv and last linear stay full-rank; others become low-rank."""
    torch.manual_seed(6)
    model = small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model]
    new = factorize(model, 0.25)
    assert new is not model
    assert [type(m) for m in model] == types
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert isinstance(new[0], nn.Conv2d) and isinstance(new[11], nn.Linear)
    assert isinstance(new[3], LowRankConv2d) and new[3].rank == 4  # min(16, 72) / 4
    assert isinstance(new[6], LowRankConv2d) and new[6].rank == 4
    assert isinstance(new[9], LowRankLinear) and new[9].rank == 4  # 4 * 48 < 512
    assert count_parameters(new) < count_parameters(model)


def test_factorize_skips_layers_without_savings() -> None:
    """Layers with r (a + b) >= a b stay full-rank unless skip_no_savings=False."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    assert isinstance(factorize(model, 1.0)[1], nn.Linear)
    new = factorize(model, 1.0, skip_no_savings=False)
    assert isinstance(new[0], LowRankLinear) and isinstance(new[1], LowRankLinear)
    assert isinstance(new[2], nn.Linear)  # last linear kept by default


def test_factorize_keeps_named_layers_and_copies_the_rest_bitwise() -> None:
    """Named layers (and prefixes) stay full-rank; untouched tensors are bit-identical."""
    torch.manual_seed(7)
    model = small_cnn()
    with torch.no_grad():
        model[1].running_mean.uniform_()
    new = factorize(model, 0.5, keep_full_rank=["3"], keep_first_and_last=True)
    assert isinstance(new[3], nn.Conv2d) and isinstance(new[6], LowRankConv2d)
    for key in ["0.weight", "1.weight", "1.running_mean", "1.num_batches_tracked", "3.weight"]:
        assert torch.equal(new.state_dict()[key], model.state_dict()[key])
    assert torch.equal(new.state_dict()["6.v.bias"], model.state_dict()["6.bias"])
    nested = nn.Sequential(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)), nn.Linear(64, 2))
    kept = factorize(nested, 0.25, keep_full_rank=["0"])
    assert all(isinstance(m, nn.Linear) for m in kept[0])
    everything = factorize(model, 0.25, keep_first_and_last=False)
    assert isinstance(everything[0], LowRankConv2d)  # a=8, b=27: r=2, 70 < 216
    assert isinstance(everything[11], LowRankLinear)


def test_factorize_at_full_rank_preserves_outputs() -> None:
    """rho = 1 without the savings skip keeps eval-mode outputs (float64, 1e-10)."""
    torch.manual_seed(8)
    model = small_cnn().double().eval()
    new = factorize(model, 1.0, keep_first_and_last=False, skip_no_savings=False)
    assert all(isinstance(new[i], LowRankConv2d) for i in (0, 3, 6))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), atol=1e-10, rtol=1e-10)
    assert not new.training


def test_factorize_leaves_tied_and_grouped_layers_alone() -> None:
    """A Linear sharing its weight with an embedding and a depthwise conv stay full-rank."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 40)
            self.dw = nn.Conv2d(8, 8, 3, groups=8)
            self.mid = nn.Linear(40, 40)
            self.out = nn.Linear(40, 50)
            self.out.weight = self.emb.weight

    new = factorize(Tied(), 0.25, keep_first_and_last=False)
    assert isinstance(new.out, nn.Linear) and new.out.weight is new.emb.weight
    assert isinstance(new.dw, nn.Conv2d)
    assert isinstance(new.mid, LowRankLinear)


def test_factorize_converts_lstm_and_lists_layers() -> None:
    """nn.LSTM becomes LowRankLSTM; weight_layer_names skips inner low-rank pieces."""
    model = nn.Sequential(nn.LSTM(16, 16, num_layers=2, batch_first=True), nn.Linear(16, 3))
    new = factorize(model, 0.25)
    assert isinstance(new[0], LowRankLSTM) and new[0].rank == 4 and new[0].batch_first
    assert weight_layer_names(new) == ["0", "1"]
    assert count_parameters(new[0]) == (4 * 16 * 4 + 12 * 16 * 4) * 2 + 4 * 16 * 2


# ------------------------------------------------------------------------------------- MACs


def test_count_macs_hand_computed() -> None:
    """Tiny conv+linear network on 3x8x8 input, vanilla and factorized, by hand."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 8x8 out: 64 * 4 * 3 * 9 = 6,912
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),  # 4x4 out: 16 * 6 * 4 * 9 = 3,456
        nn.Flatten(),
        nn.Linear(96, 5),  # 480
    )
    assert count_macs(model, (1, 3, 8, 8)) == 6_912 + 3_456 + 480
    assert count_macs(model, (4, 3, 8, 8)) == 6_912 + 3_456 + 480
    low = factorize(model, 0.5, keep_first_and_last=False)
    # conv1: a=4, b=27 -> r=2: 64*2*27 + 64*4*2 = 3,456 + 512; conv2: r=3: 16*3*36 + 16*6*3
    # linear: 96x5 -> r=2: 96*2 + 2*5
    expected = (3_456 + 512) + (1_728 + 288) + (192 + 10)
    assert count_macs(low, (1, 3, 8, 8)) == expected
    assert model.training  # the training flag is restored
