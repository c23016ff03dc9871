"""Backdoor-defense strategies through Flower Messages: rule consistency, records, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from strategy_fixtures import configure, flat, global_arrays, reply, updates_around

from flower_suite.aggregation import krum
from flower_suite.defenses import (
    clip_to_norm,
    crfl,
    flame,
    foolsgold_weights,
    norm_clipping,
    weak_dp,
)
from flower_suite.strategies import (
    CRFL,
    FLAME,
    STRATEGIES,
    FoolsGold,
    NormClipping,
    WeakDP,
    create_strategy,
)

D = 15  # 4 * 3 + 3 parameters
NODES = list(range(100, 120))


def _deltas(n_honest: int, n_attack: int, seed: int = 0, attack: float = 5.0) -> list[np.ndarray]:
    """Honest updates around one direction; attackers along another, much larger."""
    rng = np.random.default_rng(seed)
    honest_dir, attack_dir = rng.normal(size=D), rng.normal(size=D)
    honest = [0.1 * (honest_dir + 0.5 * rng.normal(size=D)) for _ in range(n_honest)]
    attackers = [attack * (attack_dir + 0.01 * rng.normal(size=D)) for _ in range(n_attack)]
    return honest + attackers


def _decoded(base: ArrayRecord, replies: list) -> torch.Tensor:
    return torch.from_numpy(np.stack([flat(r.content["arrays"]) for r in replies]) - flat(base))


def _run(strategy, base: ArrayRecord, replies: list, server_round: int = 1):
    configure(strategy, base, NODES)
    return strategy.aggregate_train(server_round, replies)


def test_norm_clipping_equals_the_core_and_records_info(task_identity: None) -> None:
    # Prepare
    base = global_arrays()
    replies = updates_around(base, _deltas(8, 2), weights=[10, 20, 10, 10, 10, 10, 10, 10, 5, 5])
    strategy = NormClipping(max_norm=0.5)
    # Execute
    arrays, metrics = _run(strategy, base, replies)
    # Assert
    weights = torch.tensor([10, 20, 10, 10, 10, 10, 10, 10, 5, 5], dtype=torch.float64)
    core = norm_clipping(_decoded(base, replies), weights, max_norm=0.5)
    np.testing.assert_allclose(
        flat(arrays), flat(base) + core.aggregate.numpy(), rtol=1e-6, atol=1e-7
    )
    info = strategy.records[1].info
    assert info["fraction-clipped"] >= 0.2 and info["max-input-norm"] > 5
    assert np.linalg.norm(flat(arrays) - flat(base)) <= 0.5 * (1 + 1e-5)
    assert metrics["rejected-replies"] == 0


def test_ndc_composes_with_krum(task_identity: None) -> None:
    """NDC + Krum: Krum over the clipped updates; the attackers' node ids are never selected."""
    base = global_arrays()
    replies = updates_around(base, _deltas(8, 2))
    strategy = NormClipping(
        max_norm=0.5, aggregation="krum", aggregation_kwargs={"num_malicious_nodes": 2}
    )
    assert strategy.min_replies() == 7
    arrays, _ = _run(strategy, base, replies)
    chosen = krum(clip_to_norm(_decoded(base, replies), 0.5).updates, num_malicious_nodes=2)
    np.testing.assert_allclose(
        flat(arrays), flat(base) + chosen.aggregate.numpy(), rtol=1e-6, atol=1e-7
    )
    assert strategy.records[1].selected == [100 + chosen.selected[0]]
    assert strategy.records[1].selected[0] < 108


def test_weak_dp_is_seeded_and_fresh_each_round(task_identity: None) -> None:
    base = global_arrays()
    replies = updates_around(base, _deltas(6, 0))
    first, second = (
        WeakDP(max_norm=1.0, noise_std=0.01, seed=5),
        WeakDP(max_norm=1.0, noise_std=0.01, seed=5),
    )
    a1, _ = _run(first, base, replies, 1)
    b1, _ = _run(second, base, replies, 1)
    a2, _ = _run(first, base, replies, 2)
    np.testing.assert_array_equal(flat(a1), flat(b1))
    assert not np.array_equal(flat(a1), flat(a2))
    weights = torch.full((6,), 10.0, dtype=torch.float64)
    core = weak_dp(_decoded(base, replies), weights, max_norm=1.0, noise_std=0.01, seed=5)
    np.testing.assert_allclose(flat(a1), flat(base) + core.aggregate.numpy(), rtol=1e-6, atol=1e-7)
    assert first.records[1].info["noise-std"] == 0.01


