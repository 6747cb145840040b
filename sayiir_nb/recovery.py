"""Tidying up after an owner that vanished mid-run."""

from __future__ import annotations

from dataclasses import replace

from .backends.base import AttemptRecord, RunSnapshot, WriteBatch
from .nodes import Step
from .status import AttemptState, ErrorInfo, RunState
from .workflow import Workflow

LOST_PROCESS = "the process running this attempt stopped before it ended"
LOST_INTERRUPT = (
    "interrupted; the task did not return to Python within the grace period, "
    "so its late result is discarded"
)
LOST_TYPE = "sayiir_nb.errors.ProcessLostError"


def lost_attempts(
    snapshot: RunSnapshot,
    workflow: Workflow | None,
    reason: str = LOST_PROCESS,
    *,
    owner: str = "",
    ended_epoch: float | None = None,
) -> WriteBatch:
    """Record what a vanished owner left unfinished as interrupted.

    Applies to a run stored as running whose owner is gone (a crash, a kill,
    a kernel restart, an engine thread or a stopping worker giving up on it).
    Unfinished attempts are either stored as running, or implied: a top-level
    task's first attempt starts right after the previous step's commit
    without a write of its own. ``owner`` and ``ended_epoch``, when known (a
    worker giving up at its stop knows both), are stored with them.
    """
    if snapshot.run.state is not RunState.RUNNING:
        return WriteBatch()
    updates = tuple(
        interrupted(a, reason, owner=owner, ended_epoch=ended_epoch)
        for a in snapshot.attempts
        if a.state is AttemptState.RUNNING
    )
    implied = _implied_attempt(snapshot, workflow, reason) if workflow else None
    if implied is not None:
        implied = replace(implied, ended_epoch=ended_epoch, owner=owner)
    return WriteBatch(updates=updates, inserts=(implied,) if implied else ())


def interrupted(
    attempt: AttemptRecord,
    reason: str = LOST_PROCESS,
    *,
    owner: str = "",
    ended_epoch: float | None = None,
) -> AttemptRecord:
    """A running ``attempt`` recorded as interrupted for ``reason`` (with
    ``owner`` if it has none)."""
    return replace(
        attempt,
        state=AttemptState.INTERRUPTED,
        error=_error(reason, attempt.step_id),
        ended_epoch=ended_epoch,
        owner=attempt.owner or owner,
    )


def _implied_attempt(
    snapshot: RunSnapshot, workflow: Workflow, reason: str
) -> AttemptRecord | None:
    """The attempt a top-level step started without a write: the first step
    without a checkpoint, when the node before it is a checkpointed step (or
    it is the first node)."""
    nodes = workflow.steps
    index = next(
        (
            i
            for i, n in enumerate(nodes)
            if not (isinstance(n, Step) and n.step_id in snapshot.checkpoints)
        ),
        None,
    )
    if index is None or not isinstance(nodes[index], Step):
        return None
    if index > 0 and not isinstance(nodes[index - 1], Step):
        return None
    step = nodes[index]
    history = sorted(
        (a for a in snapshot.attempts if a.step_id == step.step_id),
        key=lambda a: a.attempt,
    )
    last = history[-1] if history else None
    if last is not None and last.state in (
        AttemptState.SCHEDULED,
        AttemptState.RUNNING,
    ):
        return None
    return AttemptRecord(
        run_id=snapshot.run.run_id,
        step_id=step.step_id,
        task_name=step.task.name,
        attempt=(last.attempt if last else 0) + 1,
        state=AttemptState.INTERRUPTED,
        started_epoch=_implied_start(snapshot, workflow, step),
        error=_error(reason, step.step_id),
    )


def _error(reason: str, step_id: str) -> ErrorInfo:
    return ErrorInfo(type=LOST_TYPE, message=reason, step_id=step_id)


def _implied_start(snapshot: RunSnapshot, workflow: Workflow, step: Step) -> float:
    index = workflow.index_of(step.step_id)
    if index > 0:
        previous = workflow.steps[index - 1].node_id
        ends = [
            a.ended_epoch
            for a in snapshot.attempts
            if a.step_id == previous
            and a.state is AttemptState.SUCCEEDED
            and a.ended_epoch
        ]
        if ends:
            return max(ends)
    return snapshot.run.updated_epoch
