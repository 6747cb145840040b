"""Task limits: how many attempts of a task run at once, how many start per
second.

With PostgreSQL the limits are shared by every process on the database
(slots and a next-start time stored in it); with the in-process backends
they are shared by every thread of the process that uses the store.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .backends.base import Backend
from .tasks import Task

_POLL_S = (0.005, 0.2)

# (run id, step id) of the steps of this process waiting for their limits
_waiting: collections.Counter[tuple[str, str]] = collections.Counter()
_waiting_lock = threading.Lock()


def waiting_for_limits(run_id: str, step_id: str) -> bool:
    """Whether a step of this process waits for its limits now (it has not
    started: a worker giving the run up records no attempt for it)."""
    with _waiting_lock:
        return _waiting[(run_id, step_id)] > 0


@asynccontextmanager
async def limited(
    backend: Backend,
    task: Task,
    holder: str,
    lease_s: float = 30.0,
    *,
    step: tuple[str, str] = ("", ""),
) -> AsyncIterator[None]:
    """Wait until ``task`` may start an attempt under its limits, and hold
    its concurrency slot for the block. A shared slot is held for ``lease_s``
    and renewed by the holder's heartbeat; the slot of a holder that died is
    free again after that. ``step`` (run id, step id) is known to
    :func:`waiting_for_limits` during the wait."""
    options = task.options
    if options.max_concurrency is None and options.rate_per_s is None:
        yield
        return
    release = None
    with _waiting_lock:
        _waiting[step] += 1
    try:
        if options.max_concurrency is not None:
            release = await _take_slot(
                backend, task.name, options.max_concurrency, holder, lease_s
            )
        if options.rate_per_s is not None:
            await _wait_for_rate(backend, task.name, options.rate_per_s)
    except BaseException:
        if release is not None:
            release()
        raise
    finally:
        with _waiting_lock:
            _waiting[step] -= 1
            if not _waiting[step]:
                del _waiting[step]
    try:
        yield
    finally:
        if release is not None:
            release()


async def _take_slot(
    backend: Backend, name: str, limit: int, holder: str, lease_s: float
) -> Callable[[], None]:
    shared = getattr(backend, "acquire_slot", None)
    holder = f"{holder}/{uuid.uuid4().hex[:8]}"  # this acquisition's own name
    delay = _POLL_S[0]
    while True:
        if shared is not None:
            slot = await asyncio.to_thread(shared, name, limit, holder, lease_s)
            if slot is not None:
                release = backend.release_slot  # type: ignore[attr-defined]
                return lambda: release(name, slot, holder)
        else:
            state = _local(backend)
            if state.take(name, limit):
                return lambda: state.give(name)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_S[1])


async def _wait_for_rate(backend: Backend, name: str, per_s: float) -> None:
    shared = getattr(backend, "reserve_rate", None)
    if shared is not None:
        start = await asyncio.to_thread(shared, name, per_s)
    else:
        start = _local(backend).reserve(name, per_s)
    delay = start - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass
class _LocalLimits:
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, int] = field(default_factory=dict)
    next_start: dict[str, float] = field(default_factory=dict)

    def take(self, name: str, limit: int) -> bool:
        with self.lock:
            if self.running.get(name, 0) >= limit:
                return False
            self.running[name] = self.running.get(name, 0) + 1
            return True

    def give(self, name: str) -> None:
        with self.lock:
            self.running[name] -= 1

    def reserve(self, name: str, per_s: float) -> float:
        with self.lock:
            start = max(time.time(), self.next_start.get(name, 0.0))
            self.next_start[name] = start + 1 / per_s
            return start


_LOCAL: dict[object, _LocalLimits] = {}
_LOCAL_LOCK = threading.Lock()


def _local(backend: Backend) -> _LocalLimits:
    """The limits of one store: backends on the same DuckDB file share them."""
    key = getattr(backend, "path", None) or id(backend)
    with _LOCAL_LOCK:
        return _LOCAL.setdefault(key, _LocalLimits())
