"""States of runs and attempts, and the status a run call returns."""

from __future__ import annotations

import builtins
import enum
import importlib
from dataclasses import dataclass, field
from typing import Any

from .errors import StepFailedError


class RunState(enum.StrEnum):
    """Where a run is. Stored as its lower-case value."""

    PENDING = "pending"  # created or enqueued, no step started yet
    RUNNING = "running"  # an owner holds the run's lease and executes steps
    WAITING = "waiting"  # stopped until a wake-up time or a signal
    COMPLETED = "completed"  # every step succeeded; the output is stored
    FAILED = "failed"  # a step failed after its retries; the error is stored
    INTERRUPTED = "interrupted"  # stopped by an interrupt or a crash; resumable
    CANCELLED = "cancelled"  # cancelled on request; stays cancelled
    PAUSED = "paused"  # paused on request at a step boundary; resumable

    @property
    def is_finished(self) -> bool:
        """Completed, failed or cancelled: running it again does no work."""
        return self in _FINISHED


_FINISHED = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})


class AttemptState(enum.StrEnum):
    """The outcome of one attempt of a step."""

    SCHEDULED = "scheduled"  # a retry waiting for its backoff to pass
    RUNNING = "running"  # started, no outcome recorded yet
    SUCCEEDED = "succeeded"  # returned a value; the step's checkpoint is stored
    FAILED = "failed"  # raised an exception
    TIMED_OUT = "timed_out"  # did not finish within the task's timeout
    INTERRUPTED = "interrupted"  # stopped by an interrupt, a cancel or a crash


@dataclass(frozen=True, kw_only=True)
class ErrorInfo:
    """A stored error: the task's own exception type and message.

    Attributes
    ----------
    type
        Qualified name of the exception type (``ValueError``,
        ``smtplib.SMTPDataError``).
    message
        ``str()`` of the exception.
    traceback
        The formatted traceback, when one was captured.
    step_id
        The step whose final attempt raised it, if any.
    """

    type: str
    message: str
    traceback: str = field(default="", repr=False, compare=False)
    step_id: str | None = None

    @classmethod
    def from_exception(
        cls, error: BaseException, step_id: str | None = None
    ) -> ErrorInfo:
        import traceback

        kind = type(error)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        text = "".join(traceback.format_exception(error))
        message = str(error)
        if isinstance(error, KeyError) and len(error.args) == 1:
            message = str(error.args[0])  # str(KeyError) adds quotes
        return cls(type=name, message=message, traceback=text, step_id=step_id)

    def to_exception(self) -> BaseException:
        """Rebuild an exception of the original type when it can be imported
        and built from the message; otherwise a :class:`StepFailedError`."""
        kind = _resolve_exception_type(self.type)
        if kind is not None:
            try:
                return kind(self.message)
            except Exception:
                pass
        where = f" in step {self.step_id!r}" if self.step_id else ""
        return StepFailedError(f"{self.type}{where}: {self.message}")

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def _resolve_exception_type(name: str) -> type[BaseException] | None:
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else builtins
        kind = getattr(module, attr)
    except (ImportError, AttributeError, ValueError):
        return None
    return kind if isinstance(kind, type) and issubclass(kind, BaseException) else None


@dataclass(frozen=True, kw_only=True)
class StepStatus:
    """One step of a run as seen in the store."""

    step_id: str
    task_name: str
    state: str  # "pending" or the state of the step's latest attempt
    attempts: int
    duration_s: float | None = None
    error: ErrorInfo | None = None  # the latest error, even if a retry succeeded


@dataclass(frozen=True, kw_only=True)
class WorkflowStatus:
    """The state of a run, as returned by ``run``, ``arun`` and ``status``.

    Attributes
    ----------
    run_id
        The run's id.
    workflow_name
        Name of the workflow the run executes.
    state
        A :class:`RunState`.
    output
        The decoded output of the last step, once completed.
    error
        The final error of a failed run (type, message, traceback).
    definition_hash
        Hash of the workflow definition the run was started with.
    steps
        Per-step state, in workflow order.
    wake_at_epoch
        When a waiting run is due, in seconds since the epoch.
    """

    run_id: str
    workflow_name: str
    state: RunState
    output: Any = None
    error: ErrorInfo | None = None
    definition_hash: str = ""
    steps: tuple[StepStatus, ...] = field(default=())
    wake_at_epoch: float | None = None

    @property
    def ok(self) -> bool:
        return self.state is RunState.COMPLETED

    def raise_for_error(self) -> None:
        """Raise the stored error of a failed run (its original type where
        possible); do nothing otherwise."""
        if self.error is not None and self.state is RunState.FAILED:
            raise self.error.to_exception()

    def _repr_html_(self) -> str:
        """State, output summary, error and the per-step table, escaped."""
        from .rich import status_html

        return status_html(self)

    def __repr__(self) -> str:
        extra = f", error={self.error}" if self.error else ""
        return (
            f"WorkflowStatus(run_id={self.run_id!r}, workflow={self.workflow_name!r}, "
            f"state={self.state.value}{extra})"
        )
