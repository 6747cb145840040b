"""Calling a task once: in the runner's thread, in a thread of its own, or on
the event loop, with the attempt's deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import warnings
from typing import Any

from .backends.base import AttemptRecord
from .errors import UnenforceableTimeoutWarning
from .interrupt import INLINE
from .tasks import Task
from .workflow import RunContext

logger = logging.getLogger("sayiir_nb.execution")


async def invoke(
    task: Task, step_id: str, value: Any, ctx: RunContext, *, in_thread: bool
) -> Any:
    """Call the task once with its deadline.

    Async tasks run on the loop (cancelled at the deadline). Sync tasks run
    in the runner's thread when they have no timeout and nothing else runs
    beside them (``in_thread`` false), and in a thread of their own otherwise.
    """
    args = (value,) if task.takes_value else ()
    kwargs = {task.context_param: ctx} if task.context_param else {}
    timeout_s = task.options.timeout_s
    if task.is_async:
        if timeout_s is None:
            return await task.fn(*args, **kwargs)
        return await _with_deadline(task.fn(*args, **kwargs), timeout_s, task.name)
    if timeout_s is None and not in_thread:
        with INLINE.inline():
            return task.fn(*args, **kwargs)
    return await _in_thread(task, step_id, args, kwargs, timeout_s)


async def _with_deadline(coro: Any, timeout_s: float, name: str) -> Any:
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await coro
    except TimeoutError as error:
        if scope.expired():
            raise _deadline_error(name, timeout_s) from error
        raise


async def _in_thread(
    task: Task,
    step_id: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout_s: float | None,
) -> Any:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(task.fn, *args, **kwargs)
        except BaseException as error:
            outcome = functools.partial(future.set_exception, error)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outcome()  # refused once the runner gave up waiting: result discarded

    name = f"sayiir-task-{step_id}"
    threading.Thread(target=target, name=name, daemon=True).start()
    waiting = asyncio.wrap_future(future)
    done, _ = await asyncio.wait({waiting}, timeout=timeout_s)
    if waiting in done:
        return waiting.result()
    waiting.cancel()
    assert timeout_s is not None  # without a deadline the wait ends when done
    code = getattr(task.fn, "__code__", None)
    warnings.warn_explicit(
        UnenforceableTimeoutWarning(
            f"task {task.name!r} (step {step_id!r}) is still running after "
            f"its timeout of {timeout_s:g}s. Python cannot kill a thread, so it keeps "
            "running in the background and its late result will be discarded. Make "
            "the task async, or have it check its own deadline, to stop it for real."
        ),
        UnenforceableTimeoutWarning,
        filename=code.co_filename if code else __file__,
        lineno=code.co_firstlineno if code else 0,
        module=getattr(task.fn, "__module__", None) or __name__,
    )
    raise _deadline_error(task.name, timeout_s)


def _deadline_error(name: str, timeout_s: float) -> TimeoutError:
    error = TimeoutError(f"task {name!r} timed out after {timeout_s:g}s")
    error._sayiir_deadline = True  # type: ignore[attr-defined]
    return error


def log_extra(event: str, attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "event": event,
        "run_id": attempt.run_id,
        "step": attempt.step_id,
        "attempt": attempt.attempt,
    }


def log_attempt_start(attempt: AttemptRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "attempt %d of step %s (run %s) started",
            attempt.attempt,
            attempt.step_id,
            attempt.run_id,
            extra=log_extra("attempt.start", attempt),
        )


def log_attempt_end(attempt: AttemptRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        took = (attempt.ended_epoch or 0) - (attempt.started_epoch or 0)
        logger.info(
            "attempt %d of step %s (run %s) %s in %.3fs",
            attempt.attempt,
            attempt.step_id,
            attempt.run_id,
            attempt.state.value,
            took,
            extra={**log_extra("attempt.end", attempt), "duration_s": took},
        )


def log_retry(attempt: AttemptRecord, wait_s: float) -> None:
    logger.warning(
        "attempt %d of step %s (run %s) %s: %s; retrying in %.3fs",
        attempt.attempt,
        attempt.step_id,
        attempt.run_id,
        attempt.state.value,
        attempt.error,
        wait_s,
        extra={**log_extra("attempt.retry", attempt), "wait_s": wait_s},
    )
