"""Running the nodes that are not plain tasks: parallel branches, routes,
fan-outs, loops, child workflows, delays and waits for signals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .backends.base import AttemptRecord, WriteBatch
from .errors import LoopLimitError, RouteKeyError, SignalTimeoutError
from .execution import RunControlled, RunWaiting, Scope, StepFailed, Stored
from .nodes import (
    DELAY_LABEL,
    MISSING,
    ROUTE_LABEL,
    SIGNAL_LABEL,
    Child,
    Delay,
    FanOut,
    Loop,
    Node,
    Parallel,
    Route,
    Step,
    WaitSignal,
)
from .status import AttemptState, ErrorInfo

if TYPE_CHECKING:
    from .execution import RunExecution

_SIGNAL_POLL_S = 0.05


async def run_node(ex: RunExecution, node: Node, scope: Scope, value: Any) -> Any:
    """Run ``node`` (not a plain task) on ``value``; return its output, which
    ``ctx.output(node id)`` then finds too (a route's own step holds its
    chosen key instead)."""
    output = await _run(ex, node, scope, value)
    node_id = scope.prefix + node.node_id
    if isinstance(node, Parallel | FanOut | Loop | Child):
        ex.outputs.add_derived(node_id, ex.codec.encode(ex.value_of(output)))
    return output


async def _run(ex: RunExecution, node: Node, scope: Scope, value: Any) -> Any:
    if isinstance(node, Parallel):
        return await _parallel(ex, node, scope, value)
    if isinstance(node, Route):
        return await _route(ex, node, scope, value)
    if isinstance(node, FanOut):
        return await _fan_out(ex, node, scope, value)
    if isinstance(node, Loop):
        return await _loop(ex, node, scope, value)
    if isinstance(node, Child):
        inner = scope.inner(f"{scope.prefix}{node.node_id}/", child_input=(value,))
        return await ex.chain(node.workflow.steps, inner, value)
    if isinstance(node, Delay):
        return await _delay(ex, node, scope, value)
    if isinstance(node, WaitSignal):
        return await _wait_signal(ex, node, scope)
    raise TypeError(f"unknown node {node!r}")


async def _parallel(ex: RunExecution, node: Parallel, scope: Scope, value: Any) -> Any:
    if ex.shared is not None:
        # other workers take the branches; then the join below reads their
        # checkpoints (and raises a branch's failure)
        from .units import branch_units

        parent, units = branch_units(ex, node, scope, value)
        await ex.shared.settle(ex, parent, units)
        ex.reload()
    base = f"{scope.prefix}{node.node_id}/"
    runs = [
        ex.chain(chain, scope.inner(f"{base}{name}/", concurrent=True), value)
        for name, chain in node.branches
    ]
    labels = [
        f"branch {name!r} of parallel {node.node_id!r}" for name, _ in node.branches
    ]
    results = await _join(runs, labels)
    return {
        name: ex.value_of(result)
        for (name, _), result in zip(node.branches, results, strict=True)
    }


async def _route(ex: RunExecution, node: Route, scope: Scope, value: Any) -> Any:
    step_id = f"{scope.prefix}{node.node_id}"
    names = [name for name, _ in node.branches]
    if step_id in ex.outputs:
        chosen = ex.outputs[step_id]["branch"]
    else:
        chosen = _choose(ex, node, step_id, names, ex.value_of(value))
    branch = dict(node.branches)[chosen]
    return await ex.chain(branch, scope.inner(f"{step_id}/{chosen}/"), value)


def _choose(
    ex: RunExecution, node: Route, step_id: str, names: list[str], value: Any
) -> str:
    try:
        key = node.key(value)
    except Exception as error:
        ex.record_failure(
            step_id,
            ROUTE_LABEL,
            error,
            f"the key function of route {node.node_id!r} raised "
            f"{type(error).__name__}: {error}",
        )
    name = key if isinstance(key, str) else str(key)
    chosen = name if name in names else node.default
    if chosen is None:
        error = RouteKeyError(
            f"route {node.node_id!r} got key {key!r}, which is not one of its "
            f"branches ({', '.join(map(repr, names))}), and it has no default."
        )
        ex.record_failure(step_id, ROUTE_LABEL, error, str(error))
    ex.record_instant(
        step_id, ROUTE_LABEL, ex.codec.encode({"key": _plain(key), "branch": chosen})
    )
    return chosen


def _plain(key: Any) -> Any:
    return (
        key if isinstance(key, str | int | float | bool) or key is None else repr(key)
    )


async def _fan_out(ex: RunExecution, node: FanOut, scope: Scope, value: Any) -> Any:
    items = ex.value_of(value)
    step_id = f"{scope.prefix}{node.node_id}"
    if not isinstance(items, list | tuple):
        raise StepFailed(
            ErrorInfo(
                type="TypeError",
                message=f"fan-out {node.node_id!r} needs a list or tuple; the previous "
                f"step returned {type(items).__name__}",
                step_id=step_id,
            )
        )
    if ex.shared is not None and items:
        from .units import item_units

        parent, units = item_units(ex, node, scope, items)
        await ex.shared.settle(ex, parent, units)
        ex.reload()
    gate = asyncio.Semaphore(node.concurrency)
    inner = scope.inner(scope.prefix, concurrent=True)
    step = Step(step_id=node.node_id, task=node.task)

    async def one(index: int, item: Any) -> Any:
        async with gate:
            return await ex.task_step(step, inner, item, False, f"{step_id}[{index}]")

    labels = [
        f"item {index} of fan-out {node.node_id!r}" for index in range(len(items))
    ]
    results = await _join([one(i, item) for i, item in enumerate(items)], labels)
    return [ex.value_of(result) for result in results]


async def _loop(ex: RunExecution, node: Loop, scope: Scope, value: Any) -> Any:
    base = f"{scope.prefix}{node.node_id}"
    current = value
    for iteration in range(1, node.max_iterations + 1):
        output = await ex.chain(node.body, scope.inner(f"{base}#{iteration}/"), current)
        try:
            done = bool(node.until(ex.value_of(output)))
        except Exception as error:
            raise StepFailed(
                ErrorInfo.from_exception(error, step_id=f"{base}#{iteration}")
            ) from error
        if done:
            return output
        current = output
    if node.on_max == "return":
        return current
    error = LoopLimitError(
        f"loop {node.node_id!r} ran {node.max_iterations} iterations (its "
        "max_iterations) without until(...) becoming true."
    )
    raise StepFailed(ErrorInfo.from_exception(error, step_id=base))


async def _delay(ex: RunExecution, node: Delay, scope: Scope, value: Any) -> Any:
    step_id = f"{scope.prefix}{node.node_id}"
    if step_id in ex.outputs:
        return value
    wake = _waiting_since(ex, step_id, DELAY_LABEL, node.delay_s)
    remaining = wake - time.time()
    if remaining > ex.inline_wait_s:
        raise RunWaiting(wake)
    await ex.sleep_until(wake)
    ex.record_instant(step_id, DELAY_LABEL, "null")
    return value


async def _wait_signal(ex: RunExecution, node: WaitSignal, scope: Scope) -> Any:
    step_id = f"{scope.prefix}{node.node_id}"
    if step_id in ex.outputs:
        return Stored(step_id)
    deadline = _waiting_since(ex, step_id, SIGNAL_LABEL, node.timeout_s)
    patience = time.time() + ex.inline_wait_s
    while True:
        found = ex.backend.next_signal(
            ex.run_id, node.signal, None if node.timeout_s is None else deadline
        )
        if found is not None:
            signal_id, payload_json = found
            ex.record_instant(
                step_id, SIGNAL_LABEL, payload_json, consume_signal=signal_id
            )
            return Stored(step_id)
        now = time.time()
        if node.timeout_s is not None and now >= deadline:
            return _timed_out(ex, node, step_id)
        if now >= patience:
            raise RunWaiting(deadline if node.timeout_s is not None else None)
        limit = min(patience, deadline) if node.timeout_s is not None else patience
        await ex.sleep_until(min(now + _SIGNAL_POLL_S, limit))
        ex.check_control()


def _timed_out(ex: RunExecution, node: WaitSignal, step_id: str) -> Any:
    if node.default is MISSING:
        error = SignalTimeoutError(
            f"no signal {node.signal!r} reached run {ex.run_id!r} within "
            f"{node.timeout_s:g}s (wait {node.node_id!r}); give the wait a "
            "default=... to continue without one."
        )
        ex.record_failure(step_id, SIGNAL_LABEL, error, str(error))
    encoded = ex.codec.encode(node.default)
    ex.record_instant(step_id, SIGNAL_LABEL, encoded)
    return Stored(step_id)


def _waiting_since(
    ex: RunExecution, step_id: str, label: str, length_s: float | None
) -> float:
    """The stored end of a delay or of a wait's timeout, stored now if this is
    the first time the node is reached (``inf`` for a wait without one)."""
    history = ex.history.get(step_id, ())
    if history and history[-1].state is AttemptState.SCHEDULED:
        end = history[-1].scheduled_epoch
        return float("inf") if end is None else end
    now = time.time()
    end = None if length_s is None else now + length_s
    row = AttemptRecord(
        run_id=ex.run_id,
        step_id=step_id,
        task_name=label,
        attempt=history[-1].attempt + 1 if history else 1,
        state=AttemptState.SCHEDULED,
        scheduled_epoch=end,
        started_epoch=now,
        owner=ex.owner,
    )
    ex.write(WriteBatch(inserts=(row,)))
    return float("inf") if end is None else end


async def _join(runs: list[Awaitable[Any]], labels: list[str]) -> list[Any]:
    """Await every run (they go on if one fails), then raise what matters
    most: an interrupt, a cancel or pause, a failure (naming its branch), a
    wait (the earliest wake-up time)."""
    results = await asyncio.gather(*runs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # an interrupt, or an abrupt stop: it wins
    for result in results:
        if isinstance(result, RunControlled):
            raise result
    for label, result in zip(labels, results, strict=True):
        if isinstance(result, StepFailed):
            error = result.error
            raise StepFailed(
                ErrorInfo(
                    type=error.type,
                    message=f"{label} failed: {error.message}",
                    traceback=error.traceback,
                    step_id=error.step_id,
                )
            )
    waits = [r for r in results if isinstance(r, RunWaiting)]
    if waits:
        known = [w.wake_epoch for w in waits if w.wake_epoch is not None]
        raise RunWaiting(min(known) if known else None)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)
