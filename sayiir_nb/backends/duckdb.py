"""The embedded default backend: one DuckDB file per store.

DuckDB lets one process at a time write a file. This backend therefore keeps
leases in the memory of the process that opened the file, and treats every
lease as void when the file is opened again (the process that held it is
gone). Several processes need :class:`~sayiir_nb.PostgresBackend`.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ..errors import BackendError, RunNotFoundError, StoreLockedError
from ..queue import Enqueueing
from ..status import AttemptState, RunState
from .base import (
    AttemptRecord,
    Checkpoint,
    Lease,
    LocalLeases,
    LocalQueueing,
    RunRecord,
    RunSnapshot,
    WriteBatch,
    check_batch,
    is_runnable,
    refuse_contradictions,
)
from .rows import attempt_from_row, error_params, run_from_row, run_params
from .schema import migrate

if TYPE_CHECKING:
    pass

_RUN_COLUMNS = (
    "run_id, workflow_name, definition_hash, state, input_json, input_digest, codec, "
    "output_json, error_type, error_message, error_traceback, error_step, "
    "created_epoch, updated_epoch, wake_epoch"
)
# The row a step writes is kept narrow (DuckDB's cost of an insert grows with
# its columns): errors live in their own table, written only on failure, and
# the checkpoint is the output of the succeeded attempt.
_ATTEMPT_COLUMNS = (
    "run_id, step_id, task_name, attempt, state, scheduled_epoch, started_epoch, "
    "ended_epoch, wait_before_s, owner, output_json"
)
_ATTEMPT_READ = (
    "a.run_id, a.step_id, a.task_name, a.attempt, a.state, a.scheduled_epoch, "
    "a.started_epoch, a.ended_epoch, a.wait_before_s, a.owner, e.error_type, "
    "e.error_message, e.error_traceback FROM sayiir_attempts a "
    "LEFT JOIN sayiir_attempt_errors e USING (run_id, step_id, attempt)"
)
_ATTEMPT_ROW = "(" + ", ".join(["?"] * 11) + ")"
_ATTEMPT_UPDATE = (
    "UPDATE sayiir_attempts SET state = ?, scheduled_epoch = ?, started_epoch = ?, "
    "ended_epoch = ?, wait_before_s = ?, owner = ?, output_json = ? "
    "WHERE run_id = ? AND step_id = ? AND attempt = ? RETURNING attempt"
)
_ERROR_INSERT = "INSERT INTO sayiir_attempt_errors VALUES "
_ERROR_ROW = "(?, ?, ?, ?, ?, ?)"
_RUN_UPDATE = (
    "UPDATE sayiir_runs SET state = ?, output_json = ?, error_type = ?, "
    "error_message = ?, error_traceback = ?, error_step = ?, wake_epoch = ?, "
    "updated_epoch = ?, definition_hash = coalesce(?, definition_hash) "
    "WHERE run_id = ?"
)
_LOCK_HOLDER = re.compile(r"PID (\d+)")


class _RunKeys:
    """Which attempts and checkpoints of one run are stored.

    The attempts table has no index (an index makes every step's insert
    slower, more so as the table grows); the process that holds the file is
    its only writer, so it checks the keys here instead.
    """

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.attempts = {(step, attempt) for step, attempt, _ in rows}
        self.checkpoints = {step for step, _, is_checkpoint in rows if is_checkpoint}

    def refuse(self, run_id: str, batch: WriteBatch) -> None:
        refuse_contradictions(run_id, batch, self.attempts, self.checkpoints)

    def add(self, batch: WriteBatch) -> None:
        self.attempts.update((a.step_id, a.attempt) for a in batch.inserts)
        if batch.checkpoint is not None:
            self.checkpoints.add(batch.checkpoint.step_id)


class _SharedFile:
    """One open store file, shared by every backend of this process on it.

    DuckDB gives one process one database per file; sharing the connection,
    the lock and the leases here means that a second ``DuckDBBackend`` on the
    same path (a notebook cell run again) sees the same leases.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = _connect(path)
        self.conn.execute("SET TimeZone = 'UTC'")
        self.lock = threading.RLock()
        self.leases = LocalLeases()
        self.keys: dict[str, _RunKeys] = {}
        self.users = 0


_OPEN: dict[str, _SharedFile] = {}
_OPEN_LOCK = threading.Lock()


