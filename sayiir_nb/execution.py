"""Executing one run: the step loop and the attempt loop.

For every step not yet checkpointed the attempt loop does, in order: record
the attempt's start, run the task with its deadline, persist the outcome
(checkpoint and progress in one transaction), and decide on a retry. The
start of an attempt that follows a commit directly is written in that
commit's transaction, so a step costs one transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .backends.base import (
    AttemptRecord,
    Backend,
    Checkpoint,
    Lease,
    RunSnapshot,
    RunUpdate,
    WriteBatch,
    with_update,
)
from .codec import Codec
from .errors import CodecError, UnenforceableTimeoutWarning
from .interrupt import INLINE, STOP
from .status import AttemptState, ErrorInfo, RunState
from .workflow import RunContext, Step, Workflow

logger = logging.getLogger(__name__)

_CONTEXT: contextvars.ContextVar[RunContext] = contextvars.ContextVar(
    "sayiir_nb_run_context"
)


def current_context() -> RunContext:
    """The :class:`RunContext` of the task being executed, for code that
    cannot take a ``ctx`` parameter.

    Raises
    ------
    LookupError
        When called outside a task run by a runner.
    """
    try:
        return _CONTEXT.get()
    except LookupError:
        raise LookupError(
            "current_context() was called outside a task run by a runner."
        ) from None


_INTERRUPTS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)
_FAILED = (AttemptState.FAILED, AttemptState.TIMED_OUT)
_SCALARS = frozenset({int, str, bool, type(None)})


def _finished(start: AttemptRecord, state: AttemptState, ended: float) -> AttemptRecord:
    """``start`` with its outcome (a faster ``dataclasses.replace``)."""
    return AttemptRecord(
        run_id=start.run_id,
        step_id=start.step_id,
        task_name=start.task_name,
        attempt=start.attempt,
        state=state,
        scheduled_epoch=start.scheduled_epoch,
        started_epoch=start.started_epoch,
        ended_epoch=ended,
        wait_before_s=start.wait_before_s,
        owner=start.owner,
    )


class StepFailed(Exception):
    """Internal: a step failed for good; carries the stored error."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(str(error))
        self.error = error


class RunStopped(BaseException):
    """Internal: the run was interrupted; carries what to record."""

    def __init__(self, cause: BaseException, attempt: WriteBatch | None) -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.attempt = attempt


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False


