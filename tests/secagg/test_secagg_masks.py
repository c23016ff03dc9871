"""The mask PRG: known answers, full range, packing, and hiding (spec sections 4, 12.2, 12.6)."""

from __future__ import annotations

import numpy as np
import pytest
from Crypto.Cipher import AES
from scipy import stats

from flower_suite.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggParams,
    SecAggServer,
    SeededRandomSource,
    masks,
)


def test_keystream_is_aes_ctr_of_the_counter_blocks() -> None:
    # independent reference: pycryptodome's AES-ECB over big-endian counter blocks 0, 1, ...
    key = bytes(range(16))
    blocks = b"".join(AES.new(key, AES.MODE_ECB).encrypt(i.to_bytes(16, "big")) for i in range(8))
    words = masks.keystream(key, 32, np.dtype(np.uint32))
    assert words.tobytes() == blocks
    assert np.array_equal(words, np.frombuffer(blocks, dtype="<u4"))
    assert np.array_equal(
        masks.keystream(key, 16, np.dtype(np.uint64)), np.frombuffer(blocks, "<u8")
    )


def test_known_answer_vectors_are_pinned() -> None:
    # fixed seed, round id, label, length, modulus -> fixed first outputs on every platform
    key = masks.mask_key(
        bytes(32), round_id=bytes(16), label=masks.self_mask_label(1), length=4, mod_bits=32
    )
    assert key.hex() == KAT_KEY
    acc = np.zeros(4, dtype=np.uint32)
    masks.add_mask(
        acc, bytes(32), sign=1, round_id=bytes(16), label=masks.self_mask_label(1), mod_bits=32
    )
    assert acc.tolist() == KAT_WORDS
    # labels, lengths and moduli separate the keys
    other = masks.mask_key(
        bytes(32), round_id=bytes(16), label=masks.pair_mask_label(1, 2), length=4, mod_bits=32
    )
    assert other != key
    assert masks.pair_mask_label(2, 1) == masks.pair_mask_label(1, 2)


KAT_KEY = "d78b46754a44105ecb47a1d3516d83eb"
KAT_WORDS = [3931822125, 2067475758, 1653227668, 3813932247]


def test_add_then_subtract_cancels_and_pair_signs() -> None:
    acc = np.arange(1000, dtype=np.uint64)
    kwargs = dict(round_id=b"r" * 16, label=masks.pair_mask_label(3, 9), mod_bits=40)
    masks.add_mask(acc, b"s" * 32, sign=masks.pair_sign(9, 3), **kwargs)
    assert not np.array_equal(acc, np.arange(1000))
    masks.add_mask(acc, b"s" * 32, sign=masks.pair_sign(3, 9), **kwargs)
    assert np.array_equal(acc, np.arange(1000, dtype=np.uint64))
    with pytest.raises(ValueError):
        masks.pair_sign(4, 4)


@pytest.mark.parametrize("bits", [8, 17, 24, 32, 33, 48, 64])
def test_pack_unpack_roundtrip_keeps_low_bits(bits: int) -> None:
    dtype = np.dtype(np.uint32 if bits <= 32 else np.uint64)
    rng = np.random.default_rng(bits)
    vector = rng.integers(0, np.iinfo(dtype).max, size=101, dtype=dtype, endpoint=True)
    data = masks.pack(vector, bits)
    assert len(data) == 101 * ((bits + 7) // 8)
    back = masks.unpack(data, 101, bits, dtype)
    modulus_mask = (1 << bits) - 1
    assert [int(v) for v in back] == [int(v) & modulus_mask for v in vector]
    with pytest.raises(ValueError, match="entries"):
        masks.unpack(data[:-1], 101, bits, dtype)


def test_masks_cover_the_whole_range() -> None:
    # Flower's randint(0, M-1) never emits M-1; ours is the low log2(M) bits of a keystream
    acc = np.zeros(200_000, dtype=np.uint32)
    masks.add_mask(acc, b"x" * 32, sign=1, round_id=bytes(16), label=b"t", mod_bits=8)
    low = acc & 0xFF
    assert low.max() == 255 and low.min() == 0


def _masked_entries(values: np.ndarray) -> np.ndarray:
    """One client's y_u (as integers mod M = 2**32) for the float input ``values``."""
    config = SecAggConfig(num_shares=3, clipping_range=1.0, quantization_range=2**16, max_weight=1)
    return _client_one_masked([values, values, values], config.resolve(3))


def _client_one_masked(vectors: list[np.ndarray], params: SecAggParams) -> np.ndarray:
    server = SecAggServer(params, source=SeededRandomSource(1))
    clients = {s: SecAggClient(source=SeededRandomSource(100 + s)) for s in (1, 2, 3)}
    keys = {s: clients[s].setup(r) for s, r in server.setup_requests().items()}
    shares = {s: clients[s].share_keys(r) for s, r in server.receive_keys(keys).items()}
    requests = server.receive_share_keys(shares)
    reply = clients[1].masked_input_stage(requests[1], vectors[0], 1)
    return masks.unpack(reply.masked, reply.length, 32, np.dtype(np.uint32))


@pytest.mark.parametrize("kind", ["zeros", "max", "random"])
def test_a_single_masked_vector_is_uniform(kind: str) -> None:
    size = 1_000_000
    values = {
        "zeros": np.full(size, -1.0),  # quantizes to 0
        "max": np.full(size, 1.0),  # quantizes to T - 1
        "random": np.random.default_rng(0).uniform(-1, 1, size),
    }[kind]
    y = _masked_entries(values)[1:]
    # chi-square over 256 buckets of the top byte, and of the low byte
    for byte in ((y >> 24) & 0xFF, y & 0xFF):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3
        freq = counts / counts.sum()
        assert -(freq * np.log2(freq)).sum() >= 7.99
    if kind == "random":
        corr = np.corrcoef(values, y.astype(np.float64))[0, 1]
        assert abs(corr) < 5e-3
