"""Matched averaging of whole models: spec checks 3 (exact recovery) and 4 (output = average)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fedma_reference import cnn_forward, lstm_forward, mlp_forward

from flower_suite.matching import (
    aggregate_units,
    average_recurrent,
    describe_model,
    from_unit_vectors,
    matched_average,
    permute_model,
    random_permutations,
    reconstruct_local,
    unit_vectors,
)
from flower_suite.models.cnn import DigitsCNN
from flower_suite.models.lstm import CharLSTM
from flower_suite.models.mlp import MLP


def _np_state(model: torch.nn.Module, std: float | None = None) -> dict[str, np.ndarray]:
    if std is not None:
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, std)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _permuted_copies(model: torch.nn.Module, n: int, seed: int) -> tuple[list, list]:
    layers = describe_model(model)
    state = _np_state(model)
    rng = np.random.default_rng(seed)
    perms = [random_permutations(state, layers, rng) for _ in range(n)]
    return [permute_model(state, layers, p) for p in perms], perms


def _assert_recovered(state: dict, perms: list, result, original: dict) -> None:
    for n in range(len(result.widths)):
        assign = result.assignments[n]
        owners = np.stack([a[np.argsort(p[n])] for a, p in zip(assign, perms, strict=True)])
        assert (owners == owners[0]).all(), f"layer {n}: units split across global indices"
    assert set(result.state) == set(original)
    for name, value in result.state.items():
        assert value.shape == original[name].shape


@pytest.mark.parametrize("n_clients", [2, 4])
def test_mlp_exact_recovery(n_clients: int) -> None:
    torch.manual_seed(n_clients)
    model = MLP(10, (16,), 3).double()
    original = _np_state(model, std=0.3)
    clients, perms = _permuted_copies(model, n_clients, seed=n_clients)
    x = torch.randn(64, 10, dtype=torch.float64)
    names = ["net.1", "net.3"]

    result = matched_average(clients, describe_model(model), gamma0=1e-3)

    assert result.widths == [16]
    _assert_recovered(result.state, perms, result, original)
    # the global network is the original up to one permutation
    g = result.assignments[0][0][np.argsort(perms[0][0])]
    np.testing.assert_allclose(result.state["net.1.weight"][g], original["net.1.weight"], atol=0)
    ref = mlp_forward(original, names, x)
    torch.testing.assert_close(mlp_forward(result.state, names, x), ref, atol=1e-12, rtol=0)
    mean = sum(mlp_forward(c, names, x) for c in clients) / n_clients
    torch.testing.assert_close(mlp_forward(result.state, names, x), mean, atol=1e-12, rtol=0)


def test_deep_mlp_exact_recovery() -> None:
    torch.manual_seed(5)
    model = MLP(10, (16, 12), 3).double()
    original = _np_state(model, std=0.3)
    clients, perms = _permuted_copies(model, 3, seed=5)
    x = torch.randn(64, 10, dtype=torch.float64)
    names = ["net.1", "net.3", "net.5"]

    result = matched_average(clients, describe_model(model), gamma0=1e-3)

    assert result.widths == [16, 12]
    _assert_recovered(result.state, perms, result, original)
    ref = mlp_forward(original, names, x)
    torch.testing.assert_close(mlp_forward(result.state, names, x), ref, atol=1e-12, rtol=0)


def test_cnn_exact_recovery() -> None:
    torch.manual_seed(6)
    model = DigitsCNN(in_channels=3, width=8).double()  # conv 3->8->16, fc 256->64->10
    original = _np_state(model, std=0.3)
    clients, perms = _permuted_copies(model, 3, seed=6)
    x = torch.randn(16, 3, 8, 8, dtype=torch.float64)

    result = matched_average(clients, describe_model(model), gamma0=1e-3)

    assert result.widths == [8, 16, 64]
    _assert_recovered(result.state, perms, result, original)
    global_model = DigitsCNN(in_channels=3, width=8).double()
    global_model.load_state_dict({k: torch.from_numpy(v) for k, v in result.state.items()})
    torch.testing.assert_close(global_model(x), cnn_forward(original, x), atol=1e-10, rtol=0)


def test_lstm_exact_recovery() -> None:
    torch.manual_seed(7)
    model = CharLSTM(vocab_size=12, embedding_dim=5, hidden_size=8).double()
    original = _np_state(model, std=0.3)
    clients, perms = _permuted_copies(model, 3, seed=7)
    tokens = torch.randint(0, 12, (16, 6))

    result = matched_average(clients, describe_model(model), gamma0=1e-3)

    assert result.widths == [5, 8]
    _assert_recovered(result.state, perms, result, original)
    torch.testing.assert_close(
        lstm_forward(result.state, tokens), lstm_forward(original, tokens), atol=1e-10, rtol=0
    )


def _unrelated(make, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    torch.manual_seed(seed)
    return [_np_state(make(k).double(), std=0.3) for k in range(n)]


def test_nothing_matched_output_is_average_mlp() -> None:
    clients = _unrelated(lambda k: MLP(10, (5 + 2 * k,), 3), 3, seed=8)
    layers = describe_model(MLP(10, (5,), 3))
    x = torch.randn(64, 10, dtype=torch.float64)
    names = ["net.1", "net.3"]

    result = matched_average(clients, layers, gamma0=1e6, max_width=100)

    assert result.widths == [5 + 7 + 9]
    mean = sum(mlp_forward(c, names, x) for c in clients) / 3
    torch.testing.assert_close(mlp_forward(result.state, names, x), mean, atol=1e-12, rtol=0)


def test_nothing_matched_output_is_average_cnn() -> None:
    clients = _unrelated(lambda k: DigitsCNN(in_channels=3, width=4 + k), 2, seed=9)
    layers = describe_model(DigitsCNN(in_channels=3, width=4))
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)

    result = matched_average(clients, layers, gamma0=1e6, max_width=[100, 100, 200])

    assert result.widths == [4 + 5, 8 + 10, 128]
    assert result.state["classifier.1.weight"].shape == (128, 18 * 16)
    mean = (cnn_forward(clients[0], x) + cnn_forward(clients[1], x)) / 2
    torch.testing.assert_close(cnn_forward(result.state, x), mean, atol=1e-12, rtol=0)


def test_nothing_matched_output_is_average_lstm() -> None:
    clients = _unrelated(lambda k: CharLSTM(12, embedding_dim=3 + k, hidden_size=4 + k), 2, 10)
    layers = describe_model(CharLSTM(12, 3, 4))
    tokens = torch.randint(0, 12, (8, 5))

    result = matched_average(clients, layers, gamma0=1e6, max_width=50)

    assert result.widths == [3 + 4, 4 + 5]
    mean = (lstm_forward(clients[0], tokens) + lstm_forward(clients[1], tokens)) / 2
    torch.testing.assert_close(lstm_forward(result.state, tokens), mean, atol=1e-12, rtol=0)


def test_matched_average_is_deterministic_and_bounded() -> None:
    clients = _unrelated(lambda k: MLP(6, (8, 6), 3), 4, seed=11)
    layers = describe_model(MLP(6, (8, 6), 3))

    first = matched_average(clients, layers, gamma0=1.0, seed=4)
    second = matched_average(clients, layers, gamma0=1.0, seed=4)

    for width, widest, total in zip(first.widths, (8, 6), (32, 24), strict=True):
        assert widest <= width <= min(total, 2 * widest)
    for name, value in first.state.items():
        np.testing.assert_array_equal(value, second.state[name])


def test_mismatched_input_dimensions_raise() -> None:
    clients = [_np_state(MLP(10, (5,), 3)), _np_state(MLP(11, (5,), 3))]
    layers = describe_model(MLP(10, (5,), 3))

    with pytest.raises(ValueError, match="input dimension mismatch"):
        matched_average(clients, layers)


def test_mismatched_output_layers_raise() -> None:
    clients = [_np_state(MLP(10, (5,), 3)), _np_state(MLP(10, (5,), 4))]
    layers = describe_model(MLP(10, (5,), 3))

    with pytest.raises(ValueError, match="output layer"):
        matched_average(clients, layers, gamma0=1e-3)


def test_unit_vector_round_trip_and_helpers() -> None:
    torch.manual_seed(12)
    model = CharLSTM(12, 5, 4).double()
    state = _np_state(model)
    layers = describe_model(model)

    for spec in layers:
        vecs = unit_vectors(state, spec)
        back = from_unit_vectors(vecs, spec, state[spec.weight].shape)
        for name, value in back.items():
            np.testing.assert_array_equal(value, state[name])
    w = [np.ones((2, 3)), 3 * np.ones((2, 3))]
    np.testing.assert_array_equal(aggregate_units(w, [[0, 1], [2, 0]], 3)[:, 0], [2, 1, 3])
    with pytest.raises(ValueError, match="injective"):
        aggregate_units(w, [[0, 0], [1, 2]], 3)
    hh = average_recurrent([np.ones((8, 2)), 3 * np.ones((8, 2))], [[0, 1], [1, 2]], 3)
    np.testing.assert_array_equal(hh[:3], [[1, 1, 0], [1, 2, 3], [0, 3, 3]])


@pytest.mark.parametrize("kind", ["mlp", "cnn", "lstm"])
def test_reconstruct_local_returns_each_client_model(kind: str) -> None:
    torch.manual_seed(13)
    model = {
        "mlp": lambda: MLP(10, (16, 12), 3),
        "cnn": lambda: DigitsCNN(in_channels=3, width=8),
        "lstm": lambda: CharLSTM(12, embedding_dim=5, hidden_size=8),
    }[kind]().double()
    _np_state(model, std=0.3)
    layers = describe_model(model)
    clients, _ = _permuted_copies(model, 3, seed=13)

    result = matched_average(clients, layers, gamma0=1e-3)

    for j, client in enumerate(clients):
        assign = [result.assignments[n][j] for n in range(len(layers) - 1)]
        local = reconstruct_local(result.state, layers, assign)
        assert set(local) == set(client)
        for name, value in client.items():
            np.testing.assert_allclose(local[name], value, atol=1e-12, rtol=0)


def test_reconstruct_local_keeps_client_size_when_the_model_grew() -> None:
    clients = _unrelated(lambda k: MLP(6, (4 + k, 3 + k), 2), 3, seed=14)
    layers = describe_model(MLP(6, (4, 3), 2))

    result = matched_average(clients, layers, gamma0=1e6, max_width=50)
    locals_ = [
        reconstruct_local(result.state, layers, [a[j] for a in result.assignments])
        for j in range(3)
    ]

    assert result.widths == [15, 12]
    for client, local in zip(clients, locals_, strict=True):
        for name in ("net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"):
            np.testing.assert_allclose(local[name], client[name], atol=1e-12, rtol=0)
        assert local["net.5.weight"].shape == client["net.5.weight"].shape
    with pytest.raises(ValueError, match="assignments"):
        reconstruct_local(result.state, layers, [result.assignments[0][0]])
