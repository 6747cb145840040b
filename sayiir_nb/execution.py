"""Executing one run: walking the workflow's nodes, and the attempt loop.

The walk visits every node in order. A step with a checkpoint is not run
again: its stored output is handed on (decoded only when something reads it).
For a step without one, the attempt loop does, in order: record the attempt's
start, run the task with its deadline, persist the outcome (checkpoint and
progress in one transaction), and decide on a retry. The first attempt of a
top-level step follows a commit directly, so its start is implied and a step
costs one transaction; inside branches, fan-outs and loops starts are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .attempt import invoke, log_attempt_end, log_attempt_start, log_extra, log_retry
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
from .errors import CodecError
from .events import Observers, RunEvent
from .interrupt import STOP
from .limits import limited
from .nodes import Node, Step
from .status import AttemptState, ErrorInfo, RunState
from .workflow import RunContext, Workflow

if TYPE_CHECKING:
    from .units import SharedSteps

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


class StepFailed(Exception):
    """Internal: a step failed for good; carries the stored error."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(str(error))
        self.error = error


class RunStopped(BaseException):
    """Internal: the run was interrupted (or cancelled); ``cause`` says how."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


class RunWaiting(Exception):
    """Internal: the run waits until ``wake_epoch`` (or for a signal)."""

    def __init__(self, wake_epoch: float | None) -> None:
        super().__init__(wake_epoch)
        self.wake_epoch = wake_epoch


class RunControlled(Exception):
    """Internal: a cancel or a pause was requested; ``state`` is the outcome."""

    def __init__(self, state: RunState) -> None:
        super().__init__(state.value)
        self.state = state


@dataclass(frozen=True)
class Scope:
    """Where a node runs: the prefix of its step ids, whether it is a
    top-level step (implied starts allowed), whether others run beside it
    (sync tasks then run in threads)."""

    prefix: str = ""
    top: bool = True
    concurrent: bool = False
    child_input: Any = None  # what a child workflow received (None: the run's)

    def inner(
        self, prefix: str, *, concurrent: bool | None = None, child_input: Any = None
    ) -> Scope:
        together = self.concurrent if concurrent is None else concurrent
        given = self.child_input if child_input is None else child_input
        return Scope(prefix=prefix, top=False, concurrent=together, child_input=given)


@dataclass(frozen=True)
class Stored:
    """The output of a step, passed on as a reference: whoever uses it gets a
    copy of its own (see :class:`_LazyOutputs`)."""

    step_id: str


_NOTHING = object()
_INPUT = Stored("")  # the run's input


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    ended_epoch: float | None = None


class _LazyOutputs(Mapping[str, Any]):
    """Outputs of the run's steps by step id, decoded when read.

    Every read gets its own copy, decoded from the stored text, so a task
    that changes a value it received changes nothing another step sees,
    live or after a resume. The copy made when a step's output was checked
    serves the first read.
    """

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._encoded: dict[str, str] = {}
        self._fresh: dict[str, Any] = {}
        self.derived: set[str] = set()

    def add(self, step_id: str, encoded: str, decoded: Any = ...) -> None:
        self._encoded[step_id] = encoded
        if decoded is not ...:
            self._fresh[step_id] = decoded

    def encoded(self, step_id: str) -> str:
        return self._encoded[step_id]

    def add_derived(self, node_id: str, encoded: str) -> None:
        """The output of a node that is not stored (a parallel's joined dict,
        a fan-out's list, a loop's or a child's last output), so that
        ``ctx.output`` finds it; not a checkpoint."""
        self._encoded[node_id] = encoded
        self.derived.add(node_id)

    def checkpoints(self) -> dict[str, str]:
        return {k: v for k, v in self._encoded.items() if k not in self.derived}

    def __getitem__(self, step_id: str) -> Any:
        fresh = self._fresh.pop(step_id, _NOTHING)
        if fresh is not _NOTHING:
            return fresh
        return self._codec.decode(self._encoded[step_id])

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._encoded

    def __iter__(self) -> Iterator[str]:
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)


class RunExecution:
    """Executes the remaining steps of one run under one lease.

    Parameters
    ----------
    control
        Returns ``CANCELLED`` or ``PAUSED`` when one was requested for the run;
        checked at every step boundary.
    inline_wait_s
        Delays and signal waits shorter than this wait in the process; longer
        ones end the call with a ``waiting`` run.
    park_after_s
        A retry whose backoff is longer than this ends the call with a
        ``waiting`` run instead of waiting in the process (``None``: always
        wait); workers use it so that a backoff does not hold a slot.
    shared
        Set by workers on a backend that shares steps between processes: the
        branches of a parallel and the items of a fan-out are then claimed by
        workers one by one instead of running here.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        codec: Codec,
        workflow: Workflow,
        lease: Lease,
        snapshot: RunSnapshot,
        owner: str,
        control: Callable[[], RunState | None] = lambda: None,
        inline_wait_s: float = 2.0,
        observers: Observers | None = None,
        park_after_s: float | None = None,
        shared: SharedSteps | None = None,
        lease_s: float = 30.0,
    ) -> None:
        self.backend = backend
        self.codec = codec
        self.workflow = workflow
        self.lease = lease
        self.snapshot = snapshot
        self.owner = owner
        self.run_id = snapshot.run.run_id
        self.control = control
        self.inline_wait_s = inline_wait_s
        self.observers = observers or Observers()
        self.park_after_s = park_after_s
        self.shared = shared
        self.lease_s = lease_s  # how long task-limit slots are held unrenewed
        self.outputs = _LazyOutputs(codec)
        for step_id, encoded in snapshot.checkpoints.items():
            self.outputs.add(step_id, encoded)
        self.history: dict[str, list[AttemptRecord]] = {}
        for attempt in snapshot.attempts:
            self.history.setdefault(attempt.step_id, []).append(attempt)
        for rows in self.history.values():
            rows.sort(key=lambda a: a.attempt)
        self._run = snapshot.run
        self._attempts = {(a.step_id, a.attempt): a for a in snapshot.attempts}
        self._stop = STOP.get()
        self._completed = False

    def reload(self) -> None:
        """Read the run's checkpoints and attempts again (after other workers
        ran parts of it)."""
        snapshot = self.backend.load(self.run_id)
        if snapshot is None:
            return
        for step_id, encoded in snapshot.checkpoints.items():
            if step_id not in self.outputs:
                self.outputs.add(step_id, encoded)
        self.history = {}
        for attempt in sorted(snapshot.attempts, key=lambda a: a.attempt):
            self.history.setdefault(attempt.step_id, []).append(attempt)
        self._attempts = {(a.step_id, a.attempt): a for a in snapshot.attempts}

    def value_of(self, value: Any) -> Any:
        """The value itself: a copy of a stored output or of the run's input."""
        if value is _INPUT:
            return self.codec.decode(self.snapshot.run.input_json)
        return self.outputs[value.step_id] if isinstance(value, Stored) else value

    async def execute(self) -> tuple[RunState, ErrorInfo | None]:
        """Run every pending node; return the run's new state and error.

        Raises ``KeyboardInterrupt``/``CancelledError`` after recording the
        run as interrupted (a requested cancel is returned, not raised).
        """
        try:
            value = await self.chain(self.workflow.steps, Scope(), _INPUT)
            if not self._completed:
                encoded = self.codec.encode(self.value_of(value))
                self.write(
                    WriteBatch(
                        run=RunUpdate(state=RunState.COMPLETED, output_json=encoded)
                    )
                )
            return RunState.COMPLETED, None
        except StepFailed as failed:
            self.write(
                WriteBatch(run=RunUpdate(state=RunState.FAILED, error=failed.error))
            )
            return RunState.FAILED, failed.error
        except RunWaiting as waiting:
            update = RunUpdate(state=RunState.WAITING, wake_epoch=waiting.wake_epoch)
            self.write(WriteBatch(run=update))
            return RunState.WAITING, None
        except RunControlled as controlled:
            self.write(WriteBatch(run=RunUpdate(state=controlled.state)))
            return controlled.state, None
        except RunStopped as stopped:
            return self._stopped(stopped.cause)
        except (KeyboardInterrupt, asyncio.CancelledError) as error:
            return self._stopped(error)

    def _stopped(self, cause: BaseException) -> tuple[RunState, None]:
        """Record an interrupt (or a requested cancel) and re-raise it."""
        requested = self.control()
        state = (
            RunState.CANCELLED
            if requested is RunState.CANCELLED
            else RunState.INTERRUPTED
        )
        with contextlib.suppress(Exception):
            self.write(WriteBatch(run=RunUpdate(state=state)))
        if state is RunState.CANCELLED and isinstance(cause, asyncio.CancelledError):
            return state, None
        raise cause

    async def chain(self, nodes: tuple[Node, ...], scope: Scope, value: Any) -> Any:
        """Run nodes one after the other, each on the previous one's output."""
        from .composites import run_node

        last = len(nodes) - 1
        for index, node in enumerate(nodes):
            self.check_control()
            if isinstance(node, Step):
                # a first attempt's start is implied only right after a commit
                implied = scope.top and (
                    index == 0 or isinstance(nodes[index - 1], Step)
                )
                value = await self.task_step(
                    node, scope, value, scope.top and index == last, implied=implied
                )
            else:
                value = await run_node(self, node, scope, value)
        return value

    def check_control(self) -> None:
        """Stop at a step boundary if an interrupt, cancel or pause is asked."""
        if self._stop is not None and self._stop.is_set():
            raise RunStopped(KeyboardInterrupt())
        requested = self.control()
        if requested is not None:
            raise RunControlled(requested)

    async def task_step(
        self,
        step: Step,
        scope: Scope,
        value: Any,
        is_last: bool,
        step_id: str = "",
        *,
        implied: bool = False,
    ) -> Any:
        """Run one task step (unless checkpointed, or failed for good) with
        its retries."""
        step_id = step_id or scope.prefix + step.step_id
        if step_id in self.outputs:
            return Stored(step_id)
        history = self.history.get(step_id, ())
        if history and history[-1].state in _FAILED and history[-1].error is not None:
            raise StepFailed(history[-1].error)  # no retry was scheduled after it
        failures = sum(1 for a in history if a.state in _FAILED)
        number = history[-1].attempt if history else 0
        pending = (
            history[-1]
            if history and history[-1].state is AttemptState.SCHEDULED
            else None
        )
        value = self.value_of(value)

        while True:
            self.check_control()
            async with contextlib.AsyncExitStack() as limits:
                start, stored = await self._start(
                    step, step_id, pending, number + 1, implied, limits
                )
                number, pending = start.attempt, None
                log_attempt_start(start)
                if self.observers:
                    self._tell("attempt.start", start)
                outcome = await self._attempt(
                    step, step_id, value, start, stored, scope
                )
                outcome.ended_epoch = time.time()  # before its limits are freed
            if outcome.error is None:
                try:
                    encoded, result = self._stored_form(outcome.value)
                except Exception as error:
                    outcome = _Outcome(error=_refused(step, step_id, error))
                else:
                    return self._commit_success(
                        step_id,
                        start,
                        stored,
                        result,
                        encoded,
                        is_last,
                        outcome.ended_epoch,
                    )

            failures += 1
            pending = self._failed(step, start, stored, outcome, failures)

    def _failed(
        self,
        step: Step,
        start: AttemptRecord,
        stored: bool,
        outcome: _Outcome,
        failures: int,
    ) -> AttemptRecord:
        """Persist a failed attempt; return the retry it schedules, or raise
        ``StepFailed`` when the step has no retry left."""
        policy = step.task.options.retry
        ended = _ended(start, outcome)
        retry = not isinstance(outcome.error, CodecError) and policy.should_retry(
            outcome.error, failures
        )
        if not retry:
            self.write(_batch(ended, stored))
            _log_failure(ended)
            if self.observers:
                self._tell("attempt.end", ended)
            raise StepFailed(ended.error)
        wait_s = policy.wait_before_retry_s(failures)
        pending = self.new_attempt(
            start.step_id,
            step.task.name,
            start.attempt + 1,
            AttemptState.SCHEDULED,
            wait_s,
        )
        self.write(_batch(ended, stored, extra_inserts=(pending,)))
        log_retry(ended, wait_s)
        if self.observers:
            self._tell("attempt.retry", ended, wait_s=wait_s)
        return pending

    async def _start(
        self,
        step: Step,
        step_id: str,
        pending: AttemptRecord | None,
        number: int,
        implied: bool,
        limits: contextlib.AsyncExitStack,
    ) -> tuple[AttemptRecord, bool]:
        """The record of the attempt about to start, and whether it is stored.

        A fresh top-level attempt follows a durable write directly (the
        previous step's commit, the run's creation or its resumption), so its
        start is implied and costs no write. Elsewhere, and for a retry after
        its backoff wait, the start is written. The task's limits are waited
        for (and held in ``limits``) after the backoff and before the start,
        so the wait is not counted as the attempt's time.
        """
        if pending is None:
            await limits.enter_async_context(
                limited(
                    self.backend,
                    step.task,
                    self.owner,
                    self.lease_s,
                    step=(self.run_id, step_id),
                )
            )
            self.check_control()  # a cancel may have come during the wait
            start = self.new_attempt(
                step_id, step.task.name, number, AttemptState.RUNNING
            )
            if implied:
                return start, False
            self.write(WriteBatch(inserts=(start,)))
            return start, True
        due = pending.scheduled_epoch or 0
        if self.park_after_s is not None and due - time.time() > self.park_after_s:
            raise RunWaiting(due)
        await self.sleep_until(due)
        self.check_control()  # a cancel may have come during the backoff
        await limits.enter_async_context(
            limited(
                self.backend,
                step.task,
                self.owner,
                self.lease_s,
                step=(self.run_id, step_id),
            )
        )
        self.check_control()
        start = replace(pending, state=AttemptState.RUNNING, started_epoch=time.time())
        self.write(WriteBatch(updates=(start,)))
        return start, True

    def new_attempt(
        self,
        step_id: str,
        task_name: str,
        number: int,
        state: AttemptState,
        wait_s: float = 0.0,
    ) -> AttemptRecord:
        now = time.time()
        return AttemptRecord(
            run_id=self.run_id,
            step_id=step_id,
            task_name=task_name,
            attempt=number,
            state=state,
            scheduled_epoch=now + wait_s,
            started_epoch=now if state is AttemptState.RUNNING else None,
            wait_before_s=wait_s,
            owner=self.owner,
        )

    async def sleep_until(self, epoch: float) -> None:
        """Wait until ``epoch``; an interrupt stops the run."""
        delay = epoch - time.time()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except _INTERRUPTS as error:
                raise RunStopped(error) from None

    async def _attempt(
        self,
        step: Step,
        step_id: str,
        value: Any,
        start: AttemptRecord,
        stored: bool,
        scope: Scope,
    ) -> _Outcome:
        ctx = RunContext(
            run_id=self.run_id,
            workflow_name=self.workflow.name,
            step_id=step_id,
            attempt=start.attempt,
            input=functools.partial(
                self.value_of,
                _INPUT if scope.child_input is None else scope.child_input[0],
            ),
            outputs=self.outputs,
        )
        token = _CONTEXT.set(ctx)
        try:
            result = await invoke(
                step.task, step_id, value, ctx, in_thread=scope.concurrent
            )
            return _Outcome(value=result)
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
            with contextlib.suppress(Exception):
                self.write(_batch(ended, stored))
            raise RunStopped(error) from None
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
        step_id: str,
        start: AttemptRecord,
        stored: bool,
        value: Any,
        encoded: str,
        is_last: bool,
        ended_epoch: float | None = None,
    ) -> Any:
        now = time.time()
        done = _finished(start, AttemptState.SUCCEEDED, ended_epoch or now)
        point = Checkpoint(
            run_id=self.run_id, step_id=step_id, output_json=encoded, created_epoch=now
        )
        update = (
            RunUpdate(state=RunState.COMPLETED, output_json=encoded)
            if is_last
            else None
        )
        self.write(_batch(done, stored, checkpoint=point, run=update))
        self._completed = is_last
        log_attempt_end(done)
        if self.observers:
            self._tell("attempt.end", done)
        self.outputs.add(step_id, encoded, value)
        return Stored(step_id)

    def record_instant(
        self,
        step_id: str,
        label: str,
        encoded: str,
        *,
        consume_signal: str | None = None,
    ) -> None:
        """Store the checkpoint of a step that is not a task (a route's key,
        a delay, a signal) with its one succeeded attempt."""
        done, stored = self._instant(step_id, label, AttemptState.SUCCEEDED)
        point = Checkpoint(
            run_id=self.run_id,
            step_id=step_id,
            output_json=encoded,
            created_epoch=done.ended_epoch or time.time(),
        )
        self.write(
            _batch(done, stored, checkpoint=point, consume_signal=consume_signal)
        )
        self.outputs.add(step_id, encoded)

    def record_failure(
        self, step_id: str, label: str, error: BaseException, message: str
    ) -> None:
        """Store a failed attempt of a non-task step and fail the run."""
        info = replace(
            ErrorInfo.from_exception(error, step_id=step_id), message=message
        )
        failed, stored = self._instant(step_id, label, AttemptState.FAILED, info)
        self.write(_batch(failed, stored))
        _log_failure(failed)
        raise StepFailed(info)

    def _instant(
        self,
        step_id: str,
        label: str,
        state: AttemptState,
        error: ErrorInfo | None = None,
    ) -> tuple[AttemptRecord, bool]:
        """The ended attempt of a non-task step, and whether it is stored
        already (a delay or a wait stores its start when first reached)."""
        now = time.time()
        history = self.history.get(step_id, ())
        previous = history[-1] if history else None
        waiting = previous is not None and previous.state is AttemptState.SCHEDULED
        if waiting and previous is not None:
            return replace(previous, state=state, ended_epoch=now, error=error), True
        record = AttemptRecord(
            run_id=self.run_id,
            step_id=step_id,
            task_name=label,
            attempt=previous.attempt + 1 if previous else 1,
            state=state,
            scheduled_epoch=now,
            started_epoch=now,
            ended_epoch=now,
            error=error,
            owner=self.owner,
        )
        return record, False

    def _tell(
        self, kind: str, attempt: AttemptRecord, wait_s: float | None = None
    ) -> None:
        duration = None
        if attempt.started_epoch is not None and attempt.ended_epoch is not None:
            duration = attempt.ended_epoch - attempt.started_epoch
        self.observers.emit(
            RunEvent(
                kind=kind,
                run_id=self.run_id,
                step_id=attempt.step_id,
                task_name=attempt.task_name,
                attempt=attempt.attempt,
                state=attempt.state.value,
                duration_s=duration,
                wait_s=wait_s,
                error=attempt.error,
            )
        )

    def write(self, batch: WriteBatch) -> None:
        self.backend.write(self.lease, batch)
        for attempt in (*batch.inserts, *batch.updates):
            self._attempts[(attempt.step_id, attempt.attempt)] = attempt
            rows = self.history.setdefault(attempt.step_id, [])
            if rows and rows[-1].attempt == attempt.attempt:
                rows[-1] = attempt
            else:
                rows.append(attempt)
        if batch.run is not None:
            self._run = with_update(self._run, batch.run, time.time())

    def final_snapshot(self) -> RunSnapshot:
        """What this execution wrote, as the store now holds it."""
        checkpoints = self.outputs.checkpoints()
        ordered = sorted(
            self._attempts.values(),
            key=lambda a: (
                a.started_epoch or a.scheduled_epoch or 0.0,
                a.step_id,
                a.attempt,
            ),
        )
        return RunSnapshot(
            run=self._run, checkpoints=checkpoints, attempts=tuple(ordered)
        )


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


