"""The optimizer interface the service talks to.

An optimizer is pure computation: given everything observed so far and the points still in flight, it proposes
the next hyperparameters. It holds no I/O and no event loop, so the service can run it in a worker thread and a
restarted service can rebuild it from the event log alone.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload


@dataclass(frozen=True)
class Observation:
    """A finished trial: its parameters, its score (None when it failed) and what it cost.

    ``cost`` is optional: without it every trial counts as costing the same, and Protein models the score alone.
    NaN means unknown for this trial alone (a trial stopped early): Protein leaves it out of its cost model and its
    score/cost Pareto front counts it as dear.
    """

    params: dict[str, Any]
    score: float | None
    cost: float | None = None
    failed: bool = False


class ObservationLog(Sequence[Observation]):
    """Every observation of a sweep, kept compactly: a trial costs a tuple of its values (its names are shared with
    every trial that has the same ones) and three numbers, about a third of an ``Observation`` with its dict. Each
    ``Observation`` is built when read, so an optimizer that only counts them (random search) builds none.

    Append-only; ``view()`` is a fixed-length snapshot that a worker thread may read while more are appended.
    With ``count_only`` it keeps nothing but how many it was given (for an optimizer that only counts them).
    """

    def __init__(self, count_only: bool = False) -> None:
        self.count_only = count_only
        self._count = 0
        self._names: list[tuple[str, ...]] = []
        self._values: list[tuple[Any, ...]] = []
        self._score = array("d")
        self._cost = array("d")
        self._failed = bytearray()
        self._has_cost = bytearray()
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._length: int | None = None  # set on views

    def append(self, obs: Observation) -> None:
        if self._length is not None:
            raise TypeError("a view of an ObservationLog is read-only")
        self._count += 1
        if self.count_only:
            return
        names = tuple(obs.params)
        self._names.append(self._shared.setdefault(names, names))
        self._values.append(tuple(obs.params.values()))
        self._score.append(float("nan") if obs.score is None else obs.score)
        self._cost.append(math.nan if obs.cost is None else obs.cost)
        self._has_cost.append(obs.cost is not None)
        self._failed.append(obs.failed)

    def view(self) -> ObservationLog:
        snapshot = object.__new__(ObservationLog)
        snapshot.__dict__.update(self.__dict__)
        snapshot._length = len(self)
        return snapshot

    def __len__(self) -> int:
        return self._count if self._length is None else self._length

    def _row(self, i: int) -> Observation:
        if self.count_only:
            raise TypeError("this ObservationLog keeps only a count: the optimizer declared reads_observations=False")
        failed = bool(self._failed[i])
        score = None if failed else self._score[i]
        cost = self._cost[i] if self._has_cost[i] else None
        return Observation(dict(zip(self._names[i], self._values[i])), score, cost, failed)

    @overload
    def __getitem__(self, i: int) -> Observation: ...
    @overload
    def __getitem__(self, i: slice) -> list[Observation]: ...
    def __getitem__(self, i: int | slice) -> Observation | list[Observation]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("observation index out of range")
        return self._row(i % n)

    def __iter__(self) -> Iterator[Observation]:
        return (self._row(i) for i in range(len(self)))


@dataclass(frozen=True)
class Suggestion:
    """Proposed parameters plus what the optimizer wants on the record (predictions, fallback reasons)."""

    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


Key = tuple[tuple[str, str], ...]  # a parameter set's identity (see param_key)


def param_key(params: dict[str, Any]) -> Key:
    """A hashable identity for a parameter set (floats to 12 significant digits)."""
    return tuple(sorted((k, f"{v:.12g}" if isinstance(v, float) else repr(v)) for k, v in params.items()))


class Optimizer(Protocol):
    """``reads_observations``: False declares that ``suggest`` only counts the observations (``len``), as random
    search does; the service then keeps a count instead of a history."""

    reads_observations: bool

    def suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int = 1
    ) -> list[Suggestion]:
        """Propose ``n`` parameter sets, distinct from each other and from ``pending`` (trials in flight)."""
        ...
