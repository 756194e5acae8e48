"""What serve prints, as a subscriber of the event stream like the others.

A line per event worth one (the seed's ``[SweepOrchestrator] ...`` and ``[trial_0001] ...``, rendered by
``orchestrator.render.describe``, which attach shares), the trial table every ``monitoring_interval`` seconds in
human mode, and the summary when the sweep ends. Job output is echoed by the service's watchers as it arrives:
it is not an event.
"""

from __future__ import annotations

from typing import Any

import anyio

from orchestrator.core import events as ev
from orchestrator.core.events import StoredEvent
from orchestrator.core.state import SweepState
from orchestrator.core.subscriber import Subscriber
from orchestrator.logs import get_logger
from orchestrator.render import describe, summary, trial_table

_MAX_LOGGERS = 256  # binding a logger costs more than the line: keep the recent ones


class ConsoleSubscriber(Subscriber):
    def __init__(
        self, scheduler: str, *, capture_output: bool = True, monitoring_interval: float = 10.0, human: bool = True
    ) -> None:
        self.scheduler = scheduler
        self.capture_output = capture_output
        self.monitoring_interval = monitoring_interval
        self.human = human
        self.state: SweepState | None = None
        self._loggers: dict[str, Any] = {}

    def publish(self, stored: StoredEvent, state: SweepState) -> None:
        self.state = state
        event = stored.event
        if isinstance(event, ev.JobProgress) and self.capture_output:
            return  # the job's own progress line was already echoed
        line = describe(event, state, self.scheduler)
        if line is not None:
            self._logger(line[0]).info(line[1])

    async def run(self) -> None:
        if not self.human:
            return
        while True:
            await anyio.sleep(self.monitoring_interval)
            if self.state is not None:
                print(trial_table(self.state), flush=True)

    async def drain(self) -> None:
        # The service drains its subscribers once the sweep has ended (finished, or stopped as doomed).
        if self.state is not None and (self.state.finished or self.state.stopped):
            print(summary(self.state), flush=True)

    def _logger(self, component: str) -> Any:
        logger = self._loggers.get(component)
        if logger is None:
            if len(self._loggers) >= _MAX_LOGGERS:
                self._loggers.clear()
            logger = self._loggers[component] = get_logger(component)
        return logger