def test_flame_admits_honest_node_ids(task_identity: None) -> None:
    base = global_arrays()
    replies = updates_around(base, _deltas(7, 3))
    strategy = FLAME(noise_lambda=0.001, seed=0)
    arrays, _ = _run(strategy, base, replies)
    record = strategy.records[1]
    assert set(record.selected) <= set(range(100, 107)) and len(record.selected) >= 6
    assert record.info["admitted"] == len(record.selected)
    core = flame(_decoded(base, replies), noise_lambda=0.001, seed=0)
    np.testing.assert_allclose(
        flat(arrays), flat(base) + core.aggregate.numpy(), rtol=1e-6, atol=1e-7
    )


def test_flame_skips_rounds_with_fewer_than_three_replies(task_identity: None) -> None:
    base = global_arrays()
    strategy = FLAME()
    arrays, metrics = _run(strategy, base, updates_around(base, _deltas(2, 0)))
    assert arrays is None and metrics is None
    assert "needs at least 3" in strategy.records[1].skipped


def _with_counter(base: ArrayRecord) -> ArrayRecord:
    arrays = {k: base[k].numpy() for k in ("w", "b")}
    arrays["bn.num_batches_tracked"] = np.array([7], dtype=np.int64)
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _replies_with_counter(base: ArrayRecord, deltas: list[np.ndarray]) -> list:
    out = []
    for i, delta in enumerate(deltas):
        arrays = {
            "w": base["w"].numpy() + delta[:12].reshape(4, 3).astype(np.float32),
            "b": base["b"].numpy() + delta[12:].astype(np.float32),
            "bn.num_batches_tracked": np.array([9], dtype=np.int64),
        }
        out.append(reply(arrays, node_id=100 + i))
    return out


def test_flame_clusters_without_integer_and_batchnorm_buffers(task_identity: None) -> None:
    """The int64 counter is left out of the clustering vector; the round still aggregates."""
    base = _with_counter(global_arrays())
    strategy = FLAME(noise_lambda=0.0)
    arrays, _ = _run(strategy, base, _replies_with_counter(base, _deltas(7, 3)))
    mask = strategy._column_mask(strategy.exclude_from_clustering)
    assert mask is not None and mask.tolist() == [True] * 15 + [False]
    assert set(strategy.records[1].selected) <= set(range(100, 107))
    assert arrays["bn.num_batches_tracked"].numpy().tolist() == [9]


def test_crfl_bounds_the_global_norm_and_leaves_integer_buffers(task_identity: None) -> None:
    base = _with_counter(global_arrays())
    replies = _replies_with_counter(base, _deltas(5, 0))
    strategy = CRFL(rho=1.0, sigma=0.0)
    arrays, _ = _run(strategy, base, replies)
    new = np.concatenate([arrays[k].numpy().reshape(-1) for k in ("w", "b")])
    assert np.linalg.norm(new) <= 1.0 * (1 + 1e-5)
    assert arrays["bn.num_batches_tracked"].numpy().tolist() == [9]
    assert strategy.records[1].info["model-clipped"] == 1.0
    # Float part equals the core step (mask: the last entry is the counter).
    base_flat = np.concatenate([flat(base), [7.0]])
    updates = torch.from_numpy(
        np.stack([np.concatenate([flat(r.content["arrays"]), [9.0]]) for r in replies]) - base_flat
    )
    mask = torch.tensor([True] * 15 + [False])
    core = crfl(
        updates, global_params=torch.from_numpy(base_flat), rho=1.0, sigma=0.0, param_mask=mask
    )
    np.testing.assert_allclose(
        new, base_flat[:15] + core.aggregate.numpy()[:15], rtol=1e-6, atol=1e-7
    )


def test_crfl_noise_is_seeded(task_identity: None) -> None:
    base = global_arrays()
    replies = updates_around(base, _deltas(4, 0))
    a, _ = _run(CRFL(rho=100.0, sigma=0.05, seed=1), base, replies)
    b, _ = _run(CRFL(rho=100.0, sigma=0.05, seed=1), base, replies)
    c, _ = _run(CRFL(rho=100.0, sigma=0.05, seed=2), base, replies)
    np.testing.assert_array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(c))


