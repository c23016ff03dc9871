"""The wire format: exact sizes (spec §5 check 11), the documented byte layout, round trips,
and refusal of every kind of malformed message (truncated, padded, bad header, indices out of
range or repeated, NaN scales, oversize claims, stray padding bits, unaccepted kinds)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.compression import (
    CodecError,
    EntrywiseSample,
    Message,
    MessageKind,
    decode,
    encode,
    message_bytes,
    qsgd_quantize,
    sample_entrywise,
    sample_spectral,
    spectral_matrix_shape,
    spectral_message_bytes,
    terngrad_quantize,
)
from flower_suite.compression.wire_format import header_bytes, support_bytes


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def header(kind: int, shape: tuple[int, ...], dtype_code: int = 1) -> bytes:
    """The documented header, written independently of the encoder."""
    return b"AT" + bytes([1, kind, dtype_code, len(shape)]) + struct.pack(f"<{len(shape)}I", *shape)


def entrywise_raw(
    shape: tuple[int, ...],
    exact: list[tuple[int, float]],
    signed: list[tuple[int, bool]],
    scale: float,
    *,
    counts: tuple[int, int] | None = None,
) -> bytes:
    """An ENTRYWISE message in the index layout (small supports), from its fields."""
    e, s = counts or (len(exact), len(signed))
    signs = np.packbits([neg for _, neg in signed], bitorder="little").tobytes() if signed else b""
    return (
        header(1, shape)
        + struct.pack("<IIf", e, s, scale)
        + struct.pack(f"<{len(exact)}I", *[i for i, _ in exact])
        + struct.pack(f"<{len(exact)}f", *[v for _, v in exact])
        + struct.pack(f"<{len(signed)}I", *[i for i, _ in signed])
        + signs
    )


def spectral_raw(shape: tuple[int, ...], left: np.ndarray, right: np.ndarray, rank=None) -> bytes:
    k = left.shape[0] if rank is None else rank
    body = left.astype("<f4").tobytes() + right.astype("<f4").tobytes()
    return header(3, shape) + struct.pack("<I", k) + body


# ----------------------------------------------------------------------------- layout and sizes
def test_encoder_writes_the_documented_layout() -> None:
    sample = EntrywiseSample(
        shape=(4, 25),
        dtype=torch.float32,
        exact_indices=torch.tensor([7]),
        exact_values=torch.tensor([-2.5], dtype=torch.float64),
        signed_indices=torch.tensor([3, 50, 99]),
        negative=torch.tensor([True, False, True]),
        scale=0.75,
    )
    expected = entrywise_raw((4, 25), [(7, -2.5)], [(3, True), (50, False), (99, True)], 0.75)
    assert encode(sample) == expected
    assert len(expected) == message_bytes(sample) == header_bytes(2) + 12 + 8 + 12 + 1
    decoded = decode(expected, (4, 25), torch.float32).reshape(-1)
    assert decoded[7] == -2.5 and decoded[[3, 50, 99]].tolist() == [-0.75, 0.75, -0.75]
    assert int((decoded != 0).sum()) == 4


def test_supports_switch_to_a_bitmap_when_it_is_smaller() -> None:
    assert support_bytes(3, 1000) == 12 and support_bytes(40, 1000) == 125
    g = torch.randn(1000, generator=gen(0))
    sample = terngrad_quantize(g, gen(1))  # keeps ~ ‖g‖₁/‖g‖_∞ ≈ 250 entries: bitmap
    assert sample.num_signed > 32
    data = encode(sample)
    assert (
        len(data)
        == message_bytes(sample)
        == header_bytes(1) + 12 + 125 + math.ceil(sample.num_signed / 8)
    )
    np.testing.assert_array_equal(decode(data, (1000,), torch.float32).numpy(), sample.to_dense())


def _every_kind_of_message(seed: int) -> list[tuple[Message, torch.Tensor]]:
    g = gen(seed)
    w = torch.randn(16, 8, 3, 3, generator=g)
    v = torch.randn(300, generator=g, dtype=torch.float64)
    odd_dense = [
        torch.arange(6).reshape(2, 3),
        torch.tensor([True, False, True]),
        torch.randn(3, 2, generator=g).to(torch.bfloat16),
        torch.zeros(0, 3),
        torch.tensor(2.5, dtype=torch.float64),
    ]
    return [
        (w, w),
        *((t, t) for t in odd_dense),
        (sample_entrywise(w, 20.0, g), w),
        (sample_entrywise(v, 299.0, g), v),
        (qsgd_quantize(w, 1, g), w),
        (qsgd_quantize(v, 7, g), v),
        (qsgd_quantize(w, 255, g), w),
        (terngrad_quantize(v, g), v),
        (sample_spectral(w, 2.0, g), w),
        (sample_spectral(w.to(torch.float64), 30.0, g), w.to(torch.float64)),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_message_size_formula_equals_the_encoded_length_and_round_trips(seed: int) -> None:
    for message, tensor in _every_kind_of_message(seed):
        data = encode(message)
        assert len(data) == message_bytes(message)
        decoded = decode(data, tensor.shape, tensor.dtype)
        assert decoded.shape == tensor.shape and decoded.dtype == tensor.dtype
        expected = message if isinstance(message, torch.Tensor) else message.to_dense()
        np.testing.assert_allclose(
            decoded.double().numpy(), expected.double().numpy(), rtol=1e-6, atol=1e-6
        )


def test_spectral_payload_is_4k_n_plus_m_and_its_mean_matches_the_budget() -> None:
    """Spec check 11: payload = 4K(n+m) exactly; mean over 2,000 encodings ≈ 4s(n+m)."""
    w = torch.randn(8, 4, 3, 3, generator=gen(2))
    rows, cols = spectral_matrix_shape(tuple(w.shape)) or (0, 0)
    assert (rows, cols) == (16, 18)
    fixed = spectral_message_bytes(tuple(w.shape), (rows, cols), 0)
    generator = gen(3)
    payloads = []
    for _ in range(2000):
        sample = sample_spectral(w, 2.0, generator)
        payload = len(encode(sample)) - fixed
        assert payload == 4 * sample.rank * (rows + cols)
        payloads.append(payload)
    payload_mean = float(np.mean(payloads))
    expected = 4 * 2.0 * (rows + cols)
    standard_error = float(np.std(payloads)) / math.sqrt(len(payloads))
    assert abs(payload_mean - expected) <= 4 * standard_error
    assert abs(payload_mean / expected - 1) < 0.03


@pytest.mark.parametrize(
    ("shape", "s", "payload_floats", "factor"),
    [
        ((64, 64, 3, 3), 2, 4132, 8.92),
        ((512, 512, 3, 3), 3, 393_270, 6.0),
        ((512, 10), 1, 522, 9.81),
    ],
)
def test_the_spec_compression_table(shape, s, payload_floats, factor) -> None:
    """Spec §2.6: expected payload floats and dense / payload compression factors."""
    matrix = spectral_matrix_shape(shape)
    assert matrix is not None
    payload = spectral_message_bytes(shape, matrix, s) - spectral_message_bytes(shape, matrix, 0)
    assert payload == 4 * payload_floats
    assert round(math.prod(shape) / payload_floats, 2) == pytest.approx(factor)


# ----------------------------------------------------------------------------- refusals
def _valid_messages() -> list[tuple[bytes, tuple[int, ...], torch.dtype]]:
    return [(encode(m), tuple(t.shape), t.dtype) for m, t in _every_kind_of_message(7)]


def test_every_truncation_and_any_extra_byte_is_refused() -> None:
    for data, shape, dtype in _valid_messages():
        cuts = range(len(data)) if len(data) < 300 else [*range(64), *range(64, len(data), 97)]
        for cut in cuts:
            with pytest.raises(CodecError):
                decode(data[:cut], shape, dtype)
        with pytest.raises(CodecError, match="bytes"):
            decode(data + b"\x00", shape, dtype)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: b"XX" + d[2:], "magic"),
        (lambda d: d[:2] + b"\x02" + d[3:], "version"),
        (lambda d: d[:3] + b"\x09" + d[4:], "kind"),
        (lambda d: d[:4] + b"\x63" + d[5:], "dtype code"),
        (lambda d: d[:4] + b"\x02" + d[5:], "dtype"),  # float64, expected float32
        (lambda d: d[:5] + b"\x09" + d[6:], "dimensions"),
        (lambda d: d[:6] + struct.pack("<I", 101) + d[10:], "shape"),
    ],
)
def test_bad_headers_are_refused(mutate, match) -> None:
    data = entrywise_raw((100,), [(1, 2.0)], [(5, False)], 1.0)
    assert decode(data, (100,), torch.float32)[1] == 2.0
    with pytest.raises(CodecError, match=match):
        decode(mutate(data), (100,), torch.float32)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (entrywise_raw((100,), [(100, 1.0)], [], 1.0), "below 100"),
        (entrywise_raw((100,), [], [(4, False), (4, True)], 1.0), "strictly increasing"),
        (entrywise_raw((100,), [], [(9, False), (4, True)], 1.0), "strictly increasing"),
        (entrywise_raw((100,), [(4, 1.0)], [(4, True)], 1.0), "both"),
        (entrywise_raw((100,), [], [(4, False)], math.nan), "scale"),
        (entrywise_raw((100,), [], [(4, False)], -1.0), "scale"),
        (entrywise_raw((100,), [(3, math.inf)], [], 1.0), "NaN or Inf"),
        (entrywise_raw((100,), [(3, 1.0)], [], 1.0, counts=(2**32 - 1, 0)), "claims"),
        (entrywise_raw((100,), [], [(3, True)], 1.0, counts=(0, 101)), "claims"),
        (entrywise_raw((100,), [], [(3, True)], 1.0)[:-1] + b"\x03", "padding"),
        (entrywise_raw((100,), [(3, 1.0)], [], 1.0, counts=(2, 0)), "declares"),
    ],
)
def test_malformed_entrywise_bodies_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode(data, (100,), torch.float32)


def test_bitmap_count_mismatch_is_refused() -> None:
    # 40 signed entries of 100 -> a 13-byte bitmap; claim 40 but mark 39.
    flags = np.zeros(104, dtype=np.uint8)
    flags[:39] = 1
    data = header(1, (100,)) + struct.pack("<IIf", 0, 40, 1.0)
    data += np.packbits(flags, bitorder="little").tobytes() + b"\x00" * 5
    with pytest.raises(CodecError, match="bitmap marks 39"):
        decode(data, (100,), torch.float32)


def test_malformed_spectral_and_qsgd_bodies_are_refused() -> None:
    left, right = np.ones((2, 6)), np.ones((2, 4))
    assert decode(spectral_raw((6, 4), left, right), (6, 4), torch.float32).sum() == 48
    with pytest.raises(CodecError, match="at most 4"):
        decode(spectral_raw((6, 4), np.ones((5, 6)), np.ones((5, 4))), (6, 4), torch.float32)
    with pytest.raises(CodecError, match="declares"):
        decode(spectral_raw((6, 4), left, right, rank=3), (6, 4), torch.float32)
    left[1, 2] = math.nan
    with pytest.raises(CodecError, match="NaN or Inf"):
        decode(spectral_raw((6, 4), left, right), (6, 4), torch.float32)
    with pytest.raises(CodecError, match="no spectral form"):
        decode(header(3, (24,)) + struct.pack("<I", 0), (24,), torch.float32)
    qsgd = header(2, (4,)) + struct.pack("<fI", 1.0, 5)  # L = 5: 3-bit codes
    codes = np.packbits(
        np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]).reshape(-1), bitorder="little"
    ).tobytes()  # code 7 > 5
    with pytest.raises(CodecError, match="exceeds"):
        decode(qsgd + codes + b"\x00", (4,), torch.float32)
    with pytest.raises(CodecError, match="levels"):
        decode(header(2, (4,)) + struct.pack("<fI", 1.0, 0), (4,), torch.float32)


def test_wrong_type_kind_or_dtype_for_the_receiver_is_refused() -> None:
    data = entrywise_raw((10,), [], [(1, False)], 1.0)
    with pytest.raises(CodecError, match="bytes"):
        decode("AT", (10,), torch.float32)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="not accepted"):
        decode(data, (10,), torch.float32, kinds={MessageKind.SPECTRAL, MessageKind.DENSE})
    int_dense = encode(torch.arange(10))
    with pytest.raises(CodecError, match="dtype"):
        decode(int_dense, (10,), torch.float32)
    as_int = header(1, (10,), dtype_code=5) + data[10:]
    with pytest.raises(CodecError, match="cannot hold"):
        decode(as_int, (10,), torch.int64)
    with pytest.raises(CodecError, match="0 or 1"):
        decode(header(0, (2,), dtype_code=10) + b"\x01\x02", (2,), torch.bool)
    huge = entrywise_raw((100,), [(1, 1e30)], [], 1.0)  # finite in float32, not in float16
    with pytest.raises(CodecError, match="not finite"):
        decode(header(1, (100,), dtype_code=3) + huge[10:], (100,), torch.float16)


def test_the_encoder_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode(torch.tensor([1.0, math.nan]))
    overflow = EntrywiseSample(
        (3,),
        torch.float32,
        torch.tensor([0]),
        torch.tensor([1e300], dtype=torch.float64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.bool),
        0.0,
    )
    with pytest.raises(ValueError, match="overflows float32"):
        encode(overflow)


@settings(max_examples=150)
@given(data=st.data())
def test_corrupted_bytes_are_refused_or_decode_to_a_finite_tensor(data: st.DataObject) -> None:
    """Whatever a byte flip or a cut does, decode raises CodecError or returns a finite tensor
    of the expected shape and dtype (never another exception, never garbage)."""
    messages = _CORRUPTION_CORPUS
    index = data.draw(st.integers(0, len(messages) - 1))
    message, shape, dtype = messages[index]
    raw = bytearray(message)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        out = decode(bytes(raw), shape, dtype)
    except CodecError:
        return
    assert out.shape == shape and out.dtype == dtype
    assert not out.is_floating_point() or bool(torch.isfinite(out).all())


def _corpus() -> list[tuple[bytes, tuple[int, ...], torch.dtype]]:
    g = gen(11)
    small = torch.randn(5, 6, generator=g)
    wide = torch.randn(200, generator=g)
    messages = [
        sample_entrywise(small, 4.0, g),
        sample_entrywise(wide, 150.0, g),  # bitmap supports
        qsgd_quantize(wide, 3, g),
        terngrad_quantize(wide, g),
        sample_spectral(small, 3.0, g),
    ]
    out = [(encode(m), m.shape, m.dtype) for m in messages]
    return [*out, (encode(small), tuple(small.shape), small.dtype)]


_CORRUPTION_CORPUS = _corpus()
