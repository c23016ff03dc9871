"""The compressor registry and its uniform interface; QSGD and TernGrad as ATOMO (spec §2.4,
§5 check 7): the same seed gives the same support and values; variances and byte formulas."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from flower_suite.compression import (
    COMPRESSORS,
    CodecError,
    Compressor,
    EntrywiseAtomo,
    Qsgd,
    SpectralAtomo,
    TernGrad,
    atomo_probabilities,
    decode,
    encode,
    layouts_of,
    lq_quantize,
    message_bytes,
    qsgd_quantize,
    sample_entrywise,
    sparsified_weights,
    terngrad_quantize,
)
from flower_suite.models import MLP, DigitsCNN


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_update(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = gen(seed)
    return {name: 0.01 * torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}


ALL = sorted(COMPRESSORS)


def test_registry_lists_every_compressor_and_its_contract_matches_its_constructor() -> None:
    assert set(ALL) == {"none", "atomo_entrywise", "atomo_spectral", "qsgd", "terngrad", "lq"}
    assert COMPRESSORS.get("Atomo-Spectral") is SpectralAtomo
    for name in ALL:
        factory = COMPRESSORS.get(name)
        assert isinstance(factory, type) and issubclass(factory, Compressor)
        declared = set(factory.contract.parameters)
        accepted = set(inspect.signature(factory).parameters)
        assert declared == accepted, name
        assert factory.contract.kinds and factory.contract.bytes_formula


@pytest.mark.parametrize("name", ALL)
def test_compress_decompress_round_trip_on_a_model_update(name: str) -> None:
    update = model_update(DigitsCNN(), 0)
    update["counter"] = torch.tensor(7)  # not floating point: always dense
    compressor = COMPRESSORS.create(name)
    payload = compressor.compress(update, gen(1))
    assert list(payload) == sorted(update)
    decoded = compressor.decompress(payload, layouts_of(update))
    for key, tensor in update.items():
        assert decoded[key].shape == tensor.shape and decoded[key].dtype == tensor.dtype
    assert decoded["counter"].item() == 7
    if name == "none":
        assert all(torch.equal(decoded[k], update[k]) for k in update)
    # The same seed gives the same bytes, whatever the dict order; another seed differs.
    reordered = dict(reversed(list(update.items())))
    assert compressor.compress(reordered, gen(1)) == payload
    if name != "none":
        assert compressor.compress(update, gen(2)) != payload


def test_payload_size_equals_the_formula_for_each_message() -> None:
    update = model_update(MLP(), 3)
    for name in ALL:
        compressor = COMPRESSORS.create(name)
        for tensor in update.values():
            message = compressor.sample(tensor, gen(4))
            assert len(compressor.compress_tensor(tensor, gen(4))) == message_bytes(message)
        payload = compressor.compress(update, gen(5))
        assert compressor.payload_bytes(payload) == sum(len(m) for m in payload.values())


def test_decompress_refuses_missing_extra_and_unaccepted_messages() -> None:
    update = model_update(MLP(), 6)
    layouts = layouts_of(update)
    spectral = SpectralAtomo(budget=2.0)
    payload = spectral.compress(update, gen(7))
    with pytest.raises(CodecError, match="missing"):
        spectral.decompress({k: v for k, v in payload.items() if k != "net.1.weight"}, layouts)
    with pytest.raises(CodecError, match="unexpected"):
        spectral.decompress({**payload, "extra": b""}, layouts)
    entrywise_payload = EntrywiseAtomo(budget=5.0).compress(update, gen(8))
    with pytest.raises(CodecError, match="not accepted"):
        spectral.decompress(entrywise_payload, layouts)  # an ENTRYWISE message for spectral
    with pytest.raises(CodecError, match="not accepted"):  # a compressed int tensor
        spectral.decompress_tensor(
            payload["net.1.weight"], layouts["net.1.weight"]._replace(dtype=torch.int32)
        )


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("atomo_entrywise", {"budget": 0}),
        ("atomo_spectral", {"budget": -1.0}),
        ("atomo_spectral", {"budget": math.nan}),
        ("qsgd", {"bits": 0}),
        ("qsgd", {"bits": 17}),
        ("qsgd", {"bits": True}),
        ("lq", {"q": 0.5}),
    ],
)
def test_invalid_parameters_are_refused(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        COMPRESSORS.create(name, **kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_one_bit_qsgd_is_atomo_with_its_budget(seed: int) -> None:
    """§3.3.1: QSGD (L = 1) = ℓ₂ quantization = ATOMO with p = |g|/‖g‖₂, s = ‖g‖₁/‖g‖₂."""
    g = torch.randn(500, generator=gen(seed), dtype=torch.float64)
    norm, l1 = float(g.norm()), float(g.abs().sum())
    qsgd = qsgd_quantize(g, 1, gen(100 + seed)).as_entrywise()
    lq = lq_quantize(g, 2.0, gen(100 + seed))
    atomo = sample_entrywise(g, l1 / norm, gen(100 + seed))
    reference = sparsified_weights(g, g.abs() / norm, gen(100 + seed))
    assert torch.equal(qsgd.signed_indices, lq.signed_indices)
    assert torch.equal(atomo.signed_indices, qsgd.signed_indices) and atomo.num_exact == 0
    assert qsgd.scale == lq.scale == pytest.approx(atomo.scale, rel=1e-12)
    for sample in (qsgd, lq, atomo):
        np.testing.assert_allclose(sample.to_dense().numpy(), reference.numpy(), rtol=1e-12)
    assert encode(qsgd) == encode(lq)


@pytest.mark.parametrize("seed", range(3))
def test_terngrad_is_atomo_with_its_budget(seed: int) -> None:
    """§3.3.2: TernGrad = ℓ_∞ quantization = ATOMO with p = |g|/‖g‖_∞, s = ‖g‖₁/‖g‖_∞."""
    g = torch.randn(500, generator=gen(seed), dtype=torch.float64)
    top, l1 = float(g.abs().max()), float(g.abs().sum())
    tern = terngrad_quantize(g, gen(200 + seed))
    lq = lq_quantize(g, math.inf, gen(200 + seed))
    atomo = sample_entrywise(g, l1 / top, gen(200 + seed))
    assert encode(tern) == encode(lq)
    # ATOMO sends the largest entry (p = 1) as exact: same values, another layout.
    np.testing.assert_allclose(atomo.to_dense().numpy(), tern.to_dense().numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        atomo_probabilities(g, l1 / top).numpy(), (g.abs() / top).numpy(), rtol=1e-12
    )


@pytest.mark.parametrize(
    "compressor",
    [
        EntrywiseAtomo(budget=20.0),
        SpectralAtomo(budget=2.0),
        Qsgd(bits=1),
        Qsgd(bits=3),
        TernGrad(),
        COMPRESSORS.create("lq", q=3.0),
    ],
    ids=lambda c: type(c).__name__ + str(getattr(c, "levels", getattr(c, "q", ""))),
)
def test_unbiased_with_the_declared_variance_and_expected_bytes(compressor: Compressor) -> None:
    """Monte Carlo over real messages: mean -> tensor, E‖ĝ - g‖² -> variance(), E[bytes]."""
    tensor = torch.randn(12, 10, generator=gen(9)) * torch.linspace(0.1, 2, 10)
    truth = tensor.to(torch.float64)
    draws, sizes = [], []
    generator = gen(10)
    for _ in range(500):
        data = compressor.compress_tensor(tensor, generator)
        sizes.append(len(data))
        draws.append(decode(data, tensor.shape, tensor.dtype).to(torch.float64))
    estimates = torch.stack(draws)
    variance = compressor.variance(tensor)
    assert float(((estimates.mean(0) - truth) ** 2).sum()) <= 3 * variance / len(draws) + 1e-10
    errors = ((estimates - truth) ** 2).sum((1, 2))
    standard_error = float(errors.std()) / math.sqrt(len(draws))
    assert abs(float(errors.mean()) - variance) <= 4 * standard_error + 1e-6 * variance
    # Expected bytes: the formula at E[K] (exact for spectral; ⌈⌉ and min() smoothed otherwise).
    size_error = float(np.std(sizes)) / math.sqrt(len(sizes))
    assert abs(float(np.mean(sizes)) - compressor.expected_bytes(tensor)) <= 4 * size_error + 1.0
