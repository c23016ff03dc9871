"""What a strategy declares about itself, once; every caller asks instead of restating it.

The config layer (validation before Ray starts), the bench harness, the secure-aggregation
wrapper and the runner read a strategy's :class:`Capabilities` and call its
:meth:`StrategyContract.check_sizes` with the experiment's sizes; none of them keeps a list of
strategy names. Flower's own strategies, which declare nothing, are described by
:func:`capabilities_of` from what they are (Flower's robust rules need every update).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy


@dataclass(frozen=True)
class Capabilities:
    """What a strategy supports and needs.

    secure_aggregation
        It needs only the sum of the updates, so it can run under secure aggregation.
    needs_sent_model
        Not translation-equivariant: ``aggregate_train`` needs ``configure_train`` first.
    server_assigned_data
        It tells each client which data partition to train on (``data-partition``).
    full_participation
        Every node trains every round (``fraction_train`` is ignored).
    changes_architecture
        The global model's shapes change during a run (``model_for_arrays`` rebuilds it).
    own_round_structure
        It overrides ``start`` with its own message types (``train.fedma``, protocol stages).
    simulation_only
        It relies on what only a simulation (or a cross-silo federation with shared data)
        gives: the server deciding which data each client holds.
    """

    secure_aggregation: bool = False
    needs_sent_model: bool = False
    server_assigned_data: bool = False
    full_participation: bool = False
    changes_architecture: bool = False
    own_round_structure: bool = False
    simulation_only: bool = False


@dataclass(frozen=True)
class ExperimentSizes:
    """The sizes a strategy's parameters are checked against before a run."""

    num_clients: int
    clients_per_round: int
    model_size: int = 0


class ContractError(ValueError):
    """A strategy's parameters do not fit the experiment; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@runtime_checkable
class StrategyContract(Protocol):
    """Implemented by every strategy of this package."""

    capabilities: ClassVar[Capabilities]

    def min_replies(self) -> int:
        """Fewest valid replies a round can be aggregated from."""
        ...

    def check_sizes(self, sizes: ExperimentSizes) -> None:
        """Raise :class:`ContractError` if the parameters cannot work at these sizes."""
        ...


_FLOWER_ROBUST = (Krum, MultiKrum, Bulyan, FedMedian, FedTrimmedAvg)


def capabilities_of(strategy: Strategy | type[Strategy]) -> Capabilities:
    """A strategy's (or class's) declared capabilities; Flower's own strategies declare none:
    its robust rules need every update, the rest of the FedAvg family only the sum."""
    declared = getattr(strategy, "capabilities", None)  # a wrapper's may be a property
    if isinstance(declared, Capabilities):
        return declared
    cls = strategy if isinstance(strategy, type) else type(strategy)
    return Capabilities(secure_aggregation=not issubclass(cls, _FLOWER_ROBUST))


def check_min_replies(owner: str, needed: int, sizes: ExperimentSizes) -> None:
    """The common size check: a round samples at least the replies the rule needs."""
    if sizes.clients_per_round < needed:
        raise ContractError(
            "clients_per_round",
            f"{owner} needs at least {needed} replies per round with these parameters, but "
            f"{sizes.clients_per_round} clients are sampled",
        )
