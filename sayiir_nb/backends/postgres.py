"""The backend for several processes or machines: one PostgreSQL schema.

Leases live in the database and lapse with the server's clock, so a worker
that dies has its runs taken over once its lease expires, with no cron job;
holders keep them alive by heartbeat (:meth:`PostgresBackend.renew_all`).
Every write carries its lease's fence and is refused once another owner took
over. A step's write, a claim and a heartbeat are one round trip each
(server-side functions in :mod:`.postgres_sql`). Workers are woken by
LISTEN/NOTIFY (:meth:`PostgresBackend.listen`).

Connections come from a pool; one that the server dropped (a restart,
``pg_terminate_backend``) is replaced and the statement is tried again. A
write whose connection broke mid-way is checked against the store before it
is tried again, so it is applied once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BackendError, RunNotFoundError
from ..queue import Enqueueing
from ..status import RunState
from .base import (
    AttemptRecord,
    Lease,
    RunRecord,
    RunSnapshot,
    WriteBatch,
    check_batch,
)
from .postgres_limits import SharedTaskLimits
from .postgres_listen import PgListener
from .postgres_rows import (
    ATTEMPT_COLUMNS,
    RUN_COLUMNS,
    fill_history,
    like_prefix,
    payload,
    safe_dsn,
)
from .postgres_sql import CONTRADICTION, LEASE_LOST, MIGRATIONS, SCHEMA_VERSION
from .postgres_units import SharedUnits, lease_lost
from .rows import attempt_from_row, run_from_row, run_params

if TYPE_CHECKING:
    import duckdb
    import psycopg
    from psycopg_pool import ConnectionPool


logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_TRIES = 4
# how long a statement waits in all for a connection while the server is away
# (a restart, a failover) before it fails
_CONNECT_WAIT_S = 30.0


_STORED: tuple[Any, ...] = ("stored",)  # a write found applied after a lost reply


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class PostgresBackend(SharedUnits, SharedTaskLimits, Enqueueing):
    """Runs, checkpoints, attempts, signals and the work queue in PostgreSQL.

    Parameters
    ----------
    dsn
        A libpq connection string or URL, e.g.
        ``"postgresql://user@db.example/sayiir"``. It is never logged with its
        password.
    schema
        The PostgreSQL schema holding the tables (created and migrated when
        the backend opens); several projects can share a database with
        different schemas.
    pool_size
        The most connections this backend opens at once. A worker raises it
        to its concurrency plus a few.

    Raises
    ------
    BackendError
        If the server cannot be reached or the schema is newer than this
        version of sayiir-nb.
    """

    leases_expire = True
    shares_steps = True

    def __init__(self, dsn: str, *, schema: str = "sayiir", pool_size: int = 8) -> None:
        try:
            import psycopg  # noqa: F401
            from psycopg_pool import ConnectionPool
        except ImportError as error:
            raise BackendError(
                "PostgresBackend needs psycopg 3 and psycopg_pool: "
                "pip install 'sayiir-nb[postgres]'."
            ) from error
        if not _SCHEMA_NAME.match(schema):
            raise BackendError(
                f"schema name {schema!r} must be lower-case letters, digits and "
                "underscores, starting with a letter or underscore."
            )
        self.dsn = dsn
        self.schema = schema
        self.channel = f"{schema}_work"
        self._closed = False
        self._requests: dict[str, str | None] = {}
        self.round_trips = 0  # statements sent by _rows and write (a benchmark figure)
        _check_reachable(dsn, schema)
        self._pool: ConnectionPool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True, "application_name": "sayiir-nb"},
            open=False,
            name=f"sayiir-{schema}",
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except Exception as error:
            self._pool.close()
            raise BackendError(
                f"cannot connect to PostgreSQL at {safe_dsn(dsn)}: {error}"
            ) from None
        try:
            self.schema_version = self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresBackend({safe_dsn(self.dsn)!r}, schema={self.schema!r})"

    # -- connections --------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text.replace("{s}", self.schema)

    def _with_conn(
        self,
        use: Callable[[psycopg.Connection[Any]], T],
        *,
        retry: bool = True,
        recover: Callable[[psycopg.Connection[Any]], T | None] | None = None,
        lease: Lease | None = None,
    ) -> T:
        """Run ``use(conn)`` on a pooled connection; a connection the server
        dropped is replaced and ``use`` tried again (if ``retry``). Before a
        retry, ``recover(conn)`` tidies up after a call whose reply was lost
        although it was committed; what it returns, unless ``None``, is the
        lost call's result. ``lease`` is the one a write is made under."""
        import psycopg

        if self._closed:
            raise BackendError(f"{self!r} is closed.")
        deadline = time.monotonic() + _CONNECT_WAIT_S
        for attempt in range(1, _TRIES + 1):
            try:
                with self._pool.connection(timeout=_left(deadline)) as conn:
                    if attempt > 1 and recover is not None:
                        found = recover(conn)
                        if found is not None:
                            return found
                    return use(conn)
            except psycopg.OperationalError as error:
                last = attempt == _TRIES or _left(deadline) <= 0.1
                if not retry or last or self._closed:
                    if lease is not None:
                        raise BackendError(
                            f"{self!r}: the connection failed while writing run "
                            f"{lease.run_id!r} ({error}); the write may not be "
                            "stored."
                        ) from error
                    raise BackendError(
                        f"{self!r}: the connection failed ({error})."
                    ) from error
                logger.warning(
                    "a PostgreSQL connection failed (%s); reconnecting",
                    error,
                    extra={"event": "backend.reconnect", "attempt": attempt},
                )
                self._pool.check()
                time.sleep(0.05 * attempt)
            except psycopg.Error as error:
                raise _translate(error, self, lease) from error
        raise AssertionError("unreachable")

    def _rows(
        self, sql: str, params: Sequence[Any] = (), *, retry: bool = True
    ) -> list[tuple[Any, ...]]:
        text = self._sql(sql)

        def use(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            self.round_trips += 1
            cursor = conn.execute(text, params)
            return cursor.fetchall() if cursor.description else []

        return self._with_conn(use, retry=retry)

    def _migrate(self) -> int:
        def use(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    [f"sayiir-nb schema {self.schema}"],
                )
                conn.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
                conn.execute(
                    self._sql(
                        "CREATE TABLE IF NOT EXISTS {s}.meta "
                        "(key text PRIMARY KEY, value text NOT NULL)"
                    )
                )
                row = conn.execute(
                    self._sql("SELECT value FROM {s}.meta WHERE key = 'schema_version'")
                ).fetchone()
                current = int(row[0]) if row else 0
                if current > SCHEMA_VERSION:
                    raise BackendError(
                        f"schema {self.schema!r} has version {current}, newer than "
                        f"this sayiir-nb knows ({SCHEMA_VERSION}); upgrade sayiir-nb."
                    )
                for version, statements in MIGRATIONS:
                    if version > current:
                        for statement in statements:
                            conn.execute(self._sql(statement))
                        current = version
                conn.execute(
                    self._sql(
                        "INSERT INTO {s}.meta VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    ),
                    [str(current)],
                )
                return current

        return self._with_conn(use)

    # -- runs ---------------------------------------------------------------

    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        notify = record.state in (RunState.PENDING, RunState.WAITING)
        rows = self._rows(
            "WITH ins AS (INSERT INTO {s}.runs ("
            + RUN_COLUMNS
            + ") VALUES ("
            + ", ".join(["%s"] * 15)
            + ") ON CONFLICT (run_id) DO NOTHING RETURNING run_id) "
            "SELECT run_id, CASE WHEN %s THEN pg_notify(%s, run_id) END FROM ins",
            [*run_params(record), notify, self.channel],
        )
        if rows:
            return record, True
        existing = self.get_run(record.run_id)
        if existing is None:
            raise BackendError(
                f"run {record.run_id!r} could neither be created nor read back."
            )
        return existing, False

    def reset_run(self, lease: Lease, record: RunRecord) -> None:
        params = [lease.run_id]
        self._requests.pop(lease.run_id, None)  # the run starts over

        def use(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                found = conn.execute(
                    self._sql(
                        "SELECT 1 FROM {s}.leases WHERE run_id = %s AND fence = %s "
                        "AND owner IS NOT NULL FOR SHARE"
                    ),
                    [lease.run_id, lease.fence],
                ).fetchone()
                if found is None:
                    raise lease_lost(lease)
                for table in ("attempts", "signals", "units", "runs"):
                    conn.execute(
                        self._sql(f"DELETE FROM {{s}}.{table} WHERE run_id = %s"),
                        params,
                    )
                conn.execute(
                    self._sql(
                        "INSERT INTO {s}.runs ("
                        + RUN_COLUMNS
                        + ") VALUES ("
                        + ", ".join(["%s"] * 15)
                        + ")"
                    ),
                    run_params(record),
                )

        self._with_conn(use)

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows(
            "SELECT " + RUN_COLUMNS + " FROM {s}.runs WHERE run_id = %s", [run_id]
        )
        return run_from_row(rows[0]) if rows else None

    def load(self, run_id: str) -> RunSnapshot | None:
        run = self.get_run(run_id)
        if run is None:
            return None
        rows = self._rows(
            "SELECT " + ATTEMPT_COLUMNS + ", output_json FROM {s}.attempts "
            "WHERE run_id = %s ORDER BY coalesce(started_epoch, scheduled_epoch), "
            "step_id, attempt",
            [run_id],
        )
        checkpoints = {row[1]: row[13] for row in rows if row[13] is not None}
        attempts = tuple(attempt_from_row(row[:13]) for row in rows)
        return RunSnapshot(run=run, checkpoints=checkpoints, attempts=attempts)

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = self._rows(
            "SELECT " + ATTEMPT_COLUMNS + " FROM {s}.attempts WHERE run_id = %s "
            "ORDER BY coalesce(started_epoch, scheduled_epoch), step_id, attempt",
            [run_id],
        )
        return [attempt_from_row(row) for row in rows]

    def list_runs(self) -> list[RunRecord]:
        rows = self._rows(
            "SELECT " + RUN_COLUMNS + " FROM {s}.runs ORDER BY created_epoch"
        )
        return [run_from_row(row) for row in rows]

    # -- leases -------------------------------------------------------------

    def claim(self, run_id: str, owner: str, lease_s: float) -> Lease | None:
        """Take the run's lease; a retry after a lost reply finds the lease
        the lost call took for ``owner`` and keeps it."""
        mine = self._sql(
            "SELECT fence, expires_epoch FROM {s}.leases WHERE run_id = %s AND "
            "owner = %s AND expires_epoch > {s}.now_epoch()"
        )
        take = self._sql("SELECT fence, expires_epoch FROM {s}.claim_run(%s, %s, %s)")

        def use(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            self.round_trips += 1
            return conn.execute(take, [run_id, owner, lease_s]).fetchall()

        def recover(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]] | None:
            return conn.execute(mine, [run_id, owner]).fetchall() or None

        rows = self._with_conn(use, recover=recover)
        if not rows:
            return None
        return Lease(
            run_id=run_id, owner=owner, fence=rows[0][0], expires_epoch=rows[0][1]
        )

    def claim_next(
        self,
        owner: str,
        lease_s: float,
        now_epoch: float,
        workflows: Collection[str] | None = None,
    ) -> Lease | None:
        return self.claim_work(owner, lease_s, now_epoch, ("run",), workflows)[0]

    def claim_work(
        self,
        owner: str,
        lease_s: float,
        now_epoch: float,
        kinds: tuple[str, ...] = ("unit", "run"),
        workflows: Collection[str] | None = None,
    ) -> tuple[Lease | None, float | None]:
        """Claim the next runnable work (a part of a run first, then a run) of
        ``workflows`` (any if ``None``); if there is none, return when
        something is due next."""
        names = None if workflows is None else sorted(workflows)
        rows = self._rows(
            "SELECT kind, run_id, unit_id, fence, expires_epoch, next_due_epoch "
            "FROM {s}.claim_next(%s, %s, %s, %s, %s::text[])",
            [owner, lease_s, now_epoch, ",".join(kinds), names],
        )
        kind, run_id, unit_id, fence, expires, next_due = rows[0]
        if kind == "none":
            return None, next_due
        if unit_id:
            self._requests[run_id] = None  # parts are handed out only then
        lease = Lease(
            run_id=run_id, owner=owner, fence=fence, expires_epoch=expires, unit=unit_id
        )
        return lease, None

    def current_lease(self, run_id: str) -> Lease | None:
        rows = self._rows(
            "SELECT owner, fence, expires_epoch FROM {s}.leases WHERE run_id = %s "
            "AND owner IS NOT NULL AND expires_epoch > {s}.now_epoch()",
            [run_id],
        )
        if not rows:
            return None
        owner, fence, expires = rows[0]
        return Lease(run_id=run_id, owner=owner, fence=fence, expires_epoch=expires)

    def renew(self, lease: Lease, lease_s: float) -> Lease:
        lost = self.renew_all([lease], lease_s)
        if lost:
            raise lease_lost(lease)
        return lease

    def renew_all(self, leases: Sequence[Lease], lease_s: float) -> list[Lease]:
        """Extend every lease in one round trip; return those that were lost."""
        if not leases:
            return []
        runs = [lease for lease in leases if not lease.unit]
        units = [lease for lease in leases if lease.unit]
        rows = self._rows(
            "WITH r AS (UPDATE {s}.leases l SET expires_epoch = {s}.now_epoch() + %s "
            "FROM unnest(%s::text[], %s::bigint[]) t(run_id, fence) "
            "WHERE l.run_id = t.run_id AND l.fence = t.fence AND l.owner IS NOT NULL "
            "RETURNING l.run_id, ''::text AS unit_id), "
            "u AS (UPDATE {s}.units c SET expires_epoch = {s}.now_epoch() + %s "
            "FROM unnest(%s::text[], %s::text[], %s::bigint[]) t(run_id, unit_id, "
            "fence) WHERE c.run_id = t.run_id AND c.unit_id = t.unit_id AND "
            "c.fence = t.fence RETURNING c.run_id, c.unit_id) "
            "SELECT * FROM r UNION ALL SELECT * FROM u",
            [
                lease_s,
                [lease.run_id for lease in runs],
                [lease.fence for lease in runs],
                lease_s,
                [lease.run_id for lease in units],
                [lease.unit for lease in units],
                [lease.fence for lease in units],
            ],
        )
        kept = {(run_id, unit_id) for run_id, unit_id in rows}
        return [lease for lease in leases if (lease.run_id, lease.unit) not in kept]

    def release(self, lease: Lease) -> None:
        self._requests.pop(lease.run_id, None)  # read again by the next user
        if lease.unit:
            self.finish_unit(lease, "ready")
            return
        self._rows(
            "WITH l AS (UPDATE {s}.leases SET owner = NULL, expires_epoch = NULL "
            "WHERE run_id = %s AND fence = %s RETURNING run_id) "
            "SELECT pg_notify(%s, r.run_id) FROM l JOIN {s}.runs r USING (run_id) "
            "WHERE r.state IN ('pending', 'running') OR (r.state = 'waiting' AND "
            "r.wake_epoch <= %s)",
            [lease.run_id, lease.fence, self.channel, time.time()],
        )

    def revoke(self, run_id: str) -> None:
        self._rows(
            "UPDATE {s}.leases SET owner = NULL, expires_epoch = NULL, "
            "fence = nextval('{s}.fences') WHERE run_id = %s",
            [run_id],
        )

    def release_owners(self, prefix: str, keep: str) -> int:
        """Void the leases of owners whose id starts with ``prefix`` except
        ``keep`` (a worker restarted under the same id gives up what its
        previous life held); return how many were voided."""
        pattern = like_prefix(prefix)
        rows = self._rows(
            "WITH r AS (UPDATE {s}.leases SET owner = NULL, expires_epoch = NULL "
            "WHERE owner LIKE %s AND owner NOT LIKE %s RETURNING run_id), "
            "u AS (UPDATE {s}.units SET state = 'ready', owner = NULL, "
            "expires_epoch = NULL WHERE state = 'claimed' AND owner LIKE %s AND "
            "owner NOT LIKE %s RETURNING run_id), "
            "t AS (UPDATE {s}.task_slots SET holder = NULL, expires_epoch = NULL "
            "WHERE holder LIKE %s AND holder NOT LIKE %s RETURNING task_name) "
            "SELECT count(*), pg_notify(%s, 'released'), (SELECT count(*) FROM t) "
            "FROM (SELECT run_id FROM r UNION ALL SELECT run_id FROM u) x",
            [pattern, like_prefix(keep)] * 3 + [self.channel],
        )
        return int(rows[0][0]) if rows else 0

    # -- writes -------------------------------------------------------------

    def write(self, lease: Lease, batch: WriteBatch) -> None:
        check_batch(batch)
        body = json.dumps(payload(batch), allow_nan=False)
        sql = self._sql("SELECT {s}.write_batch(%s, %s, %s, %s::jsonb, %s)")
        params = [lease.run_id, lease.unit, lease.fence, body, time.time()]

        def use(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
            self.round_trips += 1
            return conn.execute(sql, params).fetchone() or (None,)

        def recover(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
            return _STORED if self._applied(conn, lease.run_id, batch) else None

        row = self._with_conn(use, recover=recover, lease=lease)
        if row is _STORED:
            return  # the broken attempt was stored after all
        self._requests[lease.run_id] = row[0]
        stopped = (RunState.CANCELLED, RunState.PAUSED)
        if batch.run is not None and batch.run.state in stopped:
            # the request is answered; parts still running in this process
            # must stop all the same
            self._requests[lease.run_id] = batch.run.state.value
        elif batch.run is not None and batch.run.state.is_finished:
            self._requests.pop(lease.run_id, None)  # nothing to ask now

    def _applied(
        self, conn: psycopg.Connection[Any], run_id: str, batch: WriteBatch
    ) -> bool:
        """Whether a batch whose connection broke was stored after all."""
        written = (*batch.inserts, *batch.updates)
        if not written:
            return False
        self.round_trips += 1
        rows = conn.execute(
            self._sql(
                "SELECT step_id, attempt, state FROM {s}.attempts WHERE run_id = %s "
                "AND (step_id, attempt) IN "
                "(SELECT * FROM unnest(%s::text[], %s::int[]))"
            ),
            [run_id, [a.step_id for a in written], [a.attempt for a in written]],
        ).fetchall()
        stored = {(step, number): state for step, number, state in rows}
        return all(stored.get((a.step_id, a.attempt)) == a.state.value for a in written)

    def requested(self, run_id: str, *, fresh: bool = False) -> RunState | None:
        """The cancel or pause asked for a run from any process (or done
        already: parts of a cancelled run stop too), as the last write under
        its lease saw it, or read now if ``fresh``."""
        if fresh or run_id not in self._requests:
            rows = self._rows(
                "SELECT CASE WHEN state IN ('cancelled', 'paused') THEN state "
                "ELSE requested END FROM {s}.runs WHERE run_id = %s",
                [run_id],
            )
            self._requests[run_id] = rows[0][0] if rows else None
        value = self._requests.get(run_id)
        return RunState(value) if value else None

    def request_control(self, run_id: str, state: RunState) -> bool:
        """Ask whoever executes the run to cancel or pause it at its next step
        boundary; return whether the run was still unfinished."""
        rows = self._rows(
            "UPDATE {s}.runs SET requested = %s WHERE run_id = %s AND state NOT IN "
            "('completed', 'failed', 'cancelled') "
            "RETURNING pg_notify(%s, run_id)",
            [state.value, run_id, f"{self.schema}_control"],
        )
        return bool(rows)

    # -- signals ------------------------------------------------------------

    def send_signal(self, run_id: str, name: str, payload_json: str) -> str:
        signal_id = uuid.uuid4().hex
        now = time.time()
        rows = self._rows(
            "WITH s AS (INSERT INTO {s}.signals (signal_id, run_id, name, "
            "payload_json, sent_epoch) SELECT %s, run_id, %s, %s, %s FROM {s}.runs "
            "WHERE run_id = %s ON CONFLICT (signal_id) DO UPDATE SET name = "
            "excluded.name RETURNING run_id), "  # a retry after a lost reply
            "r AS (UPDATE {s}.runs SET wake_epoch = %s WHERE run_id IN "
            "(SELECT run_id FROM s) AND state = 'waiting' AND (wake_epoch IS NULL "
            "OR wake_epoch > %s) RETURNING run_id), "
            "u AS (UPDATE {s}.units SET wake_epoch = %s WHERE run_id IN "
            "(SELECT run_id FROM s) AND state = 'waiting' RETURNING run_id) "
            "SELECT run_id, pg_notify(%s, run_id), (SELECT count(*) FROM r), "
            "(SELECT count(*) FROM u) FROM s",
            [signal_id, name, payload_json, now, run_id, now, now, now, self.channel],
        )
        if not rows:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self!r}.")
        return signal_id

    def next_signal(
        self, run_id: str, name: str, sent_before_epoch: float | None = None
    ) -> tuple[str, str] | None:
        rows = self._rows(
            "SELECT signal_id, payload_json FROM {s}.signals WHERE run_id = %s AND "
            "name = %s AND consumed_epoch IS NULL AND sent_epoch < %s "
            "ORDER BY sent_epoch LIMIT 1",
            [
                run_id,
                name,
                float("inf") if sent_before_epoch is None else sent_before_epoch,
            ],
        )
        return (rows[0][0], rows[0][1]) if rows else None

    # -- history ------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB database holding a copy of the stored rows,
        with the history views on it."""
        import duckdb

        from .schema import migrate

        runs = self._rows("SELECT " + RUN_COLUMNS + " FROM {s}.runs")
        attempts = self._rows(
            "SELECT run_id, step_id, task_name, attempt, state, scheduled_epoch, "
            "started_epoch, ended_epoch, wait_before_s, owner, output_json, "
            "error_type, error_message, error_traceback FROM {s}.attempts"
        )
        signals = self._rows(
            "SELECT run_id, signal_id, name, payload_json, sent_epoch, "
            "consumed_epoch FROM {s}.signals"
        )
        conn = duckdb.connect()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            migrate(conn, "the PostgreSQL history")
            fill_history(conn, runs, attempts, signals)
            yield conn
        finally:
            conn.close()

    def delete_runs(self, run_ids: list[str], *, updated_before_epoch: float) -> int:
        if not run_ids:
            return 0

        def use(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                rows = conn.execute(
                    self._sql(
                        "DELETE FROM {s}.runs r WHERE run_id = ANY(%s) AND state IN "
                        "('completed', 'failed', 'cancelled') AND updated_epoch <= %s "
                        "AND NOT EXISTS (SELECT 1 FROM {s}.leases l WHERE "
                        "l.run_id = r.run_id AND l.owner IS NOT NULL AND "
                        "l.expires_epoch > {s}.now_epoch()) RETURNING run_id"
                    ),
                    [run_ids, updated_before_epoch],
                ).fetchall()
                chosen = [row[0] for row in rows]
                for table in ("attempts", "signals", "units", "leases"):
                    conn.execute(
                        self._sql(f"DELETE FROM {{s}}.{table} WHERE run_id = ANY(%s)"),
                        [chosen],
                    )
                return len(chosen)

        return self._with_conn(use)

    # -- wake-ups -----------------------------------------------------------

    def listen(self) -> PgListener:
        """A listener woken when work is enqueued or becomes claimable, a
        part of a run ends, or a run is asked to stop; see :class:`PgListener`."""
        return PgListener(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement (``{s}`` stands for the schema), for tests and
        tooling; returns its rows."""
        return self._rows(sql, params)

    def ensure_pool(self, size: int) -> None:
        """Allow at least ``size`` connections at once."""
        if self._pool.max_size < size:
            self._pool.resize(self._pool.min_size, size)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_reachable(dsn: str, schema: str) -> None:
    """Fail at once, naming the server, if it cannot be reached (the pool
    would retry quietly until its timeout), or if ``schema`` is reserved."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SELECT quote_ident(%s)", [schema]).fetchone()
    except psycopg.Error as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = " ".join(lines) or type(error).__name__
        if not reason.endswith((".", "?", "!")):
            reason += "."
        raise BackendError(
            f"cannot connect to PostgreSQL at {safe_dsn(dsn)}: {reason} Check the "
            "DSN and that the server accepts connections from here."
        ) from None
    if row is None or row[0] != schema:
        raise BackendError(
            f"schema name {schema!r} is a word PostgreSQL reserves; choose another "
            "(for example 'sayiir' or 'sayiir_app')."
        )


def _translate(
    error: Exception, backend: PostgresBackend, lease: Lease | None = None
) -> Exception:
    state = getattr(error, "sqlstate", None)
    if state == LEASE_LOST and lease is not None:
        return lease_lost(lease)
    message = getattr(getattr(error, "diag", None), "message_primary", None) or error
    if state in (CONTRADICTION, "23505"):
        return BackendError(f"{message}; nothing was written.")
    return BackendError(f"{backend!r}: {message}")
