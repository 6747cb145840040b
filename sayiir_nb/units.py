"""Parts of a run that workers claim one by one.

On a backend that shares steps between processes (PostgreSQL), a worker that
reaches a parallel or a fan-out does not run its branches or items itself:
it stores them as *units*, which any worker may claim (``FOR UPDATE SKIP
LOCKED``), itself included, each under a lease of its own. The worker that
drives the run helps with its own units while it waits, then continues from
the checkpoints they left. A unit whose worker died is claimed again once its
lease lapses; only its unfinished step runs again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .backends.base import (
    AttemptRecord,
    Backend,
    Lease,
    RunSnapshot,
    UnitRecord,
    WriteBatch,
)
from .errors import DefinitionError, LeaseLostError
from .execution import (
    RunControlled,
    RunExecution,
    RunWaiting,
    Scope,
    StepFailed,
)
from .nodes import FanOut, Node, Parallel, Step
from .recovery import LOST_PROCESS, interrupted
from .status import AttemptState, RunState
from .workflow import Workflow, walk

if TYPE_CHECKING:
    from .runner import CheckpointingRunner

logger = logging.getLogger(__name__)

_ITERATION = re.compile(r"#\d+/")
_FINISHED = ("done", "failed")


class SharedSteps:
    """What a worker gives a run's execution so that it shares its parts.

    Parameters
    ----------
    run_unit
        Executes a claimed unit here (in the caller's slot) and returns when
        it is finished with it.
    wait
        Waits up to the given seconds for a notification from the backend.
    """

    def __init__(
        self,
        *,
        owner: str,
        lease_s: float,
        run_unit: Callable[[Lease], Awaitable[None]],
        wait: Callable[[float], Awaitable[None]],
    ) -> None:
        self.owner = owner
        self.lease_s = lease_s
        self.run_unit = run_unit
        self.wait = wait

    async def settle(
        self, ex: RunExecution, parent_id: str, units: list[UnitRecord]
    ) -> None:
        """Publish ``units`` and return once every one is done or failed,
        running those nobody has claimed; raise ``RunWaiting`` if the rest
        wait (for a delay or a signal)."""
        backend: Any = ex.backend
        backend.publish_units(ex.lease, units)
        while True:
            ex.check_control()
            lease = backend.claim_unit(
                ex.run_id, parent_id, self.owner, self.lease_s, time.time()
            )
            if lease is not None:
                await self.run_unit(lease)
                continue
            stored = backend.unit_states(ex.run_id, parent_id)
            unfinished = [
                (state, wake) for _, state, wake in stored if state not in _FINISHED
            ]
            if not unfinished:
                return
            if any(state == "ready" for state, _ in unfinished):
                # parts nobody may claim: a cancel or pause is pending; read it
                backend.requested(ex.run_id, fresh=True)
            if all(state == "waiting" for state, _ in unfinished):
                wakes = [wake for _, wake in unfinished if wake is not None]
                due = min(wakes) if wakes else None
                if due is None or due - time.time() > ex.inline_wait_s:
                    raise RunWaiting(due)
            await self.wait(0.25)


def branch_units(
    ex: RunExecution, node: Parallel, scope: Scope, value: Any
) -> tuple[str, list[UnitRecord]]:
    """The units of a parallel's branches, and the parallel's id."""
    parent = f"{scope.prefix}{node.node_id}"
    input_json = ex.codec.encode(ex.value_of(value))
    context = _context(ex, scope)
    return parent, [
        UnitRecord(
            run_id=ex.run_id,
            unit_id=f"{parent}/{name}/",
            parent_id=parent,
            kind="branch",
            node_prefix=scope.prefix,
            node_id=node.node_id,
            part=name,
            input_json=input_json,
            context_json=context,
        )
        for name, _ in node.branches
    ]


def item_units(
    ex: RunExecution, node: FanOut, scope: Scope, items: list[Any] | tuple[Any, ...]
) -> tuple[str, list[UnitRecord]]:
    """The units of a fan-out's items, and the fan-out's id."""
    parent = f"{scope.prefix}{node.node_id}"
    context = _context(ex, scope)
    return parent, [
        UnitRecord(
            run_id=ex.run_id,
            unit_id=f"{parent}[{index}]",
            parent_id=parent,
            kind="item",
            node_prefix=scope.prefix,
            node_id=node.node_id,
            part=str(index),
            input_json=ex.codec.encode(item),
            context_json=context,
            max_claimed=node.concurrency,
        )
        for index, item in enumerate(items)
    ]


def _context(ex: RunExecution, scope: Scope) -> str | None:
    if scope.child_input is None:
        return None
    return ex.codec.encode(ex.value_of(scope.child_input[0]))


async def execute_unit(
    runner: CheckpointingRunner,
    workflow: Workflow,
    lease: Lease,
    *,
    shared: SharedSteps,
    control: Callable[[], RunState | None],
    inline_wait_s: float,
) -> str:
    """Run one claimed unit to its end (or as far as it goes) under its own
    lease; return the state it is left in."""
    backend: Any = runner.backend
    unit = backend.get_unit(lease.run_id, lease.unit)
    if unit is None:
        return "gone"
    snapshot = backend.load_for_unit(unit)
    if snapshot is None:
        return "gone"
    ex = RunExecution(
        backend=backend,
        codec=runner.codec,
        workflow=workflow,
        lease=lease,
        snapshot=snapshot,
        owner=lease.owner,
        control=control,
        inline_wait_s=inline_wait_s,
        observers=runner.observers,
        park_after_s=inline_wait_s,
        shared=shared,
        lease_s=runner.lease_s,
    )
    _mark_lost_attempts(ex, unit)
    try:
        await _run_part(ex, find_node(workflow, unit.node_prefix, unit.node_id), unit)
        state, wake = "done", None
    except StepFailed:
        state, wake = "failed", None
    except RunWaiting as waiting:
        state, wake = "waiting", waiting.wake_epoch
    except RunControlled:
        state, wake = "ready", None
    except LeaseLostError:
        logger.warning(
            "part %s of run %s was taken over by another worker",
            lease.unit,
            lease.run_id,
            extra={"event": "unit.lease_lost", "run_id": lease.run_id},
        )
        return "lost"
    backend.finish_unit(lease, state, wake)
    return state


async def _run_part(ex: RunExecution, node: Node, unit: UnitRecord) -> None:
    """Run the branch or the item that ``unit`` stands for."""
    value = ex.codec.decode(unit.input_json)
    context = None
    if unit.context_json is not None:
        context = (ex.codec.decode(unit.context_json),)
    scope = Scope(prefix=unit.node_prefix, top=False, child_input=context)
    if isinstance(node, Parallel):
        chain = dict(node.branches)[unit.part]
        await ex.chain(chain, replace(scope, prefix=unit.unit_id), value)
    elif isinstance(node, FanOut):
        step = Step(step_id=node.node_id, task=node.task)
        await ex.task_step(step, scope, value, False, unit.unit_id)


def _mark_lost_attempts(ex: RunExecution, unit: UnitRecord) -> None:
    """Record as interrupted what a previous holder of the unit left running."""
    lost = lost_part_attempts((a for rows in ex.history.values() for a in rows), unit)
    if lost:
        ex.write(WriteBatch(updates=lost))


def lost_part_attempts(
    attempts: Iterable[AttemptRecord],
    unit: UnitRecord,
    reason: str = LOST_PROCESS,
    *,
    owner: str = "",
    ended_epoch: float | None = None,
) -> tuple[AttemptRecord, ...]:
    """The attempts of ``unit`` left running, recorded as interrupted."""
    return tuple(
        interrupted(a, reason, owner=owner, ended_epoch=ended_epoch)
        for a in attempts
        if a.state is AttemptState.RUNNING and inside(a.step_id, unit)
    )


def inside(step_id: str, unit: UnitRecord) -> bool:
    """Whether step ``step_id`` belongs to ``unit``."""
    if unit.kind == "item":
        return step_id == unit.unit_id
    return step_id.startswith(unit.unit_id)


def find_node(workflow: Workflow, node_prefix: str, node_id: str) -> Node:
    """The parallel or fan-out a unit belongs to."""
    wanted = _ITERATION.sub("#n/", node_prefix)
    for prefix, node in walk(workflow.steps):
        found = prefix == wanted and node.node_id == node_id
        if found and isinstance(node, Parallel | FanOut):
            return node
    raise DefinitionError(
        f"workflow {workflow.name!r} has no parallel or fan-out {node_id!r} at "
        f"{node_prefix or 'the top level'}; was the run started with another "
        "definition?"
    )


def without_live_units(backend: Backend, snapshot: RunSnapshot) -> RunSnapshot:
    """``snapshot`` without the attempts of parts that other workers are
    running now (they are not lost: their workers still hold them)."""
    live_units = getattr(backend, "live_units", None)
    running = [a for a in snapshot.attempts if a.state is AttemptState.RUNNING]
    if live_units is None or not running:
        return snapshot  # nothing that could belong to a live part
    held = live_units(snapshot.run.run_id)
    if not held:
        return snapshot
    kept = tuple(
        a for a in snapshot.attempts if not any(inside(a.step_id, u) for u in held)
    )
    return replace(snapshot, attempts=kept)
