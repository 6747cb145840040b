"""Rows of the PostgreSQL backend: records to parameters and back, the JSON
payload of a write batch, and DSNs made safe to log."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..status import AttemptState
from .base import AttemptRecord, UnitRecord, WriteBatch

if TYPE_CHECKING:
    import duckdb

RUN_COLUMNS = (
    "run_id, workflow_name, definition_hash, state, input_json, input_digest, codec, "
    "output_json, error_type, error_message, error_traceback, error_step, "
    "created_epoch, updated_epoch, wake_epoch"
)
ATTEMPT_COLUMNS = (
    "run_id, step_id, task_name, attempt, state, scheduled_epoch, started_epoch, "
    "ended_epoch, wait_before_s, owner, error_type, error_message, error_traceback"
)
UNIT_COLUMNS = (
    "run_id, unit_id, parent_id, kind, node_prefix, node_id, part, input_json, "
    "context_json, state, wake_epoch, max_claimed"
)


_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.I)


def safe_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``: in a URL's user part
    (up to its last ``@``) or query, or a ``password=`` keyword, quoted or
    not."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return _KEYWORD_PASSWORD.sub(r"\1***", dsn)
    query_at = rest.find("?")
    head, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at:])
    user_end = head.rfind("@")
    if user_end >= 0 and ":" in head[:user_end]:
        user = head[:user_end].split(":", 1)[0]
        head = f"{user}:***{head[user_end:]}"
    return f"{scheme}://{head}" + _QUERY_PASSWORD.sub(r"\1***", query)


def like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def payload(batch: WriteBatch) -> dict[str, Any]:
    point = batch.checkpoint

    def row(a: AttemptRecord) -> dict[str, Any]:
        is_point = (
            point is not None
            and point.step_id == a.step_id
            and a.state is AttemptState.SUCCEEDED
        )
        error = a.error
        return {
            "run_id": a.run_id,
            "step_id": a.step_id,
            "task_name": a.task_name,
            "attempt": a.attempt,
            "state": a.state.value,
            "scheduled_epoch": finite(a.scheduled_epoch),
            "started_epoch": finite(a.started_epoch),
            "ended_epoch": finite(a.ended_epoch),
            "wait_before_s": a.wait_before_s,
            "owner": a.owner,
            "output_json": point.output_json if is_point and point else None,
            "error_type": error.type if error else None,
            "error_message": error.message if error else None,
            "error_traceback": error.traceback if error else None,
        }

    run = None
    if batch.run is not None:
        update = batch.run
        error = update.error
        run = {
            "state": update.state.value,
            "output_json": update.output_json,
            "error_type": error.type if error else None,
            "error_message": error.message if error else None,
            "error_traceback": error.traceback if error else None,
            "error_step": error.step_id if error else None,
            "wake_epoch": finite(update.wake_epoch),
            "definition_hash": update.definition_hash,
        }
    return {
        "inserts": [row(a) for a in batch.inserts],
        "updates": [row(a) for a in batch.updates],
        "checkpoint": {"step_id": point.step_id} if point else None,
        "run": run,
        "consume_signal": batch.consume_signal,
    }


def finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def unit_from_row(row: tuple[Any, ...]) -> UnitRecord:
    (
        run_id, unit_id, parent_id, kind, node_prefix, node_id, part, input_json,
        context_json, state, wake, max_claimed,
    ) = row  # fmt: skip
    return UnitRecord(
        run_id=run_id,
        unit_id=unit_id,
        parent_id=parent_id,
        kind=kind,
        node_prefix=node_prefix,
        node_id=node_id,
        part=part,
        input_json=input_json,
        context_json=context_json,
        state=state,
        wake_epoch=wake,
        max_claimed=max_claimed,
    )


def fill_history(
    conn: duckdb.DuckDBPyConnection,
    runs: list[tuple[Any, ...]],
    attempts: list[tuple[Any, ...]],
    signals: list[tuple[Any, ...]],
) -> None:
    """Copy PostgreSQL rows into the DuckDB tables the history views read.

    ``attempts`` rows are the attempts table's columns with ``output_json``
    after ``owner`` and the error's three columns last."""
    from .memory import insert_frame

    insert_frame(conn, "sayiir_runs", tuple(RUN_COLUMNS.split(", ")), runs)
    insert_frame(
        conn,
        "sayiir_attempts",
        (*ATTEMPT_COLUMNS.split(", ")[:10], "output_json"),
        [row[:11] for row in attempts],
    )
    insert_frame(
        conn,
        "sayiir_attempt_errors",
        ("run_id", "step_id", "attempt", "error_type", "error_message",
         "error_traceback"),
        [
            (row[0], row[1], row[3], row[11], row[12] or "", row[13] or "")
            for row in attempts
            if row[11] is not None
        ],
    )  # fmt: skip
    insert_frame(
        conn,
        "sayiir_signals",
        ("run_id", "signal_id", "name", "payload_json", "sent_epoch",
         "consumed_epoch"),
        signals,
    )  # fmt: skip
