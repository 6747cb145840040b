"""Workers: loops that claim runnable work from a backend and execute it.

A :class:`PooledWorker` runs ``concurrency`` slots, each a thread with an
event loop of its own, so a sync task that blocks holds one slot only. A slot
claims the next work (a run that is pending, due or abandoned; on PostgreSQL
also one branch of a parallel or one item of a fan-out), executes it under
its lease and gives the lease back. One heartbeat thread renews every lease
the worker holds. Idle slots sleep until the backend says work arrived
(LISTEN/NOTIFY on PostgreSQL), until the next planned wake-up, or at most
``poll`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from .backends.base import Backend, Lease, RunUpdate, WriteBatch
from .codec import Codec
from .duration import Duration, to_seconds
from .errors import DefinitionError, LeaseLostError
from .heartbeat import Heartbeat
from .limits import waiting_for_limits
from .recovery import lost_attempts
from .registry import WorkflowRegistry
from .runner import CheckpointingRunner
from .status import RunState
from .units import SharedSteps, execute_unit, lost_part_attempts, without_live_units
from .workflow import Workflow

logger = logging.getLogger(__name__)

_MIN_LEASE_S = 0.5
_GIVE_UP_S = 5.0  # how long a stop spends giving back what outlived its grace


class PooledWorker:
    """A pool of worker slots that execute runs from a backend's queue.

    Parameters
    ----------
    worker_id
        A name for this worker, stable across restarts (for example the host
        name and a number). A worker started again under the same id gives
        up at once the leases its previous life held, so nothing it claimed
        waits for a lease to lapse.
    backend
        Where the queue lives: :class:`~sayiir_nb.PostgresBackend` for
        workers in several processes or machines; DuckDB or in-memory for
        worker threads inside one process.
    workflow_registry
        The workflows this worker can execute (a
        :class:`~sayiir_nb.WorkflowRegistry` or an iterable of workflows).
        The worker claims runs of these workflows only; runs of others wait
        for a worker that knows them.
    concurrency
        How many runs (or parts of runs) this worker executes at once.
    lease
        How long a claim lasts without a heartbeat (30 s by default); the
        heartbeat renews leases every third of it. A worker that dies has its
        work taken over after at most this long.
    poll
        The longest an idle slot sleeps before it looks at the queue again,
        in case a notification was missed.
    grace
        On :meth:`stop`, how long running steps may take to finish before
        their leases are given up.
    inline_wait
        Delays, signal waits and retry backoffs up to this long wait in the
        slot; longer ones hand the run back to the queue until it is due.

    Notes
    -----
    Steps run at least once: a step whose worker dies mid-way runs again on
    the worker that takes the run over.
    """

    def __init__(
        self,
        worker_id: str,
        backend: Backend,
        workflow_registry: WorkflowRegistry | Iterable[Workflow],
        *,
        concurrency: int = 1,
        lease: Duration = 30.0,
        poll: Duration = 1.0,
        grace: Duration = 10.0,
        inline_wait: Duration = 1.0,
        codec: Codec | None = None,
    ) -> None:
        _check_arguments(worker_id, concurrency)
        if isinstance(workflow_registry, str):
            raise DefinitionError(
                f"workflow_registry is the string {workflow_registry!r}; pass a "
                "WorkflowRegistry or a list of workflows (sayiir_nb.cli."
                "load_registry('package.module:name') loads one by name)."
            )
        self.worker_id = worker_id
        self.backend = backend
        self.workflows = (
            workflow_registry
            if isinstance(workflow_registry, WorkflowRegistry)
            else WorkflowRegistry(workflow_registry)
        )
        self.concurrency = concurrency
        self.lease_s = to_seconds(lease, what="lease")
        self.poll_s = to_seconds(poll, what="poll")
        self.grace_s = to_seconds(grace, what="grace")
        self.inline_wait_s = to_seconds(inline_wait, what="inline_wait")
        if self.lease_s < _MIN_LEASE_S:
            raise DefinitionError(
                f"lease {self.lease_s:g}s is too short for the heartbeat to renew "
                f"it in time (every third of it, over a database round trip); "
                f"use at least {_MIN_LEASE_S:g}s (30 s by default)."
            )
        if self.poll_s <= 0:
            raise DefinitionError(
                f"poll {self.poll_s:g}s must be longer than zero (1 s by default)."
            )
        self.owner = f"{worker_id}/{uuid.uuid4().hex[:8]}"
        self.runner = CheckpointingRunner(
            backend, codec=codec, workflows=self.workflows, inline_wait=inline_wait
        )
        self.runner.owner = self.owner
        self.runner.lease_s = self.lease_s
        self.heartbeat = Heartbeat(
            backend, self.lease_s, self.owner, f"sayiir-heartbeat-{worker_id}"
        )
        self._shares = bool(getattr(backend, "shares_steps", False))
        self._stopping = threading.Event()
        self._handing_back = threading.Event()
        self._gave_up = threading.Event()  # the grace period of a stop is over
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: Any = None
        self.executed = 0  # claims this worker has executed (runs and parts)

    def __repr__(self) -> str:
        state = "running" if self._threads and not self._stopped.is_set() else "idle"
        return (
            f"PooledWorker({self.worker_id!r}, {self.backend!r}, "
            f"concurrency={self.concurrency}, {state})"
        )

    # -- life cycle ---------------------------------------------------------

    def start(self) -> PooledWorker:
        """Start the slots in background threads and return at once (for a
        notebook: workers in the kernel, for development)."""
        if self._threads:
            return self
        ensure = getattr(self.backend, "ensure_pool", None)
        if ensure is not None:
            ensure(self.concurrency * 2 + 4)
        self._take_back_old_claims()
        self._listen()
        self.heartbeat.start()
        self._threads = [
            threading.Thread(
                target=self._slot,
                args=(index,),
                name=f"sayiir-worker-{self.worker_id}-{index}",
                daemon=True,
            )
            for index in range(1, self.concurrency + 1)
        ]
        for thread in self._threads:
            thread.start()
        logger.info(
            "worker %s started with %d slot(s) on %r",
            self.worker_id,
            self.concurrency,
            self.backend,
            extra={"event": "worker.start", "worker": self.worker_id},
        )
        return self

    def _take_back_old_claims(self) -> None:
        released = getattr(self.backend, "release_owners", None)
        if released is None:
            return
        count = released(f"{self.worker_id}/", self.owner)
        if count:
            logger.warning(
                "worker %s took back %d claims held under its id; if another "
                "worker with this id is still running, give each worker its "
                "own id (its steps would run twice)",
                self.worker_id,
                count,
                extra={"event": "worker.reclaimed", "worker": self.worker_id},
            )

    def _listen(self) -> None:
        """Open the wake-ups, and wait (a little) until they are live."""
        self._listener = self.backend.listen()  # type: ignore[attr-defined]
        connected = getattr(self._listener, "connected", None)
        if connected is not None and not connected.wait(10):
            logger.warning(
                "worker %s: the listening connection is not up yet; polling every "
                "%.1fs until it is",
                self.worker_id,
                self.poll_s,
                extra={"event": "worker.listen_late", "worker": self.worker_id},
            )
        on_control = getattr(self.backend, "requested", None)
        if on_control is not None and hasattr(self._listener, "on_control"):
            self._listener.on_control = lambda run_id: on_control(run_id, fresh=True)

    def run(self) -> None:
        """Start the slots and block until :meth:`stop` is called (from
        another thread or a signal handler)."""
        self.start()
        self._stopped.wait()

    def stop(self, grace: Duration | None = None) -> None:
        """Stop claiming, let running steps finish for up to ``grace``
        seconds (the worker's default if ``None``), then give up the leases of
        whatever still runs; the runs go back to the queue for other workers.
        """
        grace_s = self.grace_s if grace is None else to_seconds(grace, what="grace")
        if self._stopped.is_set() or not self._threads:
            self._stopped.set()
            return
        logger.info(
            "worker %s stopping (grace %.1fs)",
            self.worker_id,
            grace_s,
            extra={"event": "worker.stopping", "worker": self.worker_id},
        )
        self._stopping.set()
        self._handing_back.set()
        self._wake_all()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._gave_up.set()
        # parts first, so that a run handed back sees which parts are lost
        left = sorted(self.heartbeat.held(), key=lambda lease: not lease.unit)
        self._give_up_all(left, grace_s)
        self.heartbeat.stop()
        if self._listener is not None and hasattr(self._listener, "channels"):
            self._listener.close()
        self._stopped.set()
        logger.info(
            "worker %s stopped (%d executions; %d lease(s) given up)",
            self.worker_id,
            self.executed,
            len(left),
            extra={"event": "worker.stop", "worker": self.worker_id},
        )

    def __enter__(self) -> PooledWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _give_up_all(self, leases: list[Lease], grace_s: float) -> None:
        """Give up ``leases``, for at most ``_GIVE_UP_S`` seconds: a store that
        cannot be reached (a database outage) does not hold the stop up, and
        the leases it could not take back lapse by themselves."""
        if not leases:
            return
        giving = threading.Thread(
            target=lambda: [self._give_up(lease, grace_s) for lease in leases],
            name=f"sayiir-give-up-{self.worker_id}",
            daemon=True,
        )
        giving.start()
        giving.join(_GIVE_UP_S)
        if giving.is_alive():
            logger.warning(
                "worker %s could not give back %d lease(s) within %.0fs (is the "
                "database reachable?); other workers take those runs over once "
                "the leases lapse, after %.0fs",
                self.worker_id,
                len(leases),
                _GIVE_UP_S,
                self.lease_s,
                extra={"event": "worker.give_up_timeout", "worker": self.worker_id},
            )

    def _give_up(self, lease: Lease, grace_s: float) -> None:
        """Give back a lease whose step did not finish in the grace period;
        the step's late write is then refused (the release is fenced, so a
        lease another worker took meanwhile is left alone). A run, not a
        part, is then handed back to the queue."""
        try:
            if lease.unit:
                self._settle_part(lease, grace_s)
            self.backend.release(lease)
            if not lease.unit:
                self._hand_back(lease, grace_s)
        except LeaseLostError:
            pass  # another worker took it over meanwhile: nothing is ours
        except Exception as error:
            logger.warning(
                "could not give up the lease of run %s: %s",
                lease.run_id,
                error,
                extra={"event": "worker.release_failed", "run_id": lease.run_id},
            )

    def _stop_reason(self, grace_s: float) -> str:
        return (
            f"worker {self.worker_id} stopped before this attempt ended "
            f"(grace {grace_s:g}s); its late result is discarded"
        )

    def _settle_part(self, lease: Lease, grace_s: float) -> None:
        """Record the attempts a given-up part left running as interrupted,
        under the part's lease (so also when its run is cancelled or paused
        and nobody takes the part again)."""
        backend: Any = self.backend
        unit = backend.get_unit(lease.run_id, lease.unit)
        snapshot = backend.load_for_unit(unit) if unit is not None else None
        if snapshot is None:
            return
        lost = lost_part_attempts(
            snapshot.attempts,
            unit,
            self._stop_reason(grace_s),
            owner=lease.owner,
            ended_epoch=time.time(),
        )
        if lost:
            self.backend.write(lease, WriteBatch(updates=lost))

    def _hand_back(self, lease: Lease, grace_s: float) -> None:
        """Record the attempt a given-up run left unfinished as interrupted,
        by this worker, and put the run back in the queue, under a
        lease of its own: whoever runs it next starts from a clean record."""
        claim = self.backend.claim(lease.run_id, f"{self.owner}/stop", self.lease_s)
        if claim is None:
            return  # another worker took the run over meanwhile
        try:
            snapshot = self.backend.load(lease.run_id)
            if snapshot is None or snapshot.run.state is not RunState.RUNNING:
                return
            name = snapshot.run.workflow_name
            workflow = self.workflows.get(name) if name in self.workflows else None
            batch = lost_attempts(
                without_live_units(self.backend, snapshot),
                workflow,
                self._stop_reason(grace_s),
                owner=self.owner,  # as the run's own attempts record it
                ended_epoch=time.time(),
            )
            # a step still waiting for its task limits never started
            started = tuple(
                a for a in batch.inserts if not waiting_for_limits(a.run_id, a.step_id)
            )
            batch = replace(batch, inserts=started)
            run = RunUpdate(state=RunState.PENDING)
            self.backend.write(claim, replace(batch, run=run))
        finally:
            self.backend.release(claim)

    def _wake_all(self) -> None:
        listener = self._listener
        if listener is None:
            return
        listener.wake()

    # -- slots --------------------------------------------------------------

    def _slot(self, index: int) -> None:
        owner = f"{self.owner}/{index}"
        loop = asyncio.new_event_loop()
        seen = self._listener.events
        try:
            while not self._stopping.is_set():
                try:
                    lease, due = self._claim(owner)
                except Exception as error:
                    logger.warning(
                        "worker %s could not claim work: %s",
                        self.worker_id,
                        error,
                        extra={"event": "worker.claim_failed", "worker": owner},
                    )
                    self._stopping.wait(min(1.0, self.poll_s))
                    continue
                if lease is None:
                    timeout = self.poll_s
                    if due is not None:
                        timeout = min(timeout, max(0.0, due - time.time()))
                    seen = self._listener.wait(timeout, seen)
                    continue
                self._run_claimed(loop, lease, owner)
        finally:
            loop.close()

    def _claim(self, owner: str) -> tuple[Lease | None, float | None]:
        now = time.time()
        claim_work = getattr(self.backend, "claim_work", None)
        if claim_work is not None:
            kinds = ("unit", "run") if self._shares else ("run",)
            return claim_work(owner, self.lease_s, now, kinds, self._known())
        return self.backend.claim_next(owner, self.lease_s, now, self._known()), None

    def _known(self) -> list[str]:
        """The workflows this worker claims runs of (its registry, now)."""
        return self.workflows.names()

    def _run_claimed(
        self, loop: asyncio.AbstractEventLoop, lease: Lease, owner: str
    ) -> None:
        with self.heartbeat.holding(lease):
            try:
                loop.run_until_complete(self._execute(lease, owner))
            except LeaseLostError as error:
                if self._gave_up.is_set():
                    logger.info(
                        "worker %s: run %s did not reach a step boundary within "
                        "the grace period; its step's result is discarded and the "
                        "run is back in the queue",
                        self.worker_id,
                        lease.run_id,
                        extra={"event": "run.given_up", "run_id": lease.run_id},
                    )
                else:
                    logger.warning(
                        "worker %s lost run %s to another worker: %s",
                        self.worker_id,
                        lease.run_id,
                        error,
                        extra={"event": "run.lease_lost", "run_id": lease.run_id},
                    )
            except Exception as error:
                logger.exception(
                    "worker %s failed while executing run %s: %s",
                    self.worker_id,
                    lease.run_id,
                    error,
                    extra={"event": "worker.error", "run_id": lease.run_id},
                )
            finally:
                self.executed += 1
                try:
                    self.backend.release(lease)
                except Exception as error:
                    logger.warning(
                        "could not release run %s: %s",
                        lease.run_id,
                        error,
                        extra={"event": "worker.release_failed"},
                    )

    async def _execute(self, lease: Lease, owner: str) -> None:
        snapshot = None if lease.unit else self.backend.load(lease.run_id)
        run = snapshot.run if snapshot else self.backend.get_run(lease.run_id)
        if run is None:
            return
        if run.workflow_name not in self.workflows:
            if not lease.unit:
                self._refuse(lease, run.workflow_name)
            return
        workflow = self.workflows.get(run.workflow_name)
        control = self._control(lease.run_id)
        shared = self._shared(owner) if self._shares else None
        # a run left running: its owner died, or gave it up at a stop
        taking_over = snapshot is not None and snapshot.run.state is RunState.RUNNING
        logger.info(
            "worker %s claimed %s%s%s",
            self.worker_id,
            f"part {lease.unit} of run " if lease.unit else "run ",
            lease.run_id,
            " (left running by its previous owner)" if taking_over else "",
            extra={
                "event": "worker.claimed",
                "run_id": lease.run_id,
                "unit": lease.unit,
                "worker": owner,
            },
        )
        if lease.unit:
            assert shared is not None
            await execute_unit(
                self.runner,
                workflow,
                lease,
                shared=shared,
                control=control,
                inline_wait_s=self.inline_wait_s,
            )
            return
        await self.runner.execute_leased(
            workflow,
            lease,
            control=control,
            inline_wait_s=self.inline_wait_s,
            shared=shared,
            snapshot=snapshot,
        )

    def _refuse(self, lease: Lease, name: str) -> None:
        from .errors import RunNotFoundError

        snapshot = self.backend.load(lease.run_id)
        if snapshot is None:
            return
        known = ", ".join(self.workflows.names()) or "none"
        self.runner._fail_queued(
            lease,
            snapshot,
            RunNotFoundError(
                f"run {lease.run_id!r} is of workflow {name!r}, which worker "
                f"{self.worker_id!r} does not know (it knows: {known}). Add the "
                "workflow to the worker's registry and start the run over."
            ),
        )

    def _control(self, run_id: str) -> Any:
        requested = getattr(self.backend, "requested", None)

        def control() -> RunState | None:
            if self._handing_back.is_set():
                return RunState.PENDING
            return requested(run_id) if requested is not None else None

        return control

    def _shared(self, owner: str) -> SharedSteps:
        async def run_unit(lease: Lease) -> None:
            run = self.backend.get_run(lease.run_id)
            if run is None or run.workflow_name not in self.workflows:
                self.backend.release(lease)
                return
            with self.heartbeat.holding(lease):
                try:
                    await execute_unit(
                        self.runner,
                        self.workflows.get(run.workflow_name),
                        lease,
                        shared=shared,
                        control=self._control(lease.run_id),
                        inline_wait_s=self.inline_wait_s,
                    )
                finally:
                    self.backend.release(lease)

        async def wait(timeout_s: float) -> None:
            seen = self._listener.events
            await asyncio.get_running_loop().run_in_executor(
                None, self._listener.wait, timeout_s, seen
            )

        shared = SharedSteps(
            owner=owner, lease_s=self.lease_s, run_unit=run_unit, wait=wait
        )
        return shared


def _check_arguments(worker_id: object, concurrency: object) -> None:
    if (
        not isinstance(worker_id, str)
        or not worker_id.strip()
        or set(worker_id) & {"%", "/"}
    ):
        raise DefinitionError(
            "worker_id must be a non-empty string without '/' or '%' (for "
            f"example 'host-1'); got {worker_id!r}."
        )
    whole = isinstance(concurrency, int) and not isinstance(concurrency, bool)
    if not whole or concurrency < 1:  # type: ignore[operator]
        raise DefinitionError(
            f"concurrency must be a whole number >= 1; got {concurrency!r}."
        )
