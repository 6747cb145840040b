"""The storage contract every backend implements, and the records it moves.

A backend stores runs, checkpoints and attempts, and hands out leases. A
lease gives one owner the right to execute a run; every write names the
lease it is made under and is refused with :class:`LeaseLostError` if another
owner has taken the run since (fencing). The runs table doubles as the queue of
runnable work: :meth:`Backend.claim_next` picks the next pending, due or
abandoned run, which is what worker processes build on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Container, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import BackendError, LeaseLostError

if TYPE_CHECKING:
    import duckdb
from ..status import AttemptState, ErrorInfo, RunState


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run as stored. ``input_json`` and ``output_json`` are codec text."""

    run_id: str
    workflow_name: str
    definition_hash: str
    state: RunState
    input_json: str
    input_digest: str
    codec: str = "json"
    output_json: str | None = None
    error: ErrorInfo | None = None
    created_epoch: float = 0.0
    updated_epoch: float = 0.0
    wake_epoch: float | None = None


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    """One attempt of one step. Written when it starts and when it ends."""

    run_id: str
    step_id: str
    task_name: str
    attempt: int
    state: AttemptState
    scheduled_epoch: float | None = None
    started_epoch: float | None = None
    ended_epoch: float | None = None
    wait_before_s: float = 0.0
    error: ErrorInfo | None = None
    owner: str = ""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """The encoded output of a completed step."""

    run_id: str
    step_id: str
    output_json: str
    created_epoch: float


@dataclass(frozen=True, kw_only=True)
class RunUpdate:
    """A change of a run's state, written with the rest of a batch."""

    state: RunState
    output_json: str | None = None
    error: ErrorInfo | None = None
    wake_epoch: float | None = None
    definition_hash: str | None = None  # set once, for a run enqueued by name


@dataclass(frozen=True, kw_only=True)
class WriteBatch:
    """What one transaction writes.

    Attributes
    ----------
    inserts
        Attempts stored for the first time.
    updates
        Attempts already stored, replaced by their new record (same run, step
        and attempt number).
    checkpoint
        The output of a completed step. It comes with the step's
        ``SUCCEEDED`` attempt in ``inserts`` or ``updates`` of the same batch.
    run
        A change of the run's state.
    consume_signal
        The id of a signal the batch's checkpoint took; marked consumed in the
        same transaction (the batch fails if it was consumed already).
    """

    inserts: tuple[AttemptRecord, ...] = ()
    updates: tuple[AttemptRecord, ...] = ()
    checkpoint: Checkpoint | None = None
    run: RunUpdate | None = None
    consume_signal: str | None = None


@dataclass(frozen=True, kw_only=True)
class Lease:
    """The right of ``owner`` to execute run ``run_id`` (or, with ``unit``,
    one part of it: a branch of a parallel or an item of a fan-out).

    ``fence`` grows at every claim (and is never reused); a write carrying
    an older fence is refused.
    """

    run_id: str
    owner: str
    fence: int
    expires_epoch: float
    unit: str = ""


@dataclass(frozen=True, kw_only=True)
class UnitRecord:
    """A part of a run that a worker claims on its own: a branch of a
    parallel (``kind="branch"``, ``part`` its name) or an item of a fan-out
    (``kind="item"``, ``part`` its index).

    ``unit_id`` is the prefix of the branch's step ids, or the item's step
    id; ``parent_id`` the id of the parallel or fan-out; ``node_prefix`` and
    ``node_id`` locate that node in the workflow. ``input_json`` is what the
    part receives and ``context_json`` the input of the child workflow it is
    in (``None``: the run's). ``state`` is ``ready``, ``claimed``, ``done``,
    ``failed`` or ``waiting`` (until ``wake_epoch``, or a signal).
    ``max_claimed`` is how many parts of the same parent may be claimed at
    once (a fan-out's concurrency; ``None``: no limit).
    """

    run_id: str
    unit_id: str
    parent_id: str
    kind: str
    node_prefix: str
    node_id: str
    part: str
    input_json: str
    context_json: str | None = None
    state: str = "ready"
    wake_epoch: float | None = None
    max_claimed: int | None = None


@dataclass(frozen=True, kw_only=True)
class RunSnapshot:
    """Everything the runner needs to resume a run."""

    run: RunRecord
    checkpoints: dict[str, str] = field(default_factory=dict)
    attempts: tuple[AttemptRecord, ...] = ()


