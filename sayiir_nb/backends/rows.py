"""Stored rows back into records, shared by the SQL backends (their run and
attempt columns come in the same order)."""

from __future__ import annotations

from typing import Any

from ..status import AttemptState, ErrorInfo, RunState
from .base import AttemptRecord, RunRecord


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    (
        run_id,
        workflow,
        digest_hash,
        state,
        input_json,
        input_digest,
        codec,
        output,
        error_type,
        error_message,
        error_traceback,
        error_step,
        created,
        updated,
        wake,
    ) = row
    error = error_from(error_type, error_message, error_traceback, error_step)
    return RunRecord(
        run_id=run_id,
        workflow_name=workflow,
        definition_hash=digest_hash,
        state=RunState(state),
        input_json=input_json,
        input_digest=input_digest,
        codec=codec,
        output_json=output,
        error=error,
        created_epoch=created,
        updated_epoch=updated,
        wake_epoch=wake,
    )


def error_from(
    error_type: str | None,
    message: str | None,
    traceback: str | None,
    step_id: str | None,
) -> ErrorInfo | None:
    if error_type is None:
        return None
    return ErrorInfo(
        type=error_type,
        message=message or "",
        traceback=traceback or "",
        step_id=step_id,
    )


def attempt_from_row(row: tuple[Any, ...]) -> AttemptRecord:
    (
        run_id,
        step_id,
        task_name,
        attempt,
        state,
        scheduled,
        started,
        ended,
        wait_s,
        owner,
        error_type,
        error_message,
        error_traceback,
    ) = row
    error = error_from(error_type, error_message, error_traceback, step_id)
    return AttemptRecord(
        run_id=run_id,
        step_id=step_id,
        task_name=task_name,
        attempt=attempt,
        state=AttemptState(state),
        scheduled_epoch=scheduled,
        started_epoch=started,
        ended_epoch=ended,
        wait_before_s=wait_s,
        error=error,
        owner=owner,
    )


def run_params(r: RunRecord) -> list[Any]:
    """The columns of a run in the order of ``run_from_row``."""
    return [
        r.run_id,
        r.workflow_name,
        r.definition_hash,
        r.state.value,
        r.input_json,
        r.input_digest,
        r.codec,
        r.output_json,
        *error_params(r.error),
        r.error.step_id if r.error else None,
        r.created_epoch,
        r.updated_epoch,
        r.wake_epoch,
    ]


def error_params(error: ErrorInfo | None) -> list[str | None]:
    if error is None:
        return [None, None, None]
    return [error.type, error.message, error.traceback]
