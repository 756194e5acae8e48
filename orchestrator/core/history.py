"""Every trial of a sweep, read back from its log.

The state keeps only the trials in flight and the last few that ended (so memory stays flat however long a sweep
runs); the log keeps everything. This fold recovers the rest, for ``status --all`` and for anyone auditing a sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from orchestrator.core import events as ev
from orchestrator.core.reducer import reduce
from orchestrator.core.state import SweepState, TrialState


def ended_trials(events: Iterable[ev.Event], into: list[SweepState] | None = None) -> Iterator[TrialState]:
    """Each trial as it ended (completed or failed), in the order they ended. ``into``, if given, receives the
    final state once the events are exhausted."""
    state = SweepState()
    for event in events:
        after = reduce(state, event)
        if after.ended > state.ended:
            yield after.recent[-1]
        state = after
    if into is not None:
        into.append(state)


def all_trials(events: Iterable[ev.Event]) -> tuple[SweepState, list[TrialState]]:
    """The final state and every trial (ended or still in flight), by number."""
    final: list[SweepState] = []
    ended = list(ended_trials(events, final))
    state = final[0]
    return state, sorted([*ended, *state.open_trials.values()], key=lambda t: t.trial)
