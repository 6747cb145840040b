"""The library's exceptions and warnings.

Every error derives from :class:`SayiirError` and says what happened, names the
offending thing (task, step, run id, type, file) and what to do about it.
Errors raised by database drivers are translated at the backend boundary; the
driver's exception stays available as ``__cause__``.
"""

from __future__ import annotations


class SayiirError(Exception):
    """Base class of every error raised by sayiir-nb."""


class DefinitionError(SayiirError, ValueError):
    """A task or workflow was defined with an invalid option or structure."""


class DurationError(DefinitionError):
    """A duration could not be understood (for example ``"10 parsecs"``)."""


class CodecError(SayiirError, TypeError):
    """A value cannot be encoded for storage, or stored bytes cannot be decoded.

    Attributes
    ----------
    path
        Where in the value the problem is, for example ``output["rows"][3]``.
    type_name
        The qualified name of the offending type.
    reason
        Why the codec refused it and what to do.
    """

    def __init__(
        self, message: str, *, path: str = "", type_name: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.path = path
        self.type_name = type_name
        self.reason = reason


class RunConflictError(SayiirError):
    """A run id exists already with another input or another definition."""


class InputMismatchError(RunConflictError):
    """The run id exists with a different input."""


class DefinitionMismatchError(RunConflictError):
    """The run id was started by a workflow whose definition hash differs."""


class RunIdError(SayiirError, ValueError):
    """A run id is not a non-empty string of at most 200 characters."""


class RunNotFoundError(SayiirError, LookupError):
    """No run with that run id is in the backend."""


class RouteKeyError(SayiirError, KeyError):
    """A route's key function returned a key that is not one of its branches,
    and the route has no default."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LoopLimitError(SayiirError):
    """A loop reached its ``max_iterations`` without its ``until`` becoming
    true (with ``on_max="fail"``, the default)."""


class SignalTimeoutError(SayiirError, TimeoutError):
    """A wait for a signal timed out and has no default value."""


class RunFinishedError(SayiirError):
    """The run is completed, failed or cancelled; it cannot be cancelled or
    paused."""


class RunBusyError(SayiirError):
    """Another owner holds the run's lease and the caller chose not to wait."""


class LeaseLostError(SayiirError):
    """A write was refused because the writer no longer holds the run's lease.

    Another owner took the run over (its lease lapsed, or it was revoked); the
    refused write changed nothing.
    """


class ProcessLostError(SayiirError):
    """Recorded for an attempt whose process stopped before it ended (a
    crash, a kill, a kernel restart); the step runs again on resume."""


class BackendError(SayiirError):
    """The backend failed to read or write; the transaction was rolled back."""


class StoreLockedError(BackendError):
    """The DuckDB store file is held by another process."""


class StepFailedError(SayiirError):
    """Raised by :meth:`WorkflowStatus.raise_for_error` when the original
    exception type of a failed step cannot be rebuilt in this process."""


class SayiirWarning(UserWarning):
    """Advice for the user: shown under the cell in a notebook."""


class UnenforceableTimeoutWarning(SayiirWarning):
    """A synchronous task overran its timeout and its thread cannot be killed."""
