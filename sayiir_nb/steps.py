"""The steps of a run as its status shows them: those that ran, in the
order they started, then those still to come (not those of route branches
that were not chosen)."""

from __future__ import annotations

import json

from .backends.base import AttemptRecord, RunSnapshot
from .nodes import Route
from .status import AttemptState, StepStatus
from .workflow import Workflow, walk


def step_statuses(
    snapshot: RunSnapshot, workflow: Workflow | None
) -> tuple[StepStatus, ...]:
    by_step: dict[str, list[AttemptRecord]] = {}
    for attempt in snapshot.attempts:
        by_step.setdefault(attempt.step_id, []).append(attempt)
    # steps that ran, in the order they started; then those still to come
    order = [(step, rows[0].task_name) for step, rows in by_step.items()]
    if workflow is not None:
        skipped = _branches_not_taken(snapshot, workflow)
        order += [
            (step_id, label)
            for step_id, label in workflow.known_steps()
            if step_id not in by_step and not step_id.startswith(skipped)
        ]
    return tuple(
        _step_status(step_id, name, by_step.get(step_id)) for step_id, name in order
    )


def _branches_not_taken(snapshot: RunSnapshot, workflow: Workflow) -> tuple[str, ...]:
    """Prefixes of the branches that the run's routes did not choose."""
    prefixes = []
    for prefix, node in walk(workflow.steps, loops=False):
        if not isinstance(node, Route):
            continue
        route_id = prefix + node.node_id
        stored = snapshot.checkpoints.get(route_id)
        if stored is None:
            continue
        chosen = json.loads(stored).get("branch")
        prefixes += [
            f"{route_id}/{name}/" for name, _ in node.branches if name != chosen
        ]
    return tuple(prefixes)


def _step_status(
    step_id: str, task_name: str, rows: list[AttemptRecord] | None
) -> StepStatus:
    if not rows:
        return StepStatus(
            step_id=step_id, task_name=task_name, state="pending", attempts=0
        )
    last = rows[-1]
    duration = None
    if last.started_epoch and last.ended_epoch:
        duration = last.ended_epoch - last.started_epoch
    error = None
    tried = 0
    for row in rows:
        if row.error is not None:
            error = row.error
        if row.state is not AttemptState.SCHEDULED:
            tried += 1
    return StepStatus(
        step_id=step_id,
        task_name=task_name,
        state=last.state.value,
        attempts=tried,
        duration_s=duration,
        error=error,
    )