@runtime_checkable
class Backend(Protocol):
    """Where runs, checkpoints, attempts and leases live."""

    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``record`` unless the run id exists; return the stored
        record and whether it was created."""
        ...

    def reset_run(self, lease: Lease, record: RunRecord) -> None:
        """Start a run over: drop its checkpoints and attempts and store
        ``record`` in place of the old one."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def load(self, run_id: str) -> RunSnapshot | None:
        """The run with its checkpoints and attempts, or ``None``."""
        ...

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every attempt of the run, in the order they started (a scheduled
        retry at its planned time)."""
        ...

    def list_runs(self) -> list[RunRecord]: ...

    def claim(self, run_id: str, owner: str, lease_s: float) -> Lease | None:
        """Take the run's lease, or return ``None`` if another owner holds a
        live one."""
        ...

    def claim_next(
        self,
        owner: str,
        lease_s: float,
        now_epoch: float,
        workflows: Collection[str] | None = None,
    ) -> Lease | None:
        """Claim the next runnable run: pending, waiting and due, or running
        with no live lease (its owner died); only runs of ``workflows`` if
        given (the ones the claiming worker can execute)."""
        ...

    def current_lease(self, run_id: str) -> Lease | None: ...

    def renew(self, lease: Lease, lease_s: float) -> Lease:
        """Extend a lease; raise :class:`LeaseLostError` if it was lost."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease back (no error if it was lost meanwhile)."""
        ...

    def revoke(self, run_id: str) -> None:
        """Void whatever lease the run has; the holder's writes fail after."""
        ...

    def write(self, lease: Lease, batch: WriteBatch) -> None:
        """Apply ``batch`` in one transaction if ``lease`` is still current.

        Durable when it returns. Raises :class:`LeaseLostError` (nothing
        written) if the lease was lost, :class:`BackendError` if the store
        failed or the batch contradicts it (an insert of an attempt that
        exists, an update of one that does not, a second checkpoint for a
        step); then nothing of the batch is written.
        """
        ...

    def send_signal(self, run_id: str, name: str, payload_json: str) -> str:
        """Store a signal for a run (no lease needed); return its id.

        Raises :class:`RunNotFoundError` for an unknown run."""
        ...

    def next_signal(
        self, run_id: str, name: str, sent_before_epoch: float | None = None
    ) -> tuple[str, str] | None:
        """The oldest signal ``name`` of the run not consumed yet (and sent
        before ``sent_before_epoch``, if given), as ``(signal id, payload)``."""
        ...

    def reading(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A DuckDB connection on which the history views (``runs``,
        ``steps``, ``attempts``, ``signals``) can be queried, for the block."""
        ...

    def delete_runs(self, run_ids: list[str], *, updated_before_epoch: float) -> int:
        """Delete those of these runs that are completed, failed or cancelled
        and were last updated before ``updated_before_epoch`` (checked again
        in the deleting transaction), with everything stored for them; runs
        whose lease is held are kept. Return how many were deleted."""
        ...

    def close(self) -> None: ...


class Wakeups:
    """Wakes the workers of one process when work may have become claimable
    (the in-process counterpart of PostgreSQL's LISTEN/NOTIFY)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events = 0

    def wake(self) -> None:
        with self._cond:
            self.events += 1
            self._cond.notify_all()

    def wait(self, timeout_s: float, seen: int) -> int:
        """Wait up to ``timeout_s`` for a wake-up after event ``seen``; return
        the current event count."""
        with self._cond:
            if self.events == seen:
                self._cond.wait(timeout_s)
            return self.events

    def close(self) -> None:
        self.wake()


class LocalLeases:
    """Leases held in this process's memory, for single-process backends.

    In-memory and DuckDB stores have one writing process, so a lease lives as
    long as its holder keeps it: it does not lapse with time, and every lease
    of a store is void once the process that held it is gone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._fences: dict[str, int] = {}
        self._requests: dict[str, RunState] = {}
        self._stopped: dict[str, RunState] = {}  # runs cancelled or paused here
        self.wakeups = Wakeups()

    def claim(self, run_id: str, owner: str, lease_s: float) -> Lease | None:
        with self._lock:
            if run_id in self._leases:
                return None
            fence = self._fences.get(run_id, 0) + 1
            self._fences[run_id] = fence
            lease = Lease(
                run_id=run_id, owner=owner, fence=fence, expires_epoch=float("inf")
            )
            self._leases[run_id] = lease
            return lease

    def current(self, run_id: str) -> Lease | None:
        return self._leases.get(run_id)

    def check(self, lease: Lease) -> None:
        current = self._leases.get(lease.run_id)
        if current is None or current.fence != lease.fence:
            raise LeaseLostError(
                f"run {lease.run_id!r}: the lease of {lease.owner!r} (fence "
                f"{lease.fence}) is no longer current; another owner has the run."
            )

    def renew(self, lease: Lease, lease_s: float) -> Lease:
        with self._lock:
            self.check(lease)
            return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            current = self._leases.get(lease.run_id)
            if current is not None and current.fence == lease.fence:
                del self._leases[lease.run_id]
        self.wakeups.wake()

    def revoke(self, run_id: str) -> None:
        with self._lock:
            self._leases.pop(run_id, None)

    def leased(self) -> set[str]:
        return set(self._leases)

    def request(self, run_id: str, state: RunState) -> None:
        """Store a cancel or pause asked for a run that is executing."""
        with self._lock:
            self._requests[run_id] = state

    def requested(self, run_id: str) -> RunState | None:
        """A pending request, else the cancel or pause the run is in."""
        return self._requests.get(run_id) or self._stopped.get(run_id)

    def forget(self, run_id: str) -> None:
        """Drop what is known of a run's requests (it starts over)."""
        with self._lock:
            self._requests.pop(run_id, None)
            self._stopped.pop(run_id, None)

    def settled(self, run_id: str, state: RunState) -> None:
        """Forget a request once the run reached a state that answers it; wake
        workers if it went back to the queue."""
        queued = (RunState.RUNNING, RunState.WAITING, RunState.PENDING)
        with self._lock:
            if state not in queued:
                self._requests.pop(run_id, None)
            if state in (RunState.CANCELLED, RunState.PAUSED):
                self._stopped[run_id] = state
            else:
                self._stopped.pop(run_id, None)
        if state in (RunState.PENDING, RunState.WAITING):
            self.wakeups.wake()


class LocalQueueing:
    """The queue's control requests and wake-ups for the single-process
    backends, kept by their :class:`LocalLeases` (``self._leases``)."""

    _leases: LocalLeases

    def request_control(self, run_id: str, state: RunState) -> bool:
        """Ask the thread that executes the run to cancel or pause it at its
        next step boundary."""
        self._leases.request(run_id, state)
        return True

    def requested(self, run_id: str, *, fresh: bool = False) -> RunState | None:
        return self._leases.requested(run_id)

    def listen(self) -> Wakeups:
        """Wake-ups for this process's workers when work may be claimable."""
        return self._leases.wakeups


def is_runnable(
    run: RunRecord, leased: Iterable[str] | set[str], now_epoch: float
) -> bool:
    """Whether a worker may pick ``run`` up now."""
    if run.run_id in leased:
        return False
    if run.state in (RunState.PENDING, RunState.RUNNING):
        return run.wake_epoch is None or run.wake_epoch <= now_epoch
    if run.state is RunState.WAITING:
        return run.wake_epoch is not None and run.wake_epoch <= now_epoch
    return False


def check_batch(batch: WriteBatch) -> None:
    """Refuse a checkpoint that does not come with its succeeded attempt."""
    point = batch.checkpoint
    if point is None:
        return
    for attempt in (*batch.inserts, *batch.updates):
        if attempt.step_id == point.step_id and attempt.state is AttemptState.SUCCEEDED:
            return
    raise BackendError(
        f"run {point.run_id!r}: the checkpoint of step {point.step_id!r} must be "
        "written with that step's succeeded attempt; nothing was written."
    )


def refuse_contradictions(
    run_id: str,
    batch: WriteBatch,
    attempts: Container[tuple[str, int]],
    checkpoints: Container[str],
) -> None:
    """Refuse a batch that inserts a stored attempt, updates a missing one, or
    checkpoints a step twice; ``attempts`` holds the stored ``(step id,
    attempt)`` keys and ``checkpoints`` the checkpointed step ids."""
    for a in batch.inserts:
        if (a.step_id, a.attempt) in attempts:
            raise BackendError(
                f"run {run_id!r}: attempt {a.attempt} of step {a.step_id!r} is "
                "stored already; nothing was written."
            )
    for a in batch.updates:
        if (a.step_id, a.attempt) not in attempts:
            raise BackendError(
                f"run {run_id!r}: attempt {a.attempt} of step {a.step_id!r} is "
                "not stored; nothing was written."
            )
    point = batch.checkpoint
    if point is not None and point.step_id in checkpoints:
        raise BackendError(
            f"run {run_id!r} already has a checkpoint for step "
            f"{point.step_id!r}; nothing was written."
        )


def with_update(run: RunRecord, update: RunUpdate, now_epoch: float) -> RunRecord:
    """``run`` with ``update`` applied."""
    return replace(
        run,
        state=update.state,
        output_json=update.output_json,
        error=update.error,
        wake_epoch=update.wake_epoch,
        updated_epoch=now_epoch,
        definition_hash=update.definition_hash or run.definition_hash,
    )


def applied(snapshot: RunSnapshot, batch: WriteBatch) -> RunSnapshot:
    """``snapshot`` as the store holds it once ``batch`` is written."""
    attempts = {(a.step_id, a.attempt): a for a in snapshot.attempts}
    for attempt in (*batch.updates, *batch.inserts):
        attempts[(attempt.step_id, attempt.attempt)] = attempt
    run = snapshot.run
    if batch.run is not None:
        run = with_update(run, batch.run, time.time())
    ordered = sorted(
        attempts.values(),
        key=lambda a: (
            a.started_epoch or a.scheduled_epoch or 0.0,
            a.step_id,
            a.attempt,
        ),
    )
    return replace(snapshot, run=run, attempts=tuple(ordered))
