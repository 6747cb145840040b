"""A backend in this process's memory: for tests and exploration."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import BackendError, RunNotFoundError
from ..queue import Enqueueing
from ..status import AttemptState, ErrorInfo, RunState
from .base import (
    AttemptRecord,
    Lease,
    LocalLeases,
    LocalQueueing,
    RunRecord,
    RunSnapshot,
    WriteBatch,
    check_batch,
    is_runnable,
    refuse_contradictions,
    with_update,
)
from .schema import migrate

if TYPE_CHECKING:
    import duckdb


class InMemoryBackend(LocalQueueing, Enqueueing):
    """Keeps everything in dictionaries; nothing survives the process.

    Use it in your own tests and to explore: it honours the same contract as
    the DuckDB and PostgreSQL backends, leases and fencing included.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._checkpoints: dict[str, dict[str, str]] = {}
        self._attempts: dict[str, dict[tuple[str, int], AttemptRecord]] = {}
        self._signals: dict[str, list[_Signal]] = {}
        self._leases = LocalLeases()

    def __repr__(self) -> str:
        return f"InMemoryBackend({len(self._runs)} runs)"

    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        with self._lock:
            existing = self._runs.get(record.run_id)
            if existing is not None:
                return existing, False
            self._store_new(record)
        if record.state is RunState.PENDING:
            self._leases.wakeups.wake()
        return record, True

    def reset_run(self, lease: Lease, record: RunRecord) -> None:
        with self._lock:
            self._leases.check(lease)
            self._store_new(record)
            self._leases.forget(record.run_id)

    def _store_new(self, record: RunRecord) -> None:
        self._runs[record.run_id] = record
        self._checkpoints[record.run_id] = {}
        self._attempts[record.run_id] = {}
        self._signals.pop(record.run_id, None)

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def load(self, run_id: str) -> RunSnapshot | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            return RunSnapshot(
                run=run,
                checkpoints=dict(self._checkpoints[run_id]),
                attempts=tuple(self.attempts(run_id)),
            )

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        with self._lock:
            rows = self._attempts.get(run_id, {}).values()
            return sorted(rows, key=_in_time_order)

    def list_runs(self) -> list[RunRecord]:
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.created_epoch)

    def claim(self, run_id: str, owner: str, lease_s: float) -> Lease | None:
        return self._leases.claim(run_id, owner, lease_s)

    def claim_next(
        self,
        owner: str,
        lease_s: float,
        now_epoch: float,
        workflows: Collection[str] | None = None,
    ) -> Lease | None:
        with self._lock:
            leased = self._leases.leased()
            due = [
                r
                for r in self._runs.values()
                if is_runnable(r, leased, now_epoch)
                and (workflows is None or r.workflow_name in workflows)
            ]
            for run in sorted(due, key=lambda r: (r.wake_epoch or 0, r.created_epoch)):
                lease = self._leases.claim(run.run_id, owner, lease_s)
                if lease is not None:
                    return lease
            return None

    def current_lease(self, run_id: str) -> Lease | None:
        return self._leases.current(run_id)

    def renew(self, lease: Lease, lease_s: float) -> Lease:
        return self._leases.renew(lease, lease_s)

    def release(self, lease: Lease) -> None:
        self._leases.release(lease)

    def revoke(self, run_id: str) -> None:
        self._leases.revoke(run_id)

    def write(self, lease: Lease, batch: WriteBatch) -> None:
        with self._lock:
            self._leases.check(lease)
            check_batch(batch)
            run_id = lease.run_id
            attempts = self._attempts[run_id]
            checkpoints = self._checkpoints[run_id]
            refuse_contradictions(run_id, batch, attempts, checkpoints)
            signal = None
            if batch.consume_signal is not None:
                signal = self._signal(run_id, batch.consume_signal)
            for attempt in (*batch.inserts, *batch.updates):
                attempts[(attempt.step_id, attempt.attempt)] = attempt
            if batch.checkpoint is not None:
                checkpoints[batch.checkpoint.step_id] = batch.checkpoint.output_json
            if signal is not None:
                signal.consumed_epoch = time.time()
            if batch.run is not None:
                self._runs[run_id] = with_update(
                    self._runs[run_id], batch.run, time.time()
                )
                self._leases.settled(run_id, batch.run.state)

    def _signal(self, run_id: str, signal_id: str) -> _Signal:
        for signal in self._signals.get(run_id, []):
            if signal.signal_id == signal_id and signal.consumed_epoch is None:
                return signal
        raise BackendError(
            f"run {run_id!r}: signal {signal_id} is unknown or consumed already; "
            "nothing was written."
        )

    def send_signal(self, run_id: str, name: str, payload_json: str) -> str:
        with self._lock:
            if run_id not in self._runs:
                raise RunNotFoundError(f"no run with id {run_id!r} in {self!r}.")
            signal = _Signal(uuid.uuid4().hex, name, payload_json, time.time())
            self._signals.setdefault(run_id, []).append(signal)
            run = self._runs[run_id]
            if run.state is RunState.WAITING and (
                run.wake_epoch is None or run.wake_epoch > signal.sent_epoch
            ):
                # a worker takes the run up now to look at the signal
                self._runs[run_id] = replace(run, wake_epoch=signal.sent_epoch)
        self._leases.wakeups.wake()
        return signal.signal_id

    def next_signal(
        self, run_id: str, name: str, sent_before_epoch: float | None = None
    ) -> tuple[str, str] | None:
        limit = float("inf") if sent_before_epoch is None else sent_before_epoch
        with self._lock:
            for signal in self._signals.get(run_id, []):
                if (
                    signal.name == name
                    and signal.consumed_epoch is None
                    and signal.sent_epoch < limit
                ):
                    return signal.signal_id, signal.payload_json
            return None

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB database holding a copy of the rows."""
        import duckdb

        with self._lock:
            runs = list(self._runs.values())
            attempts = [a for rows in self._attempts.values() for a in rows.values()]
            checkpoints = {k: dict(v) for k, v in self._checkpoints.items()}
            signals = [
                (
                    run_id,
                    s.signal_id,
                    s.name,
                    s.payload_json,
                    s.sent_epoch,
                    s.consumed_epoch,
                )
                for run_id, rows in self._signals.items()
                for s in rows
            ]
        conn = duckdb.connect()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            migrate(conn, "the in-memory history")
            _fill(conn, runs, attempts, checkpoints)
            if signals:
                conn.executemany(
                    "INSERT INTO sayiir_signals (run_id, signal_id, name, "
                    "payload_json, sent_epoch, consumed_epoch) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    signals,
                )
            yield conn
        finally:
            conn.close()

    def delete_runs(self, run_ids: list[str], *, updated_before_epoch: float) -> int:
        deleted = 0
        with self._lock:
            leased = self._leases.leased()
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is None or run_id in leased or not run.state.is_finished:
                    continue
                if run.updated_epoch > updated_before_epoch:
                    continue
                del self._runs[run_id]
                self._checkpoints.pop(run_id, None)
                self._attempts.pop(run_id, None)
                self._signals.pop(run_id, None)
                deleted += 1
        return deleted

    def close(self) -> None:
        pass


@dataclass
class _Signal:
    signal_id: str
    name: str
    payload_json: str
    sent_epoch: float
    consumed_epoch: float | None = None


def _in_time_order(a: AttemptRecord) -> tuple[float, str, int]:
    return (a.started_epoch or a.scheduled_epoch or 0.0, a.step_id, a.attempt)


_RUN_FIELDS = (
    "run_id", "workflow_name", "definition_hash", "state", "input_json",
    "input_digest", "codec", "output_json", "error_type", "error_message",
    "error_traceback", "error_step", "created_epoch", "updated_epoch", "wake_epoch",
)  # fmt: skip
_ATTEMPT_FIELDS = (
    "run_id", "step_id", "task_name", "attempt", "state", "scheduled_epoch",
    "started_epoch", "ended_epoch", "wait_before_s", "owner", "output_json",
)  # fmt: skip
_ERROR_FIELDS = (
    "run_id",
    "step_id",
    "attempt",
    "error_type",
    "error_message",
    "error_traceback",
)


def _fill(
    conn: duckdb.DuckDBPyConnection,
    runs: list[RunRecord],
    attempts: list[AttemptRecord],
    checkpoints: dict[str, dict[str, str]],
) -> None:
    """Copy the records into the stored tables' shape, a table at a time
    (through pandas frames: row-by-row inserts would take seconds)."""
    run_rows = [
        (
            r.run_id, r.workflow_name, r.definition_hash, r.state.value,
            r.input_json, r.input_digest, r.codec, r.output_json,
            *_error(r.error), r.error.step_id if r.error else None,
            r.created_epoch, r.updated_epoch, r.wake_epoch,
        )
        for r in runs
    ]  # fmt: skip
    attempt_rows = []
    error_rows = []
    for a in attempts:
        output = None
        if a.state is AttemptState.SUCCEEDED:
            output = checkpoints.get(a.run_id, {}).get(a.step_id)
        attempt_rows.append(
            (
                a.run_id, a.step_id, a.task_name, a.attempt, a.state.value,
                a.scheduled_epoch, a.started_epoch, a.ended_epoch, a.wait_before_s,
                a.owner, output,
            )
        )  # fmt: skip
        if a.error is not None:
            error_rows.append((a.run_id, a.step_id, a.attempt, *_error(a.error)))
    for table, fields, rows in (
        ("sayiir_runs", _RUN_FIELDS, run_rows),
        ("sayiir_attempts", _ATTEMPT_FIELDS, attempt_rows),
        ("sayiir_attempt_errors", _ERROR_FIELDS, error_rows),
    ):
        insert_frame(conn, table, fields, rows)


def insert_frame(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    fields: tuple[str, ...],
    rows: list[tuple[object, ...]],
) -> None:
    if not rows:
        return
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=list(fields))
    conn.register("_rows", frame)
    try:
        columns = ", ".join(fields)
        conn.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _rows")
    finally:
        conn.unregister("_rows")


def _error(error: ErrorInfo | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    return error.type, error.message, error.traceback
