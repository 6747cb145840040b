"""LISTEN/NOTIFY for the PostgreSQL backend's workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from .postgres import PostgresBackend

logger = logging.getLogger(__name__)


class PgListener:
    """LISTEN on the backend's channels from a connection of its own.

    A thread reads notifications and wakes :meth:`wait`; if the connection
    drops it is opened again (and waiters are woken, since notifications may
    have been missed meanwhile). ``wait`` always returns by its timeout, so
    polling remains the fallback.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.channels = tuple(
            f"{backend.schema}_{name}" for name in ("work", "units", "control")
        )
        self._cond = threading.Condition()
        self._events = 0
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.connected = threading.Event()
        self.on_control: Callable[[str], object] | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"sayiir-listen-{backend.schema}", daemon=True
        )
        self._thread.start()

    def wait(self, timeout_s: float, seen: int) -> int:
        """Wait up to ``timeout_s`` for a notification after event ``seen``;
        return the current event count."""
        with self._cond:
            if self._events == seen:
                self._cond.wait(timeout_s)
            return self._events

    @property
    def events(self) -> int:
        return self._events

    def wake(self) -> None:
        """Wake every waiter now."""
        self._wake()

    def _wake(self, control: str | None = None) -> None:
        if control is not None and self.on_control is not None:
            try:
                self.on_control(control)
            except Exception as error:
                logger.warning(
                    "reading the request for run %s failed: %s",
                    control,
                    error,
                    extra={"event": "listener.control_failed", "run_id": control},
                )
        with self._cond:
            self._events += 1
            self._cond.notify_all()

    def _loop(self) -> None:
        import psycopg

        delay = 0.1
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(
                    self.backend.dsn, autocommit=True, application_name="sayiir-nb"
                )
            except psycopg.Error as error:
                logger.warning(
                    "cannot open the listening connection (%s); retrying",
                    error,
                    extra={"event": "listener.reconnect"},
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._conn = conn
            try:
                for channel in self.channels:
                    conn.execute(f'LISTEN "{channel}"')
                delay = 0.1
                self.connected.set()
                self._wake()  # notifications may have been missed meanwhile
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        control = (
                            note.payload if note.channel.endswith("_control") else None
                        )
                        self._wake(control)
            except psycopg.Error as error:
                if not self._stop.is_set():
                    logger.warning(
                        "the listening connection failed (%s); reconnecting",
                        error,
                        extra={"event": "listener.reconnect"},
                    )
            finally:
                self.connected.clear()
                self._conn = None
                with suppress(Exception):
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
