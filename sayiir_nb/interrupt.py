"""Running the async engine from sync code, and stopping it on an interrupt.

Two situations need care:

* No event loop runs in the calling thread (a script, a test): the engine
  runs on a fresh loop in that thread. Sync tasks without a timeout are called
  directly, so Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` inside the task if
  one is running, and cancels the run otherwise.
* An event loop already runs in the calling thread (Jupyter, or code under
  ``asyncio.run``): the engine runs on a loop of its own in a helper thread
  while the caller waits; the cancellation of the caller's task counts as an
  interrupt. A ``KeyboardInterrupt`` raised in the caller (the
  kernel's interrupt) cancels the engine's run and raises
  ``KeyboardInterrupt`` inside a sync task that is running on the helper
  thread. A task blocked in C code (``time.sleep``, a socket read) only sees it
  when it returns to Python; if the engine has not stopped within the grace
  period the caller takes the run over and marks it interrupted, and the late
  result of the task is discarded.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import ctypes
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in thread ``ident`` (``None`` clears a pending one)."""
    argument = None if exc is None else ctypes.py_object(exc)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), argument)


class InlineCalls:
    """Which threads are inside a directly-called sync task right now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth: dict[int, int] = {}
        self._sent: set[int] = set()

    def inline(self) -> _Inline:
        """A context manager marking the current thread as running task code."""
        return _Inline(self)

    def _enter(self) -> None:
        ident = threading.get_ident()
        with self._lock:
            self._depth[ident] = self._depth.get(ident, 0) + 1

    def _exit(self) -> None:
        ident = threading.get_ident()
        with self._lock:
            depth = self._depth.pop(ident) - 1
            if depth:
                self._depth[ident] = depth
            elif ident in self._sent:
                self._sent.discard(ident)
                _set_async_exc(ident, None)  # drop an interrupt that came late

    def active(self, ident: int) -> bool:
        return ident in self._depth

    def interrupt(self, ident: int) -> bool:
        """Raise ``KeyboardInterrupt`` in thread ``ident`` if it is in task
        code; return whether it was."""
        with self._lock:
            if ident not in self._depth:
                return False
            self._sent.add(ident)
            _set_async_exc(ident, KeyboardInterrupt)
            return True


class _Inline:
    __slots__ = ("_calls",)

    def __init__(self, calls: InlineCalls) -> None:
        self._calls = calls

    def __enter__(self) -> None:
        self._calls._enter()

    def __exit__(self, *exc: object) -> None:
        self._calls._exit()


INLINE = InlineCalls()


def has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "sayiir_nb_stop", default=None
)
"""Set by the sync entry points: the run stops at its next step boundary."""


def run_here(make: Callable[[], Coroutine[Any, Any, T]], *, grace_s: float = 1.0) -> T:
    """Run a coroutine on a new loop in this thread; Ctrl-C interrupts it.

    The first Ctrl-C raises ``KeyboardInterrupt`` inside a sync task that is
    running, and otherwise asks the run to stop: at its next step boundary, or
    at once if it is waiting. If it has not stopped after ``grace_s`` seconds
    (an async task that never yields), ``KeyboardInterrupt`` is raised where
    the code is; so is a second Ctrl-C.
    """
    loop = asyncio.new_event_loop()
    stop = threading.Event()
    context = contextvars.copy_context()
    context.run(STOP.set, stop)
    main = loop.create_task(make(), context=context)

    def on_sigint(signum: int, frame: Any) -> None:
        if INLINE.active(threading.get_ident()) or stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        loop.call_soon_threadsafe(main.cancel)
        _watchdog(grace_s, main)

    previous = _install_sigint(on_sigint)
    try:
        return loop.run_until_complete(main)
    except asyncio.CancelledError:
        if stop.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        _close_loop(loop)


def _watchdog(grace_s: float, main: asyncio.Task[Any]) -> None:
    """Interrupt the main thread again if ``main`` is still going later."""

    def check() -> None:
        if not main.done():
            _thread.interrupt_main()

    timer = threading.Timer(grace_s, check)
    timer.daemon = True
    timer.start()


def run_in_thread(
    make: Callable[[], Coroutine[Any, Any, T]],
    *,
    name: str,
    grace_s: float,
    abandon: Callable[[], None],
) -> T:
    """Run a coroutine on a loop in a helper thread and wait for it.

    A ``KeyboardInterrupt`` in the waiting thread (a kernel interrupt), or the
    cancellation of the asyncio task that made this call, asks the run to stop,
    cancels what it awaits and interrupts the sync task code it runs. If it has
    not stopped after ``grace_s`` seconds, ``abandon`` takes the run over.
    Then the interrupt (or the cancellation) is raised.
    """
    started = threading.Event()
    done = threading.Event()
    stop = threading.Event()
    box: dict[str, Any] = {}
    outer = _current_task()

    def target() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        context = contextvars.copy_context()
        context.run(STOP.set, stop)
        box["loop"] = loop
        box["task"] = loop.create_task(make(), context=context)
        started.set()
        try:
            box["value"] = loop.run_until_complete(box["task"])
        except BaseException as error:
            box["error"] = error
        finally:
            _close_loop(loop)
            done.set()

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    cancelled = False
    try:
        while not done.wait(0.05):
            if outer is not None and outer.cancelling():
                cancelled = True
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        started.wait()
        stop.set()
        box["loop"].call_soon_threadsafe(box["task"].cancel)
        if thread.ident is not None:
            INLINE.interrupt(thread.ident)
        if not done.wait(grace_s):
            abandon()
        if cancelled:
            raise asyncio.CancelledError from None
        raise
    if "error" in box:
        error = box["error"]
        if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise error
    return box["value"]


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _install_sigint(handler: Callable[[int, Any], None]) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    return signal.signal(signal.SIGINT, handler)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for leftover in pending:
            leftover.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