def _batch(
    attempt: AttemptRecord,
    stored: bool,
    *,
    extra_inserts: tuple[AttemptRecord, ...] = (),
    checkpoint: Checkpoint | None = None,
    run: RunUpdate | None = None,
    consume_signal: str | None = None,
) -> WriteBatch:
    """A batch that inserts ``attempt`` or, if ``stored``, replaces it."""
    if stored:
        return WriteBatch(
            updates=(attempt,),
            inserts=extra_inserts,
            checkpoint=checkpoint,
            run=run,
            consume_signal=consume_signal,
        )
    return WriteBatch(
        inserts=(attempt, *extra_inserts),
        checkpoint=checkpoint,
        run=run,
        consume_signal=consume_signal,
    )


def _refused(step: Step, step_id: str, error: Exception) -> CodecError:
    if not isinstance(error, CodecError):
        error = CodecError(str(error), reason=f"{type(error).__name__}: {error}.")
    where = f"output{error.path}"
    if error.type_name:
        where += f" is of type {error.type_name};"
    message = (
        f"task {step.task.name!r} (step {step_id!r}) returned a value that "
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
        ended_epoch=outcome.ended_epoch or time.time(),
        error=ErrorInfo.from_exception(outcome.error, step_id=start.step_id),
    )


def _log_failure(ended: AttemptRecord) -> None:
    logger.error(
        "step %s of run %s failed after %d attempt(s): %s",
        ended.step_id,
        ended.run_id,
        ended.attempt,
        ended.error,
        extra=log_extra("step.failed", ended),
    )
