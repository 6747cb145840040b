"""What a runner tells its observers while it works (live views, progress).

Observers are plain callables taking a :class:`RunEvent`. They are called
from the thread that executes the run (a helper thread in a notebook), so
they must be quick and thread-safe; an observer that raises is logged and
otherwise ignored: it never stops a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .status import ErrorInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    """One thing that happened in a run.

    Attributes
    ----------
    kind
        ``run.start``, ``run.end``, ``attempt.start``, ``attempt.end`` (an
        attempt ended and will not be retried), ``attempt.retry`` (an attempt
        failed and will be retried after ``wait_s``).
    state
        For ``attempt.end`` the attempt's state (``succeeded``, ``failed``,
        ``timed_out``, ``interrupted``); for ``run.end`` the run's.
    """

    kind: str
    run_id: str
    step_id: str = ""
    task_name: str = ""
    attempt: int = 0
    state: str = ""
    duration_s: float | None = None
    wait_s: float | None = None
    error: ErrorInfo | None = None
    at_epoch: float = field(default_factory=time.time)


Observer = Callable[[RunEvent], None]


class Observers:
    """The observers of one runner."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: Observer) -> Observer:
        self._observers.append(observer)
        return observer

    def remove(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, event: RunEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                logger.exception(
                    "an observer of run %s failed on %s; the run goes on",
                    event.run_id,
                    event.kind,
                    extra={"event": "observer.failed", "run_id": event.run_id},
                )
