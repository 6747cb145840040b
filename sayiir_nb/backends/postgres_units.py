"""The parts of runs that PostgreSQL workers claim one by one (branches of
a parallel, items of a fan-out): their statements, as a mixin of
:class:`~sayiir_nb.backends.postgres.PostgresBackend`."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import LeaseLostError
from .base import Lease, RunSnapshot, UnitRecord
from .postgres_rows import ATTEMPT_COLUMNS, UNIT_COLUMNS, like_prefix, unit_from_row
from .rows import attempt_from_row

if TYPE_CHECKING:
    import psycopg

    from .base import RunRecord

T = TypeVar("T")


class SharedUnits:
    """Statements on the ``units`` table (a mixin: it needs the backend's
    connection helpers)."""

    _requests: dict[str, str | None]

    def _rows(
        self, sql: str, params: Sequence[Any] = (), *, retry: bool = True
    ) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _with_conn(
        self, use: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True
    ) -> T:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        raise NotImplementedError

    def get_run(self, run_id: str) -> RunRecord | None:
        raise NotImplementedError

    def load_for_unit(self, unit: UnitRecord) -> RunSnapshot | None:
        """What a worker needs to run one part of a run: the attempts inside
        the part, and the checkpoints outside its parallel or fan-out (not
        those of its siblings: a fan-out of n items would otherwise read n
        outputs n times)."""
        run = self.get_run(unit.run_id)
        if run is None:
            return None
        own = like_prefix(unit.unit_id)  # a branch: the steps under it
        if unit.kind == "item":
            own = own[:-1]  # an item: its one step ("f[3]", not "f[30]")
        siblings = [
            like_prefix(unit.parent_id + "["),
            like_prefix(unit.parent_id + "/"),
        ]
        rows = self._rows(
            "SELECT " + ATTEMPT_COLUMNS + ", output_json, step_id LIKE %s "
            "FROM {s}.attempts WHERE run_id = %s AND (step_id LIKE %s OR "
            "(output_json IS NOT NULL AND step_id NOT LIKE %s AND "
            "step_id NOT LIKE %s)) "
            "ORDER BY coalesce(started_epoch, scheduled_epoch), step_id, attempt",
            [own, unit.run_id, own, *siblings],
        )
        checkpoints = {row[1]: row[13] for row in rows if row[13] is not None}
        attempts = tuple(attempt_from_row(row[:13]) for row in rows if row[14])
        return RunSnapshot(run=run, checkpoints=checkpoints, attempts=attempts)

    def publish_units(self, lease: Lease, units: Sequence[UnitRecord]) -> None:
        """Store parts of a run for workers to claim (those stored already are
        kept as they are)."""
        if not units:
            return
        now = time.time()
        rows = [
            (
                u.run_id, u.unit_id, u.parent_id, u.kind, u.node_prefix, u.node_id,
                u.part, u.input_json, u.context_json, "ready", None,
                u.max_claimed, now + i * 1e-6,
            )
            for i, u in enumerate(units)
        ]  # fmt: skip
        columns = UNIT_COLUMNS + ", created_epoch"

        def use(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                check_lease(conn, self, lease)
                with conn.cursor() as cursor:
                    cursor.executemany(
                        self._sql(
                            f"INSERT INTO {{s}}.units ({columns}) VALUES ("
                            + ", ".join(["%s"] * 13)
                            + ") ON CONFLICT (run_id, unit_id) DO NOTHING"
                        ),
                        rows,
                    )
                conn.execute("SELECT pg_notify(%s, %s)", [self.channel, lease.run_id])

        self._with_conn(use)

    def unit_states(
        self, run_id: str, parent_id: str
    ) -> list[tuple[str, str, float | None]]:
        """``(unit id, state, wake epoch)`` of every part of ``parent_id``."""
        rows = self._rows(
            "SELECT unit_id, state, wake_epoch FROM {s}.units WHERE run_id = %s "
            "AND parent_id = %s ORDER BY created_epoch",
            [run_id, parent_id],
        )
        return [(unit_id, state, wake) for unit_id, state, wake in rows]

    def drop_units(self, lease: Lease) -> int:
        """Delete the parts of the run that nobody holds (its caller runs the
        run itself, so workers must not claim them); return how many."""

        def use(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                check_lease(conn, self, lease)
                cursor = conn.execute(
                    self._sql(
                        "DELETE FROM {s}.units WHERE run_id = %s AND NOT "
                        "(state = 'claimed' AND expires_epoch > {s}.now_epoch())"
                    ),
                    [lease.run_id],
                )
                return cursor.rowcount

        return self._with_conn(use)

    def live_units(self, run_id: str) -> list[UnitRecord]:
        """The parts of a run that a worker holds a live claim on now."""
        rows = self._rows(
            "SELECT " + UNIT_COLUMNS + " FROM {s}.units WHERE run_id = %s AND "
            "state = 'claimed' AND expires_epoch > {s}.now_epoch()",
            [run_id],
        )
        return [unit_from_row(row) for row in rows]

    def get_unit(self, run_id: str, unit_id: str) -> UnitRecord | None:
        rows = self._rows(
            "SELECT " + UNIT_COLUMNS + " FROM {s}.units WHERE run_id = %s AND "
            "unit_id = %s",
            [run_id, unit_id],
        )
        return unit_from_row(rows[0]) if rows else None

    def claim_unit(
        self,
        run_id: str,
        parent_id: str,
        owner: str,
        lease_s: float,
        now_epoch: float,
        workflows: Collection[str] | None = None,
    ) -> Lease | None:
        """Claim a claimable part of ``parent_id`` in run ``run_id``."""
        names = None if workflows is None else sorted(workflows)
        rows = self._rows(
            "SELECT o_unit, o_fence, {s}.now_epoch() + %s FROM "
            "{s}.claim_unit(%s, %s, %s, %s, %s, %s::text[])",
            [lease_s, owner, lease_s, now_epoch, run_id, parent_id, names],
        )
        if not rows or rows[0][0] is None:
            return None
        unit_id, fence, expires = rows[0]
        self._requests[run_id] = None  # parts are handed out only then
        return Lease(
            run_id=run_id, owner=owner, fence=fence, expires_epoch=expires, unit=unit_id
        )

    def finish_unit(
        self, lease: Lease, state: str, wake_epoch: float | None = None
    ) -> None:
        """End a claim of a part: ``done``, ``failed``, ``waiting`` (until
        ``wake_epoch``, or a signal) or ``ready`` (given back unfinished)."""
        self._rows(
            "SELECT {s}.finish_unit(%s, %s, %s, %s, %s, %s)",
            [lease.run_id, lease.unit, lease.fence, state, wake_epoch, time.time()],
        )


def check_lease(conn: psycopg.Connection[Any], backend: Any, lease: Lease) -> None:
    if lease.unit:
        sql = (
            "SELECT 1 FROM {s}.units WHERE run_id = %s AND unit_id = %s AND "
            "fence = %s AND state = 'claimed' FOR SHARE"
        )
        params: list[Any] = [lease.run_id, lease.unit, lease.fence]
    else:
        sql = (
            "SELECT 1 FROM {s}.leases WHERE run_id = %s AND fence = %s AND "
            "owner IS NOT NULL FOR SHARE"
        )
        params = [lease.run_id, lease.fence]
    if conn.execute(backend._sql(sql), params).fetchone() is None:
        raise lease_lost(lease)


def lease_lost(lease: Lease) -> LeaseLostError:
    what = f"part {lease.unit!r} of run" if lease.unit else "run"
    return LeaseLostError(
        f"{what} {lease.run_id!r}: the lease of {lease.owner!r} (fence "
        f"{lease.fence}) is no longer current; another owner has it."
    )
