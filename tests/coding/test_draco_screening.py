"""Screening and stacking of node replies: bad replies become erasures, arrival order is
irrelevant (spec draco.md sections 7.5 and 8.11, core part)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flower_suite.coding import (
    DecodingError,
    TooManyAdversariesError,
    as_message_matrix,
    check_adversary_budget,
    decode_cyclic,
    decode_repetition,
    encode_cyclic,
    encode_repetition,
    make_cyclic_code,
    make_repetition_code,
    screen_rows,
    stack_replies,
)


def test_screen_rows_reasons_and_norms() -> None:
    messages = np.array([[3.0, 4.0], [np.nan, 0.0], [1e200, 1e200], [0.0, 0.0], [-np.inf, 1.0]])
    screening = screen_rows(messages, erased=[3], max_norm=10.0)
    assert screening.erased == (1, 2, 3, 4)
    assert dict(screening.reasons) == {
        1: "non-finite",
        2: "non-finite",  # finite entries whose squares overflow float64
        3: "erased by caller",
        4: "non-finite",
    }
    assert screening.row_norms.tolist() == [5.0, 0.0, 0.0, 0.0, 0.0]
    assert screen_rows(messages[:1], max_norm=4.0).reasons == {0: "norm above bound"}
    with pytest.raises(ValueError, match="max_norm"):
        screen_rows(messages, max_norm=float("nan"))
    with pytest.raises(ValueError, match="node index"):
        screen_rows(messages, erased=[True])


def test_relative_norm_bound_uses_the_median_of_the_other_rows() -> None:
    messages = np.ones((5, 4))
    messages[1] *= 1e7
    messages[3] = np.nan
    screening = screen_rows(messages, max_norm_ratio=1e6)
    assert dict(screening.reasons) == {1: "norm far above the median", 3: "non-finite"}
    assert screen_rows(messages[[0, 1, 2]], max_norm_ratio=1e8).erased == ()
    assert screen_rows(np.zeros((3, 2)), max_norm_ratio=1.0).erased == ()
    with pytest.raises(ValueError, match="max_norm_ratio"):
        screen_rows(messages, max_norm_ratio=0.0)


def test_complex_screening_sees_the_imaginary_part() -> None:
    messages = np.zeros((2, 3), dtype=complex)
    messages[1, 2] = complex(0.0, np.nan)
    assert screen_rows(messages).erased == (1,)


def test_stack_replies_erases_missing_malformed_and_complex() -> None:
    replies = {
        2: np.ones(3),
        0: torch.arange(3, dtype=torch.float32),
        3: np.ones(4),
        4: np.ones(3) * 1j,
        5: None,
    }
    stacked = stack_replies(replies, num_nodes=7, dimension=3)
    assert stacked.erased == (1, 3, 4, 5, 6)
    assert dict(stacked.reasons) == {
        1: "missing",
        3: "wrong shape",
        4: "wrong dtype",
        5: "missing",
        6: "missing",
    }
    assert stacked.messages.dtype == np.float64
    assert stacked.messages[0].tolist() == [0.0, 1.0, 2.0] and (stacked.messages[3] == 0).all()
    with pytest.raises(ValueError, match="node index"):
        stack_replies({7: np.ones(3)}, num_nodes=7, dimension=3)
    complex_stack = stack_replies(
        {0: np.ones(3) * 1j}, num_nodes=1, dimension=3, complex_valued=True
    )
    assert complex_stack.erased == () and complex_stack.messages.dtype == np.complex128


def test_as_message_matrix_converts_without_losing_information() -> None:
    tensor = torch.ones(2, 3, dtype=torch.bfloat16, requires_grad=True)
    assert as_message_matrix(tensor, complex_valued=False).dtype == np.float64
    transposed = np.ones((3, 2)).T
    assert as_message_matrix(transposed, complex_valued=False).flags.c_contiguous
    with pytest.raises(ValueError, match="real"):
        as_message_matrix(torch.ones(2, 2, dtype=torch.complex64), complex_valued=False)


def test_budget() -> None:
    check_adversary_budget([1, 2], 2, what="x")
    with pytest.raises(TooManyAdversariesError) as error:
        check_adversary_budget([3, 1, 2], 2, what="failed")
    assert error.value.suspects == (1, 2, 3) and isinstance(error.value, DecodingError)


@settings(max_examples=30)
@given(st.permutations(range(9)), st.sets(st.integers(0, 8), max_size=2))
def test_reply_order_does_not_matter_and_missing_replies_are_adversaries(
    order: list[int], dropped: set[int]
) -> None:
    """Replies keyed by node index, arriving in any order, some missing (counted toward s)."""
    gradients = np.random.default_rng(0).standard_normal((9, 20))
    truth = gradients.sum(axis=0)
    repetition, cyclic = make_repetition_code(9, 1), make_cyclic_code(9, 2)
    clean = decode_repetition(repetition, encode_repetition(repetition, gradients)).total
    for code, encoded, complex_valued in (
        (repetition, encode_repetition(repetition, gradients), False),
        (cyclic, encode_cyclic(cyclic, gradients), True),
    ):
        replies = {j: encoded[j] for j in order if j not in dropped}
        stacked = stack_replies(replies, num_nodes=9, dimension=20, complex_valued=complex_valued)
        assert stacked.erased == tuple(sorted(dropped))
        if code is repetition:
            if len(dropped) > repetition.max_adversaries:
                with pytest.raises(TooManyAdversariesError):
                    decode_repetition(repetition, stacked.messages, erased=stacked.erased)
                continue
            result = decode_repetition(repetition, stacked.messages, erased=stacked.erased)
            assert result.total.tobytes() == clean.tobytes()
        else:
            total = decode_cyclic(
                cyclic, stacked.messages, erased=stacked.erased, rng=np.random.default_rng(0)
            ).total
            assert np.linalg.norm(total - truth) <= 1e-9 * np.linalg.norm(truth)
