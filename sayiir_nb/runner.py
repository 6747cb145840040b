"""The checkpointing runner: the public entry point for running workflows."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.base import (
    Backend,
    Lease,
    RunRecord,
    RunSnapshot,
    RunUpdate,
    WriteBatch,
    applied,
)
from .codec import Codec, JsonCodec
from .duration import Duration, to_seconds
from .errors import (
    DefinitionError,
    DefinitionMismatchError,
    LeaseLostError,
    RunBusyError,
    RunFinishedError,
    RunNotFoundError,
    SayiirWarning,
)
from .events import Observer, Observers, RunEvent
from .heartbeat import Heartbeat

if TYPE_CHECKING:
    from .live import RunView
    from .units import SharedSteps
from .execution import RunExecution
from .interrupt import has_running_loop, run_here, run_in_thread
from .queue import check_compatible, check_run_id, encode_value, input_digest
from .recovery import LOST_INTERRUPT, lost_attempts
from .registry import WorkflowRegistry
from .status import ErrorInfo, RunState, WorkflowStatus
from .steps import step_statuses
from .units import without_live_units
from .workflow import Workflow

if TYPE_CHECKING:
    from .history import History

logger = logging.getLogger(__name__)

DEFAULT_STORE = "sayiir_nb.duckdb"
_LEASE_S = 30.0
_TELL_WAITING_S = 5.0  # waiting longer than this for a run's lease is said
_QUEUED = (RunState.PENDING, RunState.RUNNING, RunState.WAITING)
STORE_ENV = "SAYIIR_NB_STORE"


def default_store_path() -> Path:
    """Where ``CheckpointingRunner()`` keeps its DuckDB file: the path in the
    ``SAYIIR_NB_STORE`` environment variable, else ``sayiir_nb.duckdb`` in the
    current working directory (for a notebook, the notebook's folder)."""
    return Path(os.environ.get(STORE_ENV) or Path.cwd() / DEFAULT_STORE).resolve()


class CheckpointingRunner:
    """Runs workflows step by step, checkpointing every completed step.

    Parameters
    ----------
    backend
        Where runs live. By default a :class:`~sayiir_nb.DuckDBBackend` on
        :func:`default_store_path`, so checkpoints survive a kernel restart.
    codec
        How inputs and outputs are stored; :class:`~sayiir_nb.JsonCodec` by
        default.
    workflows
        A registry the runner adds every workflow it runs to.
    interrupt_grace_s
        After an interrupt, how long to wait for a sync task to give control
        back before the run is marked interrupted without it.
    inline_wait
        Delays and waits for signals up to this long (2 s by default) wait in
        the process; longer ones end the call with a ``waiting`` status, and
        the run continues when it is run again once due.

    Notes
    -----
    Steps run at least once: a completed step never runs again for its run,
    but a step interrupted mid-way (crash, kill, kernel restart) runs again
    from its start when the run is resumed.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        codec: Codec | None = None,
        workflows: WorkflowRegistry | None = None,
        interrupt_grace_s: float = 1.0,
        inline_wait: Duration = 2.0,
    ) -> None:
        if backend is None:
            from .backends.duckdb import DuckDBBackend

            backend = DuckDBBackend(default_store_path())
        self.backend = backend
        self.codec = codec or JsonCodec()
        self.workflows = workflows if workflows is not None else WorkflowRegistry()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interrupt_grace_s = interrupt_grace_s
        self.inline_wait_s = to_seconds(inline_wait, what="inline_wait")
        self._calls = itertools.count(1)
        self._requests: dict[str, RunState] = {}
        self.observers = Observers()
        self._active: dict[
            str, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any] | None]
        ] = {}
        self._beat: Heartbeat | None = None
        self.lease_s = _LEASE_S  # of task-limit slots (a worker sets its own)

    def __repr__(self) -> str:
        return f"CheckpointingRunner({self.backend!r})"

    def run(
        self,
        workflow: Workflow,
        run_id: str,
        input: Any = None,
        *,
        restart: bool = False,
        show: bool = False,
    ) -> WorkflowStatus:
        """Run (or resume) ``run_id`` of ``workflow`` and wait for its end.

        Works in plain scripts and inside a running event loop (a notebook
        cell): there the engine runs on a helper thread, and async tasks run
        on that thread's loop; use ``await runner.arun(...)`` for async tasks
        that need objects bound to the notebook's loop.

        Parameters
        ----------
        run_id
            The run's id. A completed run id returns its stored result without
            running anything; an interrupted or crashed one resumes.
        input
            The input of the first step. A run id that exists with another
            input is refused with :class:`InputMismatchError`.
        restart
            Discard the run's checkpoints and history and start it over (also
            allowed when the input or the definition changed).
        show
            Show the run while it goes: a live view in a notebook, progress
            lines on stderr elsewhere.

        Raises
        ------
        KeyboardInterrupt
            When interrupted; the run is then recorded as interrupted and
            resumes on the next call.
        """

        def make() -> Any:
            return self.arun(workflow, run_id, input, restart=restart)

        if not show:
            return self._wait_for(make, run_id)
        shown = self._show(workflow, run_id)
        try:
            return self._wait_for(make, run_id)
        finally:
            shown()

    def _show(self, workflow: Workflow, run_id: str) -> Callable[[], None]:
        """Start showing a run: a live view in a notebook, progress lines on
        stderr elsewhere; return what stops the progress lines."""
        from .live import TextProgress, in_notebook

        check_run_id(run_id)
        self.workflows.register(workflow)
        if in_notebook():
            from IPython.display import display

            view = self.view(run_id, workflow)
            display(view)

            def done() -> None:
                # the view keeps showing the end; a waiting run keeps its control
                if view.model.waiting_for is None:
                    view.close()

            return done
        progress = self.observe(TextProgress(run_id))
        return lambda: self.unobserve(progress)

    def _wait_for(self, make: Any, run_id: str) -> WorkflowStatus:
        """Run the coroutine ``make()`` to its end from sync code."""
        if not has_running_loop():
            return run_here(make, grace_s=self.interrupt_grace_s)
        return run_in_thread(
            make,
            name=f"sayiir-run-{run_id}",
            grace_s=self.interrupt_grace_s,
            abandon=lambda: self._abandon(run_id),
        )

    async def arun(
        self,
        workflow: Workflow,
        run_id: str,
        input: Any = None,
        *,
        restart: bool = False,
        show: bool = False,
    ) -> WorkflowStatus:
        """The async form of :meth:`run`; async tasks run on the caller's loop
        (in a notebook: the kernel's, so they can use objects of other cells).
        ``show=True`` shows the live view (or progress lines) as ``run`` does."""
        if show:
            shown = self._show(workflow, run_id)
            try:
                return await self.arun(workflow, run_id, input, restart=restart)
            finally:
                shown()
        check_run_id(run_id)
        self.workflows.register(workflow)
        input_json = self._encode(input, f"the input of run {run_id!r}", "input")
        digest = input_digest(input_json)
        record = self._new_record(workflow, run_id, input_json, digest)

        # The lease comes first: whoever holds it is the only caller that may
        # create, resume or execute the run.
        lease = await self._claim(run_id)
        beating = self._heartbeat().holding(lease)
        beating.__enter__()
        try:
            created = False
            if not restart:
                stored, created = self.backend.create_run(record)
                if not created:
                    self._check_compatible(workflow, stored, input_json, digest)
                    if _stays(stored.state):
                        return self._status(run_id, workflow)
            return await self._execute_claimed(
                workflow, lease, record, restart, created
            )
        except LeaseLostError:
            logger.warning(
                "run %s was taken over by another owner; this call stops",
                run_id,
                extra={"event": "run.lease_lost", "run_id": run_id},
            )
            return self._status(run_id, workflow)
        finally:
            beating.__exit__(None, None, None)
            self.backend.release(lease)

    def status(self, run_id: str) -> WorkflowStatus:
        """The stored state of ``run_id``, without running anything.

        Raises
        ------
        RunNotFoundError
            If no run has that id in this backend.
        """
        workflow = None
        run = self.backend.get_run(run_id)
        if run is not None and run.workflow_name in self.workflows:
            workflow = self.workflows.get(run.workflow_name)
        return self._status(run_id, workflow)

    def send_signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to a run.

        The signal is stored at once: a run that waits for it takes it when it
        runs next (within the same call if it is waiting in this process), and
        a signal sent before the run reaches its wait is kept for it, and
        consumed once. With DuckDB, signals come from the process that holds
        the store file (any thread or notebook cell).

        Raises
        ------
        RunNotFoundError, RunFinishedError
            If no run has that id, or it is completed, failed or cancelled.
        CodecError
            If the payload cannot be stored.
        """
        _check_signal_name(name)
        run = self._existing(run_id)
        if run.state.is_finished:
            raise RunFinishedError(
                f"cannot send signal {name!r} to run {run_id!r}: it is "
                f"{run.state.value} already."
            )
        payload_json = self._encode(
            payload, f"the payload of signal {name!r} for run {run_id!r}", "payload"
        )
        self.backend.send_signal(run_id, name, payload_json)
        logger.info(
            "signal %s sent to run %s",
            name,
            run_id,
            extra={"event": "signal.sent", "run_id": run_id, "signal": name},
        )

    def cancel(self, run_id: str) -> WorkflowStatus:
        """Cancel a run: at its next step boundary if it is executing here
        (async tasks it awaits are cancelled at once), immediately otherwise.
        A cancelled run stays cancelled.

        Raises
        ------
        RunNotFoundError, RunFinishedError
            For an unknown run, or one that is completed, failed or cancelled.
        """
        return self._control(run_id, RunState.CANCELLED)

    def pause(self, run_id: str) -> WorkflowStatus:
        """Pause a run at its next step boundary (or at once if it is not
        executing). Running it does nothing until :meth:`unpause`."""
        return self._control(run_id, RunState.PAUSED)

    def unpause(self, run_id: str) -> WorkflowStatus:
        """Make a paused run resumable; the next ``run`` continues it from
        where it stopped (and a worker may pick it up)."""
        run = self._existing(run_id)
        if run.state is not RunState.PAUSED:
            raise RunFinishedError(
                f"run {run_id!r} is {run.state.value}, not paused; only a paused "
                "run can be unpaused."
            )
        self._write_state(
            run_id, RunUpdate(state=RunState.WAITING, wake_epoch=time.time())
        )
        return self.status(run_id)

    def _control(self, run_id: str, wanted: RunState) -> WorkflowStatus:
        run = self._existing(run_id)
        verb = "cancel" if wanted is RunState.CANCELLED else "pause"
        if run.state.is_finished:
            raise RunFinishedError(
                f"cannot {verb} run {run_id!r}: it is {run.state.value} already."
            )
        if run.state is RunState.PAUSED and wanted is RunState.PAUSED:
            return self.status(run_id)
        active = self._active.get(run_id)
        if active is not None:
            self._requests[run_id] = wanted
            loop, task = active
            if wanted is RunState.CANCELLED and task is not None:
                loop.call_soon_threadsafe(task.cancel)
            return self.status(run_id)
        ask = getattr(self.backend, "request_control", None)
        if ask is not None and self.backend.current_lease(run_id) is not None:
            # executed elsewhere (a worker, another kernel): it stops at its
            # next step boundary
            ask(run_id, wanted)
            return self.status(run_id)
        self._write_state(run_id, RunUpdate(state=wanted))
        if self.observers:
            self.observers.emit(
                RunEvent(kind="run.end", run_id=run_id, state=wanted.value)
            )
        return self.status(run_id)

    def _existing(self, run_id: str) -> RunRecord:
        run = self.backend.get_run(run_id)
        if run is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self.backend!r}.")
        return run

    def _write_state(self, run_id: str, update: RunUpdate) -> None:
        """Change the state of a run nobody executes (waiting for its lease
        if a call is just finishing with it)."""
        deadline = time.monotonic() + 10
        lease = None
        while lease is None:
            lease = self.backend.claim(
                run_id, f"{self.owner}/control", lease_s=_LEASE_S
            )
            if lease is None:
                if time.monotonic() > deadline:
                    raise RunBusyError(
                        f"run {run_id!r} is held by another owner; try again."
                    )
                time.sleep(0.01)
        try:
            batch = WriteBatch()
            snapshot = self.backend.load(run_id)
            if snapshot is not None:
                name = snapshot.run.workflow_name
                workflow = self.workflows.get(name) if name in self.workflows else None
                batch = lost_attempts(snapshot, workflow)  # a crashed run's leftovers
            self.backend.write(lease, replace(batch, run=update))
        finally:
            self.backend.release(lease)

    def view(self, run_id: str, workflow: Workflow | None = None) -> RunView:
        """A live notebook view of ``run_id`` (display it in a cell): step
        states, durations, errors, the task graph, and a control that answers
        a signal the run waits for. Works for runs in the store too."""
        from .live import RunView

        if workflow is None:
            run = self.backend.get_run(run_id)
            if run is not None and run.workflow_name in self.workflows:
                workflow = self.workflows.get(run.workflow_name)
        return RunView(self, run_id, workflow)

    def observe(self, observer: Observer) -> Observer:
        """Call ``observer(event)`` for every :class:`RunEvent` of the runs
        this runner executes (usable as a decorator); see ``unobserve``."""
        return self.observers.add(observer)

    def unobserve(self, observer: Observer) -> None:
        self.observers.remove(observer)

    @property
    def history(self) -> History:
        """The backend's run history as DataFrames and SQL."""
        from .history import History

        return History(self.backend, self.codec)

    def close(self) -> None:
        """Close the backend (releases the DuckDB file for other processes)."""
        if self._beat is not None:
            self._beat.stop()
        self.backend.close()

    def __enter__(self) -> CheckpointingRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _execute_claimed(
        self,
        workflow: Workflow,
        lease: Lease,
        record: RunRecord,
        restart: bool,
        fresh: bool,
    ) -> WorkflowStatus:
        """Execute the run under ``lease``; ``fresh`` when this call just
        created it (nothing to load)."""
        snapshot = RunSnapshot(run=record)
        if not fresh:
            snapshot = self._prepare(workflow, lease, record, restart)
        return await self._execute(workflow, lease, snapshot)

    async def execute_leased(
        self,
        workflow: Workflow,
        lease: Lease,
        *,
        control: Callable[[], RunState | None] | None = None,
        inline_wait_s: float | None = None,
        shared: SharedSteps | None = None,
        snapshot: RunSnapshot | None = None,
    ) -> WorkflowStatus | None:
        """Resume a run whose lease a worker claimed from the queue; ``None``
        if there is nothing to do for it.

        Parameters
        ----------
        control
            Returns a cancel, a pause or ``PENDING`` (hand the run back to the
            queue) when asked; checked at every step boundary.
        inline_wait_s
            Delays, signal waits and retry backoffs longer than this end the
            call with a waiting run (which the queue hands out when due).
        shared
            Share the run's branches and fan-out items with other workers.
        snapshot
            The run as the caller just loaded it under the lease (read here
            if not given).
        """
        if snapshot is None:
            snapshot = self.backend.load(lease.run_id)
        if snapshot is None or snapshot.run.state not in _QUEUED:
            return None
        run = snapshot.run
        if run.definition_hash and run.definition_hash != workflow.definition_hash:
            self._fail_queued(
                lease,
                snapshot,
                DefinitionMismatchError(
                    f"run {run.run_id!r} was started with definition "
                    f"{run.definition_hash[:12]} of workflow {workflow.name!r}, but "
                    f"this worker has definition {workflow.definition_hash[:12]}. Run "
                    "workers with the same code, or start the run over with "
                    "restart=True."
                ),
            )
            return self._status(run.run_id, workflow)
        resume = lost_attempts(without_live_units(self.backend, snapshot), workflow)
        adopted = None if run.definition_hash else workflow.definition_hash
        update = RunUpdate(state=RunState.RUNNING, definition_hash=adopted)
        batch = replace(resume, run=update)
        self.backend.write(lease, batch)
        return await self._execute(
            workflow,
            lease,
            applied(snapshot, batch),
            control=control,
            inline_wait_s=inline_wait_s,
            shared=shared,
        )

    def _fail_queued(
        self, lease: Lease, snapshot: RunSnapshot, error: Exception
    ) -> None:
        """Fail a queued run that this process cannot execute, saying why."""
        info = ErrorInfo.from_exception(error)
        logger.error(
            "run %s cannot be executed here: %s",
            lease.run_id,
            error,
            extra={"event": "run.refused", "run_id": lease.run_id},
        )
        self.backend.write(
            lease, WriteBatch(run=RunUpdate(state=RunState.FAILED, error=info))
        )

    def _requested(self, run_id: str) -> RunState | None:
        """A cancel or pause asked here, or in the store by another process."""
        asked = self._requests.get(run_id)
        if asked is not None:
            return asked
        stored = getattr(self.backend, "requested", None)
        return stored(run_id) if stored is not None else None

    def _heartbeat(self) -> Heartbeat:
        if self._beat is None:
            self._beat = Heartbeat(
                self.backend, _LEASE_S, self.owner, f"sayiir-heartbeat-{self.owner}"
            ).start()
        return self._beat

    async def _execute(
        self,
        workflow: Workflow,
        lease: Lease,
        snapshot: RunSnapshot,
        *,
        control: Callable[[], RunState | None] | None = None,
        inline_wait_s: float | None = None,
        shared: SharedSteps | None = None,
    ) -> WorkflowStatus:
        run_id = lease.run_id
        if _stays(snapshot.run.state):
            return self._status_of(snapshot, workflow)

        logger.info(
            "run %s of workflow %s %s",
            run_id,
            workflow.name,
            "resumed" if snapshot.attempts else "started",
            extra={"event": "run.start", "run_id": run_id, "workflow": workflow.name},
        )
        began = time.perf_counter()
        execution = RunExecution(
            backend=self.backend,
            codec=self.codec,
            workflow=workflow,
            lease=lease,
            snapshot=snapshot,
            owner=self.owner,
            control=control or (lambda: self._requested(run_id)),
            inline_wait_s=inline_wait_s or self.inline_wait_s,
            observers=self.observers,
            park_after_s=inline_wait_s,
            shared=shared,
            lease_s=self.lease_s,
        )
        if self.observers:
            self.observers.emit(
                RunEvent(kind="run.start", run_id=run_id, state="running")
            )
        task = asyncio.current_task()
        self._active[run_id] = (asyncio.get_running_loop(), task)
        try:
            await execution.execute()
        except (KeyboardInterrupt, asyncio.CancelledError, SystemExit):
            logger.info(
                "run %s interrupted",
                run_id,
                extra={"event": "run.interrupted", "run_id": run_id},
            )
            raise
        finally:
            self._active.pop(run_id, None)
            requested = self._requests.pop(run_id, None)
            if requested is RunState.CANCELLED and task is not None:
                task.uncancel()
        final = execution.final_snapshot()
        self._report_end(final, time.perf_counter() - began)
        return self._status_of(final, workflow)

    def _report_end(self, final: RunSnapshot, took: float) -> None:
        """Tell observers and the log how the call left the run."""
        run = final.run
        if self.observers:
            wait_s = None if run.wake_epoch is None else run.wake_epoch - time.time()
            self.observers.emit(
                RunEvent(
                    kind="run.end",
                    run_id=run.run_id,
                    state=run.state.value,
                    duration_s=took,
                    error=run.error,
                    wait_s=wait_s,
                )
            )
        logger.info(
            "run %s %s in %.3fs",
            run.run_id,
            run.state.value,
            took,
            extra={
                "event": "run.end",
                "run_id": run.run_id,
                "state": run.state.value,
                "duration_s": took,
            },
        )

    def _prepare(
        self, workflow: Workflow, lease: Lease, record: RunRecord, restart: bool
    ) -> RunSnapshot:
        """Create, reset or resume the run under ``lease``; its snapshot."""
        run_id = lease.run_id
        snapshot = self.backend.load(run_id)
        if snapshot is None:
            self.backend.create_run(record)
            return RunSnapshot(run=record)
        if restart:
            self.backend.reset_run(lease, record)
            return RunSnapshot(run=record)
        self._check_compatible(
            workflow, snapshot.run, record.input_json, record.input_digest
        )
        if _stays(snapshot.run.state):
            return snapshot
        self._take_back_parts(lease)
        resume = lost_attempts(snapshot, workflow)
        self.backend.write(
            lease, replace(resume, run=RunUpdate(state=RunState.RUNNING))
        )
        return self.backend.load(run_id) or snapshot

    def _take_back_parts(self, lease: Lease) -> None:
        """Before this call runs a run itself: refuse if workers still run
        parts of it, and withdraw the parts nobody holds."""
        live_units = getattr(self.backend, "live_units", None)
        if live_units is None:
            return
        held = live_units(lease.run_id)
        if held:
            names = ", ".join(repr(u.unit_id) for u in held[:3])
            raise RunBusyError(
                f"run {lease.run_id!r} is being executed by workers: they hold "
                f"{len(held)} of its parts ({names}). Wait for them "
                "(runner.status or runner.view), or cancel the run first."
            )
        self.backend.drop_units(lease)  # type: ignore[attr-defined]

    def _new_record(
        self, workflow: Workflow, run_id: str, input_json: str, digest: str
    ) -> RunRecord:
        now = time.time()
        return RunRecord(
            run_id=run_id,
            workflow_name=workflow.name,
            definition_hash=workflow.definition_hash,
            state=RunState.RUNNING,
            input_json=input_json,
            input_digest=digest,
            codec=self.codec.name,
            created_epoch=now,
            updated_epoch=now,
        )

    async def _claim(self, run_id: str) -> Lease:
        """Take the run's lease, waiting while another caller holds it."""
        owner = f"{self.owner}/{next(self._calls)}"
        delay = 0.005
        told_at = time.monotonic() + _TELL_WAITING_S
        while True:
            lease = self.backend.claim(run_id, owner, lease_s=_LEASE_S)
            if lease is not None:
                return lease
            if time.monotonic() > told_at:
                told_at = float("inf")
                holder = self.backend.current_lease(run_id)
                warnings.warn(
                    f"run {run_id!r} is being executed by "
                    f"{holder.owner if holder else 'another owner'!r}; this call "
                    "waits until it lets go (interrupt to stop waiting; "
                    "runner.status or runner.view show its progress).",
                    SayiirWarning,
                    stacklevel=2,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _encode(self, value: Any, what: str, root: str) -> str:
        return encode_value(self.codec, value, what, root)

    def _check_compatible(
        self, workflow: Workflow, run: RunRecord, input_json: str, digest: str
    ) -> None:
        check_compatible(
            run, workflow.name, workflow.definition_hash, input_json, digest
        )

    def _status(self, run_id: str, workflow: Workflow | None) -> WorkflowStatus:
        snapshot = self.backend.load(run_id)
        if snapshot is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self.backend!r}.")
        return self._status_of(snapshot, workflow)

    def _status_of(
        self, snapshot: RunSnapshot, workflow: Workflow | None
    ) -> WorkflowStatus:
        run = snapshot.run
        state = run.state
        if state is RunState.RUNNING and self.backend.current_lease(run.run_id) is None:
            state = RunState.INTERRUPTED
        output = None
        if state is RunState.COMPLETED and run.output_json is not None:
            output = self.codec.decode(run.output_json)
        return WorkflowStatus(
            run_id=run.run_id,
            workflow_name=run.workflow_name,
            state=state,
            output=output,
            error=run.error,
            definition_hash=run.definition_hash,
            steps=step_statuses(snapshot, workflow),
            wake_at_epoch=run.wake_epoch,
        )

    def _abandon(self, run_id: str) -> None:
        """Take a run over from an engine thread that did not stop in time
        and record it as interrupted; that thread's later writes are refused."""
        self.backend.revoke(run_id)
        lease = self.backend.claim(run_id, f"{self.owner}/interrupt", lease_s=_LEASE_S)
        if lease is None:
            return
        try:
            snapshot = self.backend.load(run_id)
            if snapshot is None:
                return
            batch = WriteBatch()
            if snapshot.run.workflow_name in self.workflows:
                workflow = self.workflows.get(snapshot.run.workflow_name)
                batch = lost_attempts(snapshot, workflow, LOST_INTERRUPT)
            self.backend.write(
                lease, replace(batch, run=RunUpdate(state=RunState.INTERRUPTED))
            )
        finally:
            self.backend.release(lease)


def _stays(state: RunState) -> bool:
    """A run in this state is returned as it is by ``run``."""
    return state.is_finished or state is RunState.PAUSED


def _check_signal_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(
            f"a signal name must be a non-empty string; got {name!r}."
        )
