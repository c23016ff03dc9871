"""Spec check 1: permuting hidden units leaves outputs unchanged (float64, atol 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedma_reference import cnn_forward, lstm_forward, mlp_forward

from flower_suite.matching import (
    LayerSpec,
    describe_model,
    expand_index,
    num_units,
    permute_layer,
    permute_model,
    random_permutations,
    scatter_units,
)
from flower_suite.models.cnn import DigitsCNN
from flower_suite.models.lstm import CharLSTM
from flower_suite.models.mlp import MLP


def _np_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("as_torch", [False, True])
def test_mlp_permutation_invariance(as_torch: bool) -> None:
    torch.manual_seed(0)
    model = MLP(10, (16, 12), 3).double()
    layers = describe_model(model)
    state = model.state_dict() if as_torch else _np_state(model)
    x = torch.randn(32, 10, dtype=torch.float64)
    perms = random_permutations(state, layers, np.random.default_rng(1))

    permuted = permute_model(state, layers, perms)

    names = ["net.1", "net.3", "net.5"]
    assert all(not np.array_equal(p, np.arange(len(p))) for p in perms)
    assert not np.allclose(np.asarray(permuted["net.1.weight"]), np.asarray(state["net.1.weight"]))
    torch.testing.assert_close(
        mlp_forward(permuted, names, x), mlp_forward(state, names, x), atol=1e-10, rtol=0
    )


def test_cnn_permutation_invariance_including_conv_to_fc_block() -> None:
    torch.manual_seed(1)
    model = DigitsCNN(in_channels=3, width=8).double()
    layers = describe_model(model)
    state = _np_state(model)
    x = torch.randn(16, 3, 8, 8, dtype=torch.float64)
    perms = random_permutations(state, layers, np.random.default_rng(2))

    permuted = permute_model(state, layers, perms)
    reloaded = DigitsCNN(in_channels=3, width=8).double()
    reloaded.load_state_dict({k: torch.from_numpy(v) for k, v in permuted.items()})

    assert [s.kind for s in layers] == ["conv", "conv", "linear", "linear"]
    # conv2 channel c owns FC columns [16c, 16c+16): the block moves with the channel.
    c_new, c_old = 0, int(perms[1][0])
    np.testing.assert_array_equal(
        permuted["classifier.1.weight"][:, 16 * c_new : 16 * c_new + 16],
        state["classifier.1.weight"][perms[2]][:, 16 * c_old : 16 * c_old + 16],
    )
    torch.testing.assert_close(cnn_forward(permuted, x), cnn_forward(state, x), atol=1e-10, rtol=0)
    torch.testing.assert_close(reloaded(x), model(x), atol=1e-10, rtol=0)


def test_lstm_permutation_invariance_four_gates_jointly() -> None:
    torch.manual_seed(2)
    model = CharLSTM(vocab_size=20, embedding_dim=6, hidden_size=8).double()
    layers = describe_model(model)
    state = _np_state(model)
    tokens = torch.randint(0, 20, (8, 7))
    perms = random_permutations(state, layers, np.random.default_rng(3))

    permuted = permute_model(state, layers, perms)
    reloaded = CharLSTM(vocab_size=20, embedding_dim=6, hidden_size=8).double()
    reloaded.load_state_dict({k: torch.from_numpy(v) for k, v in permuted.items()})

    assert [s.kind for s in layers] == ["embedding", "lstm", "linear"]
    hp = perms[1]
    for g in range(4):
        np.testing.assert_array_equal(
            permuted["lstm.weight_hh_l0"][g * 8 : (g + 1) * 8],
            state["lstm.weight_hh_l0"][g * 8 + hp][:, hp],
        )
    torch.testing.assert_close(
        lstm_forward(permuted, tokens), lstm_forward(state, tokens), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(reloaded(tokens), model(tokens), atol=1e-10, rtol=0)


def test_lstm_permuting_a_single_gate_breaks_invariance() -> None:
    torch.manual_seed(3)
    model = CharLSTM(vocab_size=20, embedding_dim=6, hidden_size=8).double()
    state = _np_state(model)
    tokens = torch.randint(0, 20, (8, 7))
    perm = np.random.default_rng(0).permutation(8)

    broken = dict(state)
    broken["lstm.weight_ih_l0"] = state["lstm.weight_ih_l0"].copy()
    broken["lstm.weight_ih_l0"][:8] = state["lstm.weight_ih_l0"][perm]

    assert not torch.allclose(lstm_forward(broken, tokens), lstm_forward(state, tokens))


def test_expand_index_gate_and_block() -> None:
    assert expand_index([1, 0], 2, 8, "gate").tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    assert expand_index([1, 0], 2, 6, "block").tolist() == [3, 4, 5, 0, 1, 2]
    with pytest.raises(ValueError):
        expand_index([0, 1], 2, 5, "block")


def test_scatter_is_the_inverse_of_gather() -> None:
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 20))
    perm = rng.permutation(5)
    inverse = np.argsort(perm)

    scattered = scatter_units(w, 1, inverse, 5)  # unit l goes to position inverse[l]
    padded = scatter_units(w, 1, [4, 0, 6, 2, 3], 7)

    np.testing.assert_array_equal(scattered, w[:, expand_index(perm, 5, 20, "block")])
    np.testing.assert_array_equal(padded[:, 16:20], w[:, 0:4])  # unit 0 -> global 4
    np.testing.assert_array_equal(padded[:, 4:8], 0.0)  # global 1 is held by no unit
    np.testing.assert_array_equal(padded[:, 20:24], 0.0)


def test_bad_permutations_are_rejected() -> None:
    model = MLP(4, (5,), 2)
    layers = describe_model(model)
    state = model.state_dict()

    with pytest.raises(ValueError, match="classes"):
        permute_layer(state, layers, 1, np.arange(2))
    with pytest.raises(ValueError, match="permutation"):
        permute_layer(state, layers, 0, [0, 0, 1, 2, 3])
    assert num_units(state, layers[0]) == 5
    assert layers[0] == LayerSpec.linear("net.1")
