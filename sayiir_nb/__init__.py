"""sayiir-nb: durable, checkpointed task pipelines that are at home in Jupyter.

The public names are listed in ``__all__``; they load on first use so that
``import sayiir_nb`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# Libraries leave handlers to applications; this only keeps Python's fallback
# handler from printing our records when the application configured none.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

_EXPORTS = {
    "task": "tasks",
    "Task": "tasks",
    "RetryPolicy": "tasks",
    "Flow": "workflow",
    "MISSING": "nodes",
    "Workflow": "workflow",
    "RunContext": "workflow",
    "JsonCodec": "codec",
    "Codec": "codec",
    "InMemoryBackend": "backends.memory",
    "DuckDBBackend": "backends.duckdb",
    "PostgresBackend": "backends.postgres",
    "PooledWorker": "worker",
    "enqueue": "queue",
    "Backend": "backends.base",
    "CheckpointingRunner": "runner",
    "default_store_path": "runner",
    "WorkflowStatus": "status",
    "StepStatus": "status",
    "RunState": "status",
    "AttemptState": "status",
    "ErrorInfo": "status",
    "TaskRegistry": "registry",
    "WorkflowRegistry": "registry",
    "History": "history",
    "current_context": "execution",
    "RunFinishedError": "errors",
    "RouteKeyError": "errors",
    "LoopLimitError": "errors",
    "SignalTimeoutError": "errors",
    "RunBusyError": "errors",
    "ProcessLostError": "errors",
    "SayiirError": "errors",
    "DefinitionError": "errors",
    "DurationError": "errors",
    "CodecError": "errors",
    "RunConflictError": "errors",
    "InputMismatchError": "errors",
    "DefinitionMismatchError": "errors",
    "RunNotFoundError": "errors",
    "RunIdError": "errors",
    "LeaseLostError": "errors",
    "BackendError": "errors",
    "StoreLockedError": "errors",
    "StepFailedError": "errors",
    "SayiirWarning": "errors",
    "UnenforceableTimeoutWarning": "errors",
}

__all__ = [
    "MISSING",
    "AttemptState",
    "Backend",
    "BackendError",
    "CheckpointingRunner",
    "Codec",
    "CodecError",
    "DefinitionError",
    "DefinitionMismatchError",
    "DuckDBBackend",
    "DurationError",
    "ErrorInfo",
    "Flow",
    "History",
    "InMemoryBackend",
    "InputMismatchError",
    "JsonCodec",
    "LeaseLostError",
    "LoopLimitError",
    "PooledWorker",
    "PostgresBackend",
    "ProcessLostError",
    "RetryPolicy",
    "RouteKeyError",
    "RunBusyError",
    "RunConflictError",
    "RunContext",
    "RunFinishedError",
    "RunIdError",
    "RunNotFoundError",
    "RunState",
    "SayiirError",
    "SayiirWarning",
    "SignalTimeoutError",
    "StepFailedError",
    "StepStatus",
    "StoreLockedError",
    "Task",
    "TaskRegistry",
    "UnenforceableTimeoutWarning",
    "Workflow",
    "WorkflowRegistry",
    "WorkflowStatus",
    "current_context",
    "default_store_path",
    "enqueue",
    "task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sayiir_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .backends.base import Backend
    from .backends.duckdb import DuckDBBackend
    from .backends.memory import InMemoryBackend
    from .backends.postgres import PostgresBackend
    from .codec import Codec, JsonCodec
    from .errors import (
        BackendError,
        CodecError,
        DefinitionError,
        DefinitionMismatchError,
        DurationError,
        InputMismatchError,
        LeaseLostError,
        LoopLimitError,
        ProcessLostError,
        RouteKeyError,
        RunBusyError,
        RunConflictError,
        RunFinishedError,
        RunIdError,
        RunNotFoundError,
        SayiirError,
        SayiirWarning,
        SignalTimeoutError,
        StepFailedError,
        StoreLockedError,
        UnenforceableTimeoutWarning,
    )
    from .execution import current_context
    from .history import History
    from .nodes import MISSING
    from .queue import enqueue
    from .registry import TaskRegistry, WorkflowRegistry
    from .runner import CheckpointingRunner, default_store_path
    from .status import AttemptState, ErrorInfo, RunState, StepStatus, WorkflowStatus
    from .tasks import RetryPolicy, Task, task
    from .worker import PooledWorker
    from .workflow import Flow, RunContext, Workflow