def _open_shared(path: str) -> _SharedFile:
    with _OPEN_LOCK:
        shared = _OPEN.get(path) if path != ":memory:" else None
        if shared is None:
            shared = _SharedFile(path)
            if path != ":memory:":
                _OPEN[path] = shared
        shared.users += 1
        return shared


def _close_shared(shared: _SharedFile) -> None:
    with _OPEN_LOCK:
        shared.users -= 1
        if shared.users == 0:
            _OPEN.pop(shared.path, None)
            with shared.lock:
                shared.conn.close()


class DuckDBBackend(LocalQueueing, Enqueueing):
    """Runs, checkpoints and attempts in one DuckDB file.

    Parameters
    ----------
    path
        The store file; created with its folder if missing. ``":memory:"``
        gives a DuckDB database that lives as long as the backend.

    Several backends opened on one path in one process share the file's
    connection and leases.

    Raises
    ------
    StoreLockedError
        If another process holds the file. DuckDB allows one writing process
        per file: use one kernel per store file, or PostgreSQL for several
        processes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path) if str(path) == ":memory:" else str(Path(path).resolve())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._file = _open_shared(self.path)
        self._conn = self._file.conn
        self._lock = self._file.lock
        self._leases = self._file.leases
        self._closed = False
        try:
            with self._lock:
                self.schema_version = migrate(self._conn, f"DuckDB store {self.path}")
        except duckdb.Error as error:
            self.close()
            raise BackendError(
                f"cannot prepare the schema of DuckDB store {self.path}: {error}"
            ) from error
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"DuckDBBackend({self.path!r})"

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction. Any failure rolls back and raises: DuckDB would
        otherwise turn the COMMIT after a failed statement into a silent
        rollback."""
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException as error:
                _rollback(conn)
                if isinstance(error, duckdb.Error):
                    raise BackendError(
                        f"DuckDB store {self.path}: {error}; the transaction was "
                        "rolled back and nothing was written."
                    ) from error
                raise
            try:
                conn.execute("COMMIT")
            except duckdb.Error as error:
                _rollback(conn)
                raise BackendError(
                    f"DuckDB store {self.path}: commit failed ({error}); nothing "
                    "was written."
                ) from error

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            try:
                return self._conn.execute(sql, params).fetchall()
            except duckdb.Error as error:
                raise BackendError(f"DuckDB store {self.path}: {error}") from error

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"DuckDB store {self.path} is closed.")

    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        with self._lock:
            try:
                self._statement(_RUN_INSERT, run_params(record))
            except BackendError as error:
                if not isinstance(error.__cause__, duckdb.ConstraintException):
                    raise
                existing = self.get_run(record.run_id)
                if existing is None:
                    raise
                return existing, False
            self._file.keys[record.run_id] = _RunKeys([])
        if record.state is RunState.PENDING:
            self._leases.wakeups.wake()
        return record, True

    def reset_run(self, lease: Lease, record: RunRecord) -> None:
        with self._lock:
            self._leases.check(lease)
            self._leases.forget(record.run_id)
            with self._tx() as conn:
                for table in (
                    "sayiir_signals",
                    "sayiir_attempt_errors",
                    "sayiir_attempts",
                    "sayiir_runs",
                ):
                    conn.execute(
                        f"DELETE FROM {table} WHERE run_id = ?", [record.run_id]
                    )
                conn.execute(_RUN_INSERT, run_params(record))

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM sayiir_runs WHERE run_id = ?", [run_id]
        )
        return run_from_row(rows[0]) if rows else None

    def load(self, run_id: str) -> RunSnapshot | None:
        with self._lock:
            run = self.get_run(run_id)
            if run is None:
                return None
            rows = self._query(
                "SELECT step_id, output_json FROM sayiir_attempts "
                "WHERE run_id = ? AND output_json IS NOT NULL",
                [run_id],
            )
            return RunSnapshot(
                run=run, checkpoints=dict(rows), attempts=tuple(self.attempts(run_id))
            )

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = self._query(
            f"SELECT {_ATTEMPT_READ} WHERE a.run_id = ? ORDER BY "
            "coalesce(a.started_epoch, a.scheduled_epoch), a.step_id, a.attempt",
            [run_id],
        )
        return [attempt_from_row(row) for row in rows]

    def list_runs(self) -> list[RunRecord]:
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM sayiir_runs ORDER BY created_epoch"
        )
        return [run_from_row(row) for row in rows]

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
            rows = self._query(
                f"SELECT {_RUN_COLUMNS} FROM sayiir_runs "
                "WHERE state IN ('pending', 'running', 'waiting') "
                "AND coalesce(wake_epoch, 0) <= ? ORDER BY coalesce(wake_epoch, 0), "
                "created_epoch",
                [now_epoch],
            )
            leased = self._leases.leased()
            for row in rows:
                run = run_from_row(row)
                known = workflows is None or run.workflow_name in workflows
                if known and is_runnable(run, leased, now_epoch):
                    lease = self._leases.claim(run.run_id, owner, lease_s)
                    if lease is not None:
                        return lease
            return None

    def current_lease(self, run_id: str) -> Lease | None:
        return self._leases.current(run_id)

    def renew(self, lease: Lease, lease_s: float) -> Lease:
        return self._leases.renew(lease, lease_s)

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._leases.release(lease)
            if self._leases.current(lease.run_id) is None:
                self._file.keys.pop(lease.run_id, None)

    def revoke(self, run_id: str) -> None:
        with self._lock:
            self._leases.revoke(run_id)
            self._file.keys.pop(run_id, None)

    def write(self, lease: Lease, batch: WriteBatch) -> None:
        check_batch(batch)
        statements = _statements(lease.run_id, batch)
        with self._lock:
            self._leases.check(lease)
            keys = self._keys(lease.run_id)
            keys.refuse(lease.run_id, batch)
            if len(statements) == 1:
                # a single statement commits atomically on its own
                self._statement(*statements[0])
            else:
                with self._tx() as conn:
                    for sql, params, expects_row in statements:
                        _run_statement(conn, sql, params, expects_row)
            keys.add(batch)
        if batch.run is not None:
            self._leases.settled(lease.run_id, batch.run.state)

    def _keys(self, run_id: str) -> _RunKeys:
        keys = self._file.keys.get(run_id)
        if keys is None:
            rows = self._query(
                "SELECT step_id, attempt, output_json IS NOT NULL FROM sayiir_attempts "
                "WHERE run_id = ?",
                [run_id],
            )
            keys = self._file.keys[run_id] = _RunKeys(rows)
        return keys

    def _statement(
        self, sql: str, params: Sequence[Any], expects_row: bool = False
    ) -> None:
        with self._lock:
            self._check_open()
            try:
                _run_statement(self._conn, sql, params, expects_row)
            except duckdb.Error as error:
                raise BackendError(
                    f"DuckDB store {self.path}: {error}; nothing was written."
                ) from error

    def send_signal(self, run_id: str, name: str, payload_json: str) -> str:
        signal_id = uuid.uuid4().hex
        now = time.time()
        with self._lock:
            if self.get_run(run_id) is None:
                raise RunNotFoundError(f"no run with id {run_id!r} in {self!r}.")
            self._statement(
                "INSERT INTO sayiir_signals (run_id, name, payload_json, sent_epoch, "
                "signal_id) VALUES (?, ?, ?, ?, ?)",
                [run_id, name, payload_json, now, signal_id],
            )
            # a worker takes a run that waits up now to look at the signal
            self._statement(
                "UPDATE sayiir_runs SET wake_epoch = ? WHERE run_id = ? AND "
                "state = 'waiting' AND (wake_epoch IS NULL OR wake_epoch > ?)",
                [now, run_id, now],
            )
        self._leases.wakeups.wake()
        return signal_id

    def next_signal(
        self, run_id: str, name: str, sent_before_epoch: float | None = None
    ) -> tuple[str, str] | None:
        rows = self._query(
            "SELECT signal_id, payload_json FROM sayiir_signals WHERE run_id = ? AND "
            "name = ? AND consumed_epoch IS NULL AND sent_epoch < ? "
            "ORDER BY sent_epoch LIMIT 1",
            [
                run_id,
                name,
                float("inf") if sent_before_epoch is None else sent_before_epoch,
            ],
        )
        return (rows[0][0], rows[0][1]) if rows else None

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The store's own connection, held for the block (the views live in
        the file)."""
        with self._lock:
            self._check_open()
            yield self._conn

    def delete_runs(self, run_ids: list[str], *, updated_before_epoch: float) -> int:
        with self._lock:
            leased = self._leases.leased()
            wanted = [r for r in run_ids if r not in leased]
            if not wanted:
                return 0
            marks = ", ".join("?" * len(wanted))
            with self._tx() as conn:
                rows = conn.execute(
                    f"SELECT run_id FROM sayiir_runs WHERE run_id IN ({marks}) AND "
                    "state IN ('completed', 'failed', 'cancelled') "
                    "AND updated_epoch <= ?",
                    [*wanted, updated_before_epoch],
                ).fetchall()
                chosen = [row[0] for row in rows]
                marks = ", ".join("?" * len(chosen)) or "NULL"
                for table in (
                    "sayiir_signals",
                    "sayiir_attempt_errors",
                    "sayiir_attempts",
                    "sayiir_runs",
                ):
                    conn.execute(
                        f"DELETE FROM {table} WHERE run_id IN ({marks})", chosen
                    )
            for run_id in chosen:
                self._file.keys.pop(run_id, None)
            return len(chosen)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one SQL statement on the store's connection (for tests and
        tooling); returns the DuckDB result."""
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params)

    def close(self) -> None:
        """Stop using the file; it is closed once no backend of this process
        uses it, and then another process may open it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _close_shared(self._file)

    def __enter__(self) -> DuckDBBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: str) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path)
    except duckdb.IOException as error:
        text = str(error)
        if "lock" not in text.lower():
            raise BackendError(f"cannot open DuckDB store {path}: {error}") from error
        holder = _LOCK_HOLDER.search(text)
        who = f"process {holder.group(1)}" if holder else "another process"
        raise StoreLockedError(
            f"the DuckDB store {path} is open in {who}. DuckDB lets one process "
            "use a file at a time: close the runner there (runner.close(), or shut "
            "down that kernel), or give this process another store file. To "
            "analyse the runs elsewhere, export them in the process that holds "
            "the file (runner.history.export_parquet(folder)) or copy the file "
            "while nothing runs."
        ) from error


_RUN_INSERT = (
    f"INSERT INTO sayiir_runs ({_RUN_COLUMNS}) VALUES ({', '.join(['?'] * 15)})"
)


def _statements(run_id: str, batch: WriteBatch) -> list[tuple[str, list[Any], bool]]:
    """The SQL of a batch: one multi-row insert, one update per replaced
    attempt, and the run's update."""
    point = batch.checkpoint
    statements: list[tuple[str, list[Any], bool]] = []
    if batch.inserts:
        rows = ", ".join([_ATTEMPT_ROW] * len(batch.inserts))
        params = [v for a in batch.inserts for v in _attempt_params(a, point)]
        statements.append(
            (
                f"INSERT INTO sayiir_attempts ({_ATTEMPT_COLUMNS}) VALUES {rows}",
                params,
                False,
            )
        )
    for attempt in batch.updates:
        values = _attempt_params(attempt, point)
        params = [*values[4:], attempt.run_id, attempt.step_id, attempt.attempt]
        statements.append((_ATTEMPT_UPDATE, params, True))
    failed = [a for a in (*batch.inserts, *batch.updates) if a.error is not None]
    if failed:
        rows = ", ".join([_ERROR_ROW] * len(failed))
        params = [
            v
            for a in failed
            for v in (a.run_id, a.step_id, a.attempt, *error_params(a.error))
        ]
        statements.append((_ERROR_INSERT + rows, params, False))
    update = batch.run
    if update is not None:
        error = update.error
        params = [
            update.state.value,
            update.output_json,
            *error_params(error),
            error.step_id if error else None,
            update.wake_epoch,
            time.time(),
            update.definition_hash,
            run_id,
        ]
        statements.append((_RUN_UPDATE, params, False))
    if batch.consume_signal is not None:
        statements.append(
            (
                "UPDATE sayiir_signals SET consumed_epoch = ? WHERE run_id = ? AND "
                "signal_id = ? AND consumed_epoch IS NULL RETURNING signal_id",
                [time.time(), run_id, batch.consume_signal],
                True,
            )
        )
    return statements


def _run_statement(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any], expects_row: bool
) -> None:
    result = conn.execute(sql, params)
    if expects_row and result.fetchone() is None:
        raise duckdb.ConstraintException(
            f"the attempt to update (parameters {list(params[-3:])}) is not stored"
        )


def _rollback(conn: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        conn.execute("ROLLBACK")


def _attempt_params(a: AttemptRecord, point: Checkpoint | None) -> list[Any]:
    is_checkpoint = (
        point is not None
        and point.step_id == a.step_id
        and a.state is AttemptState.SUCCEEDED
    )
    return [
        a.run_id,
        a.step_id,
        a.task_name,
        a.attempt,
        a.state.value,
        a.scheduled_epoch,
        a.started_epoch,
        a.ended_epoch,
        a.wait_before_s,
        a.owner,
        point.output_json if is_checkpoint and point is not None else None,
    ]