class _LazyOutputs(Mapping[str, Any]):
    """Outputs of earlier steps, decoded when first read."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._encoded: dict[str, str] = {}
        self._decoded: dict[str, Any] = {}

    def add(self, step_id: str, encoded: str, decoded: Any = ...) -> None:
        self._encoded[step_id] = encoded
        if decoded is not ...:
            self._decoded[step_id] = decoded

    def encoded(self, step_id: str) -> str:
        return self._encoded[step_id]

    def __getitem__(self, step_id: str) -> Any:
        if step_id not in self._decoded:
            self._decoded[step_id] = self._codec.decode(self._encoded[step_id])
        return self._decoded[step_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)


class RunExecution:
    """Executes the remaining steps of one run under one lease."""

    def __init__(
        self,
        *,
        backend: Backend,
        codec: Codec,
        workflow: Workflow,
        lease: Lease,
        snapshot: RunSnapshot,
        owner: str,
    ) -> None:
        self.backend = backend
        self.codec = codec
        self.workflow = workflow
        self.lease = lease
        self.snapshot = snapshot
        self.owner = owner
        self.run_id = snapshot.run.run_id
        self.outputs = _LazyOutputs(codec)
        self._input: Any = ...
        self._run = snapshot.run
        self._attempts = {(a.step_id, a.attempt): a for a in snapshot.attempts}
        self._stop = STOP.get()

    @property
    def input(self) -> Any:
        if self._input is ...:
            self._input = self.codec.decode(self.snapshot.run.input_json)
        return self._input

    async def execute(self) -> tuple[RunState, ErrorInfo | None]:
        """Run every pending step; return the final state and error.

        Raises ``KeyboardInterrupt``/``CancelledError`` after recording the
        run as interrupted.
        """
        steps = self.workflow.steps
        first = self._first_pending(steps)
        if first == len(steps):
            return self._finish_without_steps(steps)
        value = self.input if first == 0 else self.outputs[steps[first - 1].step_id]
        try:
            for index in range(first, len(steps)):
                history = self.snapshot.attempts if index == first else ()
                value = await self._run_step(
                    steps[index], value, history, index + 1 == len(steps)
                )
            return RunState.COMPLETED, None
        except StepFailed as failed:
            return RunState.FAILED, failed.error
        except RunStopped as stopped:
            self._record_interrupt(stopped.attempt)
            raise stopped.cause from None
        except (KeyboardInterrupt, asyncio.CancelledError):
            # forced while the engine itself ran (a second Ctrl-C): record the
            # stop if the store still answers; a resume tidies up the rest
            with contextlib.suppress(Exception):
                self._record_interrupt(None)
            raise

    def _first_pending(self, steps: tuple[Step, ...]) -> int:
        done = self.snapshot.checkpoints
        index = 0
        while index < len(steps) and steps[index].step_id in done:
            self.outputs.add(steps[index].step_id, done[steps[index].step_id])
            index += 1
        return index

    def _finish_without_steps(self, steps: tuple[Step, ...]) -> tuple[RunState, None]:
        encoded = self.snapshot.checkpoints[steps[-1].step_id]
        self._write(
            WriteBatch(run=RunUpdate(state=RunState.COMPLETED, output_json=encoded))
        )
        return RunState.COMPLETED, None

    async def _run_step(
        self,
        step: Step,
        value: Any,
        snapshot_attempts: tuple[AttemptRecord, ...],
        is_last: bool,
    ) -> Any:
        policy = step.task.options.retry
        failures, number, pending = 0, 0, None
        if snapshot_attempts:
            history = sorted(
                (a for a in snapshot_attempts if a.step_id == step.step_id),
                key=lambda a: a.attempt,
            )
            failures = sum(1 for a in history if a.state in _FAILED)
            number = max((a.attempt for a in history), default=0)
            if history and history[-1].state is AttemptState.SCHEDULED:
                pending = history[-1]

        while True:
            if self._stop is not None and self._stop.is_set():
                raise RunStopped(KeyboardInterrupt(), None)
            start, stored = await self._start(step, pending, number + 1)
            number, pending = start.attempt, None
            _log_attempt_start(start)

            outcome = await self._attempt(step, value, start, stored)
            if outcome.error is None:
                try:
                    encoded, value = self._stored_form(outcome.value)
                except Exception as error:
                    outcome = _Outcome(error=_refused(step, error))
                else:
                    return self._commit_success(
                        step, start, stored, value, encoded, is_last
                    )

            failures += 1
            ended = _ended(start, outcome)
            retry = not isinstance(outcome.error, CodecError) and policy.should_retry(
                outcome.error, failures
            )
            if not retry:
                self._commit_failure(step, ended, stored)
                raise StepFailed(ended.error)
            wait_s = policy.wait_before_retry_s(failures)
            pending = self._new_attempt(
                step, number + 1, AttemptState.SCHEDULED, wait_s
            )
            self._write(_batch(ended, stored, extra_inserts=(pending,)))
            _log_retry(ended, wait_s)

    async def _start(
        self, step: Step, pending: AttemptRecord | None, number: int
    ) -> tuple[AttemptRecord, bool]:
        """The record of the attempt about to start, and whether it is stored.

        A fresh attempt follows a durable write directly (the previous step's
        commit, the run's creation or its resumption), so its start is implied
        and costs no write. A retry starts after its backoff wait, so its
        start is written.
        """
        if pending is None:
            return self._new_attempt(step, number, AttemptState.RUNNING), False
        await self._wait_until(pending)
        start = replace(pending, state=AttemptState.RUNNING, started_epoch=time.time())
        self._write(WriteBatch(updates=(start,)))
        return start, True

    def _new_attempt(
        self, step: Step, number: int, state: AttemptState, wait_s: float = 0.0
    ) -> AttemptRecord:
        now = time.time()
        return AttemptRecord(
            run_id=self.run_id,
            step_id=step.step_id,
            task_name=step.task.name,
            attempt=number,
            state=state,
            scheduled_epoch=now + wait_s,
            started_epoch=now if state is AttemptState.RUNNING else None,
            wait_before_s=wait_s,
            owner=self.owner,
        )

    async def _wait_until(self, pending: AttemptRecord) -> None:
        delay = (pending.scheduled_epoch or 0) - time.time()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except _INTERRUPTS as error:
                raise RunStopped(error, None) from None

    async def _attempt(
        self, step: Step, value: Any, start: AttemptRecord, stored: bool
    ) -> _Outcome:
        ctx = RunContext(
            run_id=self.run_id,
            workflow_name=self.workflow.name,
            step_id=step.step_id,
            attempt=start.attempt,
            input=self.input,
            outputs=self.outputs,
        )
        token = _CONTEXT.set(ctx)
        try:
            return _Outcome(value=await _invoke(step, value, ctx))
        except TimeoutError as error:
            return _Outcome(
                error=error, timed_out=getattr(error, "_sayiir_deadline", False)
            )
        except Exception as error:
            return _Outcome(error=error)
        except _INTERRUPTS as error:
            ended = replace(
                start, state=AttemptState.INTERRUPTED, ended_epoch=time.time()
            )
            raise RunStopped(error, _batch(ended, stored)) from None
        finally:
            _CONTEXT.reset(token)

    def _stored_form(self, live: Any) -> tuple[str, Any]:
        """The output encoded, and the value the next step receives: read back
        from the encoded text, so that it is the same live and after a resume
        (and a value that cannot be read back is refused before it is
        stored). Immutable scalars come back as they went in."""
        encoded = self.codec.encode(live)
        return encoded, live if type(live) in _SCALARS else self.codec.decode(encoded)

    def _commit_success(
        self,
        step: Step,
        start: AttemptRecord,
        stored: bool,
        value: Any,
        encoded: str,
        is_last: bool,
    ) -> Any:
        now = time.time()
        done = _finished(start, AttemptState.SUCCEEDED, now)
        point = Checkpoint(
            run_id=self.run_id,
            step_id=step.step_id,
            output_json=encoded,
            created_epoch=now,
        )
        update = (
            RunUpdate(state=RunState.COMPLETED, output_json=encoded)
            if is_last
            else None
        )
        self._write(_batch(done, stored, checkpoint=point, run=update))
        _log_attempt_end(done)
        self.outputs.add(step.step_id, encoded, value)
        return value

    def _commit_failure(self, step: Step, ended: AttemptRecord, stored: bool) -> None:
        update = RunUpdate(state=RunState.FAILED, error=ended.error)
        self._write(_batch(ended, stored, run=update))
        logger.error(
            "step %s of run %s failed after %d attempt(s): %s",
            step.step_id,
            self.run_id,
            ended.attempt,
            ended.error,
            extra=_extra("step.failed", ended),
        )

    def _record_interrupt(self, batch: WriteBatch | None) -> None:
        batch = batch or WriteBatch()
        self._write(replace(batch, run=RunUpdate(state=RunState.INTERRUPTED)))

    def _write(self, batch: WriteBatch) -> None:
        self.backend.write(self.lease, batch)
        for attempt in (*batch.inserts, *batch.updates):
            self._attempts[(attempt.step_id, attempt.attempt)] = attempt
        if batch.run is not None:
            self._run = with_update(self._run, batch.run, time.time())

    def final_snapshot(self) -> RunSnapshot:
        """What this execution wrote, as the store now holds it."""
        checkpoints = {
            step_id: self.outputs.encoded(step_id) for step_id in self.outputs
        }
        ordered = tuple(self._attempts[key] for key in sorted(self._attempts))
        return RunSnapshot(run=self._run, checkpoints=checkpoints, attempts=ordered)


def _batch(
    attempt: AttemptRecord,
    stored: bool,
    *,
    extra_inserts: tuple[AttemptRecord, ...] = (),
    checkpoint: Checkpoint | None = None,
    run: RunUpdate | None = None,
) -> WriteBatch:
    """A batch that inserts ``attempt`` or, if ``stored``, replaces it."""
    if stored:
        return WriteBatch(
            updates=(attempt,), inserts=extra_inserts, checkpoint=checkpoint, run=run
        )
    return WriteBatch(inserts=(attempt, *extra_inserts), checkpoint=checkpoint, run=run)


LOST_PROCESS = "the process running this attempt stopped before it ended"
LOST_INTERRUPT = (
    "interrupted; the task did not return to Python within the grace period, "
    "so its late result is discarded"
)


def lost_attempts(
    snapshot: RunSnapshot, workflow: Workflow, reason: str = LOST_PROCESS
) -> WriteBatch:
    """Record the attempt a vanished owner left unfinished as interrupted.

    Applies to a run stored as running whose owner is gone (a crash, a kill,
    a kernel restart, an engine thread given up on). The unfinished attempt is
    either stored as running (a retry) or implied: a fresh attempt starts
    right after the previous step's commit without a write of its own.
    """
    run = snapshot.run
    if run.state is not RunState.RUNNING:
        return WriteBatch()
    pending = [s for s in workflow.steps if s.step_id not in snapshot.checkpoints]
    if not pending:
        return WriteBatch()
    step = pending[0]
    history = [a for a in snapshot.attempts if a.step_id == step.step_id]
    history.sort(key=lambda a: a.attempt)
    last = history[-1] if history else None
    if last is not None and last.state is AttemptState.SCHEDULED:
        return WriteBatch()
    if last is not None and last.state is AttemptState.RUNNING:
        return WriteBatch(updates=(replace(last, state=AttemptState.INTERRUPTED),))
    return WriteBatch(
        inserts=(
            AttemptRecord(
                run_id=run.run_id,
                step_id=step.step_id,
                task_name=step.task.name,
                attempt=(last.attempt if last else 0) + 1,
                state=AttemptState.INTERRUPTED,
                started_epoch=_implied_start(snapshot, workflow, step),
                error=ErrorInfo(
                    type="sayiir_nb.errors.ProcessLostError",
                    message=reason,
                    step_id=step.step_id,
                ),
            ),
        )
    )


def _implied_start(snapshot: RunSnapshot, workflow: Workflow, step: Step) -> float:
    index = workflow.index_of(step.step_id)
    if index > 0:
        previous = workflow.steps[index - 1].step_id
        ends = [
            a.ended_epoch
            for a in snapshot.attempts
            if a.step_id == previous
            and a.state is AttemptState.SUCCEEDED
            and a.ended_epoch
        ]
        if ends:
            return max(ends)
    return snapshot.run.updated_epoch


async def _invoke(step: Step, value: Any, ctx: RunContext) -> Any:
    task = step.task
    args = (value,) if task.takes_value else ()
    kwargs = {task.context_param: ctx} if task.context_param else {}
    timeout_s = task.options.timeout_s
    if task.is_async:
        if timeout_s is None:
            return await task.fn(*args, **kwargs)
        return await _with_deadline(task.fn(*args, **kwargs), timeout_s, task.name)
    if timeout_s is None:
        with INLINE.inline():
            return task.fn(*args, **kwargs)
    return await _in_thread(step, args, kwargs, timeout_s)


async def _with_deadline(coro: Any, timeout_s: float, name: str) -> Any:
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await coro
    except TimeoutError as error:
        if scope.expired():
            raise _deadline_error(name, timeout_s) from error
        raise


async def _in_thread(
    step: Step, args: tuple[Any, ...], kwargs: dict[str, Any], timeout_s: float
) -> Any:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = context.run(step.task.fn, *args, **kwargs)
        except BaseException as error:
            outcome = functools.partial(future.set_exception, error)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            outcome()  # refused once the runner gave up waiting: result discarded

    name = f"sayiir-task-{step.step_id}"
    threading.Thread(target=target, name=name, daemon=True).start()
    waiting = asyncio.wrap_future(future)
    done, _ = await asyncio.wait({waiting}, timeout=timeout_s)
    if waiting in done:
        return waiting.result()
    waiting.cancel()
    code = getattr(step.task.fn, "__code__", None)
    warnings.warn_explicit(
        UnenforceableTimeoutWarning(
            f"task {step.task.name!r} (step {step.step_id!r}) is still running after "
            f"its timeout of {timeout_s:g}s. Python cannot kill a thread, so it keeps "
            "running in the background and its late result will be discarded. Make "
            "the task async, or have it check its own deadline, to stop it for real."
        ),
        UnenforceableTimeoutWarning,
        filename=code.co_filename if code else __file__,
        lineno=code.co_firstlineno if code else 0,
        module=getattr(step.task.fn, "__module__", None) or __name__,
    )
    raise _deadline_error(step.task.name, timeout_s)


def _deadline_error(name: str, timeout_s: float) -> TimeoutError:
    error = TimeoutError(f"task {name!r} timed out after {timeout_s:g}s")
    error._sayiir_deadline = True  # type: ignore[attr-defined]
    return error


def _refused(step: Step, error: Exception) -> CodecError:
    if not isinstance(error, CodecError):
        error = CodecError(str(error), reason=f"{type(error).__name__}: {error}.")
    where = f"output{error.path}"
    if error.type_name:
        where += f" is of type {error.type_name};"
    message = (
        f"task {step.task.name!r} (step {step.step_id!r}) returned a value that "
        f"cannot be stored: {where} {error.reason or error} Nothing was stored "
        "for this attempt."
    )
    return CodecError(
        message, path=error.path, type_name=error.type_name, reason=error.reason
    )


def _ended(start: AttemptRecord, outcome: _Outcome) -> AttemptRecord:
    assert outcome.error is not None
    state = AttemptState.TIMED_OUT if outcome.timed_out else AttemptState.FAILED
    return replace(
        start,
        state=state,
        ended_epoch=time.time(),
        error=ErrorInfo.from_exception(outcome.error, step_id=start.step_id),
    )


def _extra(event: str, attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "event": event,
        "run_id": attempt.run_id,
        "step": attempt.step_id,
        "attempt": attempt.attempt,
    }


def _log_attempt_start(attempt: AttemptRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "attempt %d of step %s (run %s) started",
            attempt.attempt,
            attempt.step_id,
            attempt.run_id,
            extra=_extra("attempt.start", attempt),
        )


def _log_attempt_end(attempt: AttemptRecord) -> None:
    if logger.isEnabledFor(logging.INFO):
        took = (attempt.ended_epoch or 0) - (attempt.started_epoch or 0)
        logger.info(
            "attempt %d of step %s (run %s) %s in %.3fs",
            attempt.attempt,
            attempt.step_id,
            attempt.run_id,
            attempt.state.value,
            took,
            extra={**_extra("attempt.end", attempt), "duration_s": took},
        )


def _log_retry(attempt: AttemptRecord, wait_s: float) -> None:
    logger.warning(
        "attempt %d of step %s (run %s) %s: %s; retrying in %.3fs",
        attempt.attempt,
        attempt.step_id,
        attempt.run_id,
        attempt.state.value,
        attempt.error,
        wait_s,
        extra={**_extra("attempt.retry", attempt), "wait_s": wait_s},
    )
