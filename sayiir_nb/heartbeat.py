"""Keeping leases alive while their work goes on.

Backends whose leases lapse with time (PostgreSQL) need their holders to
renew them. A :class:`Heartbeat` does so from a thread of its own, so it keeps
beating while a long sync task holds the thread that runs it. A lease it could
not renew is reported in the log; its holder's next write is refused by the
backend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .backends.base import Backend, Lease

logger = logging.getLogger(__name__)


def leases_expire(backend: Backend) -> bool:
    """Whether the backend's leases lapse unless renewed."""
    return bool(getattr(backend, "leases_expire", False))


class Heartbeat:
    """Renews the leases it holds every ``lease_s / 3`` seconds.

    Parameters
    ----------
    slot_prefix
        Task-limit slots held by owners with this prefix are renewed too.
    """

    def __init__(
        self, backend: Backend, lease_s: float, slot_prefix: str, name: str
    ) -> None:
        self.backend = backend
        self.lease_s = lease_s
        self.slot_prefix = slot_prefix
        self._held: dict[tuple[str, str, int], Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.suspended = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name
        self.active = leases_expire(backend)

    def start(self) -> Heartbeat:
        if self.active and self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=self._name, daemon=True
            )
            self._thread.start()
        return self

    @contextmanager
    def holding(self, lease: Lease) -> Iterator[Lease]:
        """Renew ``lease`` for the block."""
        key = _key(lease)
        with self._lock:
            self._held[key] = lease
        try:
            yield lease
        finally:
            with self._lock:
                self._held.pop(key, None)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def suspend(self) -> None:
        """Stop renewing (a test hook: lets leases lapse on purpose)."""
        self.suspended.set()

    def resume(self) -> None:
        self.suspended.clear()

    def beat(self) -> None:
        """Renew every held lease now."""
        leases = self.held()
        renew_all = getattr(self.backend, "renew_all", None)
        if leases and renew_all is not None:
            for lease in renew_all(leases, self.lease_s):
                self._report_lost(lease)
        renew_slots = getattr(self.backend, "renew_slots", None)
        if renew_slots is not None:
            renew_slots(self.slot_prefix, self.lease_s)

    def _report_lost(self, lease: Lease) -> None:
        with self._lock:
            if _key(lease) not in self._held:
                return  # given back meanwhile
        logger.warning(
            "the lease of run %s%s was lost; its holder stops at its next write",
            lease.run_id,
            f" (part {lease.unit})" if lease.unit else "",
            extra={"event": "lease.lost", "run_id": lease.run_id, "unit": lease.unit},
        )

    def _loop(self) -> None:
        interval = max(0.05, self.lease_s / 3)
        while not self._stop.wait(interval):
            if getattr(self.backend, "closed", False):
                return  # nothing can be renewed in a closed store
            if self.suspended.is_set():
                continue
            try:
                self.beat()
            except Exception as error:  # the next beat tries again
                logger.warning(
                    "heartbeat failed: %s",
                    error,
                    extra={"event": "heartbeat.failed"},
                )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)  # a beat waiting for a lost server


def _key(lease: Lease) -> tuple[str, str, int]:
    return (lease.run_id, lease.unit, lease.fence)