def test_foolsgold_history_by_node_id_across_rounds(task_identity: None) -> None:
    """Round 1: nodes 100..105 (103..105 sybils); round 2: a reversed subset. The recorded
    weights are those of the per-node histories, whatever the reply order; sybils get 0."""
    rng = np.random.default_rng(1)
    base = global_arrays()
    sybil = rng.normal(size=D)

    def round_deltas() -> list[np.ndarray]:
        return [rng.normal(size=D) for _ in range(3)] + [
            sybil + 1e-3 * rng.normal(size=D) for _ in range(3)
        ]

    strategy = FoolsGold(scope="round")
    r1 = updates_around(base, round_deltas())
    _run(strategy, base, r1, 1)
    r2_all = updates_around(base, round_deltas())
    r2 = [r2_all[5], r2_all[4], r2_all[2], r2_all[0]]  # nodes 105, 104, 102, 100
    arrays, _ = _run(strategy, base, r2, 2)
    # Expected: histories summed per node id, weights over this round's participants.
    d1, d2 = _decoded(base, r1), _decoded(base, r2_all)
    nodes = [105, 104, 102, 100]
    history = torch.stack([d1[n - 100] + d2[n - 100] for n in nodes]).double()
    alpha = foolsgold_weights(history)
    info = strategy.records[2].info
    for node, a in zip(nodes, alpha.tolist(), strict=True):
        assert info[f"weight-{node}"] == pytest.approx(a, abs=1e-9)
    assert info["weight-105"] < 1e-6 and info["weight-104"] < 1e-6
    assert info["weight-100"] > 0.5 and info["weight-102"] > 0.5
    assert sorted(strategy.records[2].selected) == [100, 102]
    mean = (d2[0] + d2[2]).numpy() / 2  # weights 1 and 1 after the logit clip
    np.testing.assert_allclose(flat(arrays), flat(base) + mean, rtol=1e-5, atol=1e-6)


def _relabel(replies: list, node_ids: list[int]) -> list:
    for msg, node in zip(replies, node_ids, strict=True):
        msg.metadata.src_node_id = node
    return replies


@pytest.mark.parametrize(("scope", "caught"), [("all", True), ("round", False)])
def test_foolsgold_scope_all_catches_sybils_sampled_apart(
    task_identity: None, scope: str, caught: bool
) -> None:
    """Sybils 100 and 101 never share a round. With scope="all", 101's history is compared
    with 100's and gets weight 0; with scope="round" it is only compared with honest peers."""
    rng = np.random.default_rng(2)
    base = global_arrays()
    sybil = rng.normal(size=D)
    strategy = FoolsGold(scope=scope)
    first = updates_around(base, [sybil, rng.normal(size=D), rng.normal(size=D)])
    _run(strategy, base, _relabel(first, [100, 102, 103]), 1)
    second = updates_around(base, [sybil, rng.normal(size=D), rng.normal(size=D)])
    _run(strategy, base, _relabel(second, [101, 104, 105]), 2)
    info = strategy.records[2].info
    assert (info["weight-101"] < 1e-6) is caught
    assert info["weight-104"] > 0.5 and info["weight-105"] > 0.5
    assert len(strategy.history) == 6


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: NormClipping(max_norm=-1.0), "max_norm"),
        (lambda: NormClipping(aggregation="nope"), "nope"),
        (lambda: NormClipping(aggregation="krum"), "num_malicious_nodes"),
        (lambda: WeakDP(noise_std=-0.1), "noise_std"),
        (lambda: FLAME(min_cluster_size=1), "min_cluster_size"),
        (lambda: FLAME(noise_lambda=float("nan")), "noise_lambda"),
        (lambda: FoolsGold(kappa=0.0), "kappa"),
        (lambda: FoolsGold(scope="everyone"), "scope"),
        (lambda: CRFL(rho=0.0), "rho"),
    ],
)
def test_bad_parameters_raise_at_construction(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def test_registered_for_configs() -> None:
    for name in ("normclipping", "ndc", "weakdp", "flame", "foolsgold", "crfl"):
        assert name in STRATEGIES, name
    assert isinstance(create_strategy("ndc", max_norm=1.0, fraction_train=0.5), NormClipping)
    STRATEGIES.check_kwargs(
        "weakdp", {"max_norm": 0.3, "noise_std": 0.01, "aggregation": "median"}, field="s"
    )
    STRATEGIES.check_kwargs("crfl", {"rho": 10.0, "sigma": 0.01, "fraction_train": 1.0}, field="s")
    with pytest.raises(ValueError, match=r"^strategy\.lambda"):
        STRATEGIES.check_kwargs("flame", {"lambda": 0.001}, field="strategy")
