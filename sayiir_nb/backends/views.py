"""The history views: the documented tables users query with SQL.

They are DuckDB SQL over the stored tables (``sayiir_runs``,
``sayiir_attempts``, ``sayiir_attempt_errors``, ``sayiir_signals``), created in
the DuckDB store by its schema migrations and, for other backends, on an
in-memory DuckDB database filled with their rows. Times are ``TIMESTAMPTZ``;
durations are seconds.
"""

from __future__ import annotations

FINISHED = "('completed', 'failed', 'cancelled')"

RUNS = f"""
CREATE OR REPLACE VIEW runs AS
SELECT
    r.run_id,
    r.workflow_name,
    r.definition_hash,
    r.state,
    to_timestamp(r.created_epoch) AS created_at,
    to_timestamp(r.updated_epoch) AS updated_at,
    CASE WHEN r.state IN {FINISHED} THEN to_timestamp(r.updated_epoch) END
        AS finished_at,
    CASE WHEN r.state IN {FINISHED} THEN r.updated_epoch - r.created_epoch END
        AS duration_s,
    to_timestamp(r.wake_epoch) AS wake_at,
    coalesce(s.steps_completed, 0)::INTEGER AS steps_completed,
    coalesce(s.attempts, 0)::INTEGER AS attempts,
    coalesce(s.retries, 0)::INTEGER AS retries,
    strlen(r.input_json)::BIGINT AS input_bytes,
    strlen(r.output_json)::BIGINT AS output_bytes,
    r.error_type,
    r.error_message,
    r.error_step,
    r.codec
FROM sayiir_runs r
LEFT JOIN (
    SELECT
        run_id,
        count(*) FILTER (WHERE state = 'succeeded') AS steps_completed,
        count(*) FILTER (WHERE state <> 'scheduled') AS attempts,
        count(*) FILTER (WHERE state <> 'scheduled' AND attempt > 1) AS retries
    FROM sayiir_attempts
    GROUP BY run_id
) s USING (run_id)
"""

ATTEMPTS = """
CREATE OR REPLACE VIEW attempts AS
SELECT
    a.run_id,
    r.workflow_name,
    a.step_id,
    a.task_name,
    a.attempt::INTEGER AS attempt,
    a.state,
    to_timestamp(a.scheduled_epoch) AS scheduled_at,
    to_timestamp(a.started_epoch) AS started_at,
    to_timestamp(a.ended_epoch) AS ended_at,
    a.ended_epoch - a.started_epoch AS duration_s,
    a.wait_before_s,
    e.error_type,
    e.error_message,
    a.owner AS worker_id,
    strlen(a.output_json)::BIGINT AS output_bytes
FROM sayiir_attempts a
LEFT JOIN sayiir_attempt_errors e USING (run_id, step_id, attempt)
LEFT JOIN sayiir_runs r USING (run_id)
"""

STEPS = """
CREATE OR REPLACE VIEW steps AS
SELECT
    run_id,
    any_value(workflow_name) AS workflow_name,
    step_id,
    arg_max(task_name, attempt) AS task_name,
    arg_max(state, attempt) AS state,
    count(*) FILTER (WHERE state <> 'scheduled')::INTEGER AS attempts,
    greatest(count(*) FILTER (WHERE state <> 'scheduled') - 1, 0)::INTEGER
        AS retries,
    min(started_at) AS started_at,
    max(ended_at) AS ended_at,
    arg_max(duration_s, attempt) FILTER (WHERE state = 'succeeded') AS duration_s,
    coalesce(sum(duration_s) FILTER (WHERE state <> 'succeeded'), 0)
        AS failed_attempts_s,
    coalesce(sum(wait_before_s), 0) AS backoff_s,
    max(output_bytes) AS output_bytes,
    arg_max(error_type, attempt) FILTER (WHERE error_type IS NOT NULL)
        AS last_error_type,
    arg_max(error_message, attempt) FILTER (WHERE error_type IS NOT NULL)
        AS last_error_message
FROM attempts
GROUP BY run_id, step_id
"""

SIGNALS = """
CREATE OR REPLACE VIEW signals AS
SELECT
    run_id,
    name,
    to_timestamp(sent_epoch) AS sent_at,
    to_timestamp(consumed_epoch) AS consumed_at,
    strlen(payload_json)::BIGINT AS payload_bytes
FROM sayiir_signals
"""

ALL_VIEWS = (RUNS, ATTEMPTS, STEPS, SIGNALS)
VIEW_NAMES = ("runs", "steps", "attempts", "signals")

SIGNALS_TABLE = """
CREATE TABLE IF NOT EXISTS sayiir_signals (
    run_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    payload_json VARCHAR NOT NULL,
    sent_epoch DOUBLE NOT NULL,
    consumed_epoch DOUBLE
)
"""
