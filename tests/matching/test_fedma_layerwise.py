"""Variable-width models and the per-step FedMA kernels (spec fedma.md §2, §5, §8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flower_suite.matching import describe_model, permute_layer, reconstruct_local
from flower_suite.matching.architecture import (
    count_state_parameters,
    matchable_layers,
    model_for_state,
    resize_model,
    state_shapes,
)
from flower_suite.matching.layerwise import (
    average_last_layer,
    install_global_layer,
    layer_tensor_names,
    match_client_layers,
    popular_assignment,
)
from flower_suite.models import MLP, VGG9, CharLSTM, DigitsCNN, LeNet, ResNet18


@pytest.mark.parametrize(
    ("template", "grown", "inputs"),
    [
        (lambda: MLP(), lambda: MLP(hidden=(80,)), lambda: torch.rand(2, 1, 8, 8)),
        (lambda: DigitsCNN(), lambda: DigitsCNN(width=21), lambda: torch.rand(2, 1, 8, 8)),
        (
            lambda: CharLSTM(embedding_dim=8, hidden_size=16),
            lambda: CharLSTM(embedding_dim=11, hidden_size=19),
            lambda: torch.randint(0, 80, (2, 5)),
        ),
    ],
    ids=["mlp", "digits_cnn", "char_lstm"],
)
def test_model_for_state_rebuilds_grown_models(template, grown, inputs) -> None:
    """A template rebuilt for a wider state dict computes exactly what the wide model does."""
    torch.manual_seed(0)
    wide = grown()
    model = model_for_state(template, wide.state_dict())
    x = inputs()
    torch.testing.assert_close(model(x), wide(x))
    assert state_shapes(model.state_dict()) == state_shapes(wide.state_dict())


def test_resize_lenet_and_vgg9_keeps_layer_settings() -> None:
    """LeNet and VGG-9 resize through their matchable layers (kernel, padding kept)."""
    lenet = LeNet()
    shapes = state_shapes(lenet.state_dict())
    shapes["features.0.weight"], shapes["features.0.bias"] = (23, 1, 5, 5), (23,)
    shapes["features.3.weight"] = (50, 23, 5, 5)
    bigger = resize_model(lenet, shapes)
    assert bigger(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert bigger.features[0].kernel_size == (5, 5)
    assert lenet.features[0].out_channels == 20  # the template is untouched
    vgg = VGG9()
    shapes = state_shapes(vgg.state_dict())
    shapes["features.0.weight"], shapes["features.0.bias"] = (35, 3, 3, 3), (35,)
    shapes["features.2.weight"] = (64, 35, 3, 3)
    wide = resize_model(vgg, shapes)
    assert wide.features[0].padding == (1, 1)
    assert wide(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert count_state_parameters(state_shapes(wide.state_dict())) > 3_491_530


def test_unsupported_models_are_clear_value_errors() -> None:
    """BatchNorm, stray tensors, grouped convolutions and single-layer models are refused."""
    with pytest.raises(ValueError, match="BatchNorm"):
        matchable_layers(ResNet18(num_classes=10))
    with pytest.raises(ValueError, match="outside Linear"):
        matchable_layers(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="grouped"):
        matchable_layers(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="at least two"):
        matchable_layers(nn.Linear(3, 2))


def _permuted_copies(seed: int, n: int):
    """``n`` clients holding the same DigitsCNN (width 4) with conv1 channels permuted."""
    torch.manual_seed(seed)
    base = {k: v.double().numpy() for k, v in DigitsCNN(width=4).state_dict().items()}
    layers = describe_model(DigitsCNN(width=4))
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(4) for _ in range(n)]
    return base, layers, perms, [permute_layer(base, layers, 0, p) for p in perms]


def test_match_client_layers_recovers_permuted_units() -> None:
    """Permuted copies of one layer match exactly: width L, identical global unit sets."""
    base, layers, perms, clients = _permuted_copies(0, 3)
    names = layer_tensor_names(layers[0])
    result = match_client_layers(
        [{k: c[k] for k in names} for c in clients], layers[0], gamma0=1e-3
    )
    assert result.width == 4
    assert result.counts.tolist() == [3, 3, 3, 3]
    for perm, assign in zip(perms, result.assignments, strict=True):
        # client unit l is original unit perm[l]; it must land on the same global unit.
        np.testing.assert_allclose(
            result.tensors["features.0.weight"][assign], base["features.0.weight"][perm]
        )
    # Installing the global layer keeps every client's function (the next input is aligned).
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    for client, assign in zip(clients, result.assignments, strict=True):
        aligned = install_global_layer(client, layers[0], layers[1], result.tensors, assign)
        own = model_for_state(lambda: DigitsCNN(width=4).double(), client)
        new = model_for_state(lambda: DigitsCNN(width=4).double(), aligned)
        torch.testing.assert_close(new(x), own(x), rtol=0, atol=1e-12)


def test_match_client_layers_lstm_and_reconstruction_sizes() -> None:
    """LSTM layers average weight_hh too; reconstructing gives each client its own size."""
    torch.manual_seed(1)
    clients = [CharLSTM(embedding_dim=4, hidden_size=h) for h in (5, 6)]
    layers = describe_model(clients[0])
    states = [{k: v.double().numpy() for k, v in c.state_dict().items()} for c in clients]
    emb = match_client_layers(
        [{"embedding.weight": s["embedding.weight"]} for s in states], layers[0]
    )
    states = [
        install_global_layer(s, layers[0], layers[1], emb.tensors, a)
        for s, a in zip(states, emb.assignments, strict=True)
    ]
    names = layer_tensor_names(layers[1])
    lstm = match_client_layers([{k: s[k] for k in names} for s in states], layers[1])
    assert 6 <= lstm.width <= 11
    assert lstm.tensors["lstm.weight_hh_l0"].shape == (4 * lstm.width, lstm.width)
    states = [
        install_global_layer(s, layers[1], layers[2], lstm.tensors, a)
        for s, a in zip(states, lstm.assignments, strict=True)
    ]
    last = average_last_layer(
        [{k: s[k] for k in ("decoder.weight", "decoder.bias")} for s in states],
        layers[2],
        np.ones((2, 80)),
    )
    global_state = {**emb.tensors, **lstm.tensors, **last}
    for client, j in zip(clients, range(2), strict=True):
        local = reconstruct_local(global_state, layers, [emb.assignments[j], lstm.assignments[j]])
        assert state_shapes(local) == state_shapes(client.state_dict())


def test_average_last_layer_uses_class_counts() -> None:
    """A class held by one client takes that client's row exactly (§12, check 7)."""
    spec = describe_model(MLP(in_features=3, hidden=(2,), num_classes=2))[-1]
    a = {"net.3.weight": np.ones((2, 2)), "net.3.bias": np.zeros(2)}
    b = {"net.3.weight": 3 * np.ones((2, 2)), "net.3.bias": np.ones(2)}
    out = average_last_layer([a, b], spec, np.array([[10, 1], [0, 3]]))
    np.testing.assert_array_equal(out["net.3.weight"][0], [1.0, 1.0])
    np.testing.assert_allclose(out["net.3.weight"][1], [2.5, 2.5])
    with pytest.raises(ValueError, match="Linear or Conv2d"):
        average_last_layer([a], describe_model(CharLSTM())[1], np.ones((1, 2)))


def test_popular_assignment_and_install_checks() -> None:
    """Most-matched units in global order; bad assignments are ValueErrors."""
    assert popular_assignment([1, 4, 4, 2, 4], 3).tolist() == [1, 2, 4]
    with pytest.raises(ValueError):
        popular_assignment([1, 2], 3)
    _, layers, _, clients = _permuted_copies(0, 1)
    tensors = {k: clients[0][k] for k in layer_tensor_names(layers[0])}
    with pytest.raises(ValueError, match="injective"):
        install_global_layer(clients[0], layers[0], layers[1], tensors, [0, 0, 1, 2])
    with pytest.raises(ValueError, match="outside"):
        install_global_layer(clients[0], layers[0], layers[1], tensors, [0, 1, 2, 9])
