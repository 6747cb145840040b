"""Task limits shared through PostgreSQL: concurrency slots and a rate's
next free start, used by :mod:`sayiir_nb.limits`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .postgres_rows import like_prefix

T = TypeVar("T")


class SharedTaskLimits:
    """The task-limit statements of :class:`PostgresBackend` (a mixin: it
    needs the backend's ``_rows``)."""

    def _rows(
        self, sql: str, params: Sequence[Any] = (), *, retry: bool = True
    ) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _with_conn(
        self,
        use: Callable[[Any], T],
        *,
        retry: bool = True,
        recover: Callable[[Any], T | None] | None = None,
    ) -> T:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        raise NotImplementedError

    def acquire_slot(
        self, task_name: str, limit: int, holder: str, lease_s: float
    ) -> int | None:
        """Take one of ``limit`` slots of a task; ``None`` if all are held.

        ``holder`` names this one acquisition: when a connection breaks
        before the reply arrives, the retry first frees a slot the lost call
        may have taken, so no slot stays held by nobody's attempt."""
        free = self._sql(
            "UPDATE {s}.task_slots SET holder = NULL, expires_epoch = NULL "
            "WHERE task_name = %s AND holder = %s"
        )
        take = self._sql("SELECT {s}.acquire_slot(%s, %s, %s, %s)")

        def use(conn: Any) -> int | None:
            row = conn.execute(take, [task_name, limit, holder, lease_s]).fetchone()
            return row[0] if row else None

        def recover(conn: Any) -> None:
            conn.execute(free, [task_name, holder])  # then take one afresh

        return self._with_conn(use, recover=recover)

    def renew_slots(self, holder_prefix: str, lease_s: float) -> None:
        self._rows(
            "UPDATE {s}.task_slots SET expires_epoch = {s}.now_epoch() + %s "
            "WHERE holder LIKE %s",
            [lease_s, like_prefix(holder_prefix)],
        )

    def release_slot(self, task_name: str, slot: int, holder: str) -> None:
        self._rows(
            "UPDATE {s}.task_slots SET holder = NULL, expires_epoch = NULL "
            "WHERE task_name = %s AND slot = %s AND holder = %s",
            [task_name, slot, holder],
        )

    def reserve_rate(self, task_name: str, per_second: float) -> float:
        """Reserve the next start allowed by a rate limit of ``per_second``
        shared by every process; return its time (epoch, the server's clock,
        which may be in the future)."""
        rows = self._rows(
            "INSERT INTO {s}.task_rates AS t VALUES (%s, {s}.now_epoch() + %s) "
            "ON CONFLICT (task_name) DO UPDATE SET next_epoch = "
            "greatest(t.next_epoch, {s}.now_epoch()) + %s "
            "RETURNING t.next_epoch - %s - {s}.now_epoch()",
            [task_name, 1 / per_second, 1 / per_second, 1 / per_second],
        )
        return time.time() + max(0.0, rows[0][0])
