"""The store's schema, as numbered migrations.

The DuckDB store applies every migration newer than its recorded
``schema_version`` when it is opened; other backends build the same tables on
an in-memory DuckDB database to offer the history views.
"""

from __future__ import annotations

import duckdb

from ..errors import BackendError
from .views import ALL_VIEWS, SIGNALS_TABLE

META = """
CREATE TABLE IF NOT EXISTS sayiir_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
)
"""

BASE_TABLES = (
    """
CREATE TABLE IF NOT EXISTS sayiir_runs (
    run_id VARCHAR PRIMARY KEY,
    workflow_name VARCHAR NOT NULL,
    definition_hash VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    input_json VARCHAR NOT NULL,
    input_digest VARCHAR NOT NULL,
    codec VARCHAR NOT NULL,
    output_json VARCHAR,
    error_type VARCHAR,
    error_message VARCHAR,
    error_traceback VARCHAR,
    error_step VARCHAR,
    created_epoch DOUBLE NOT NULL,
    updated_epoch DOUBLE NOT NULL,
    wake_epoch DOUBLE
)
""",
    """
CREATE TABLE IF NOT EXISTS sayiir_attempts (
    run_id VARCHAR NOT NULL,
    step_id VARCHAR NOT NULL,
    task_name VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    state VARCHAR NOT NULL,
    scheduled_epoch DOUBLE,
    started_epoch DOUBLE,
    ended_epoch DOUBLE,
    wait_before_s DOUBLE NOT NULL,
    owner VARCHAR NOT NULL,
    output_json VARCHAR
)
""",
    """
CREATE TABLE IF NOT EXISTS sayiir_attempt_errors (
    run_id VARCHAR NOT NULL,
    step_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    error_type VARCHAR NOT NULL,
    error_message VARCHAR NOT NULL,
    error_traceback VARCHAR NOT NULL
)
""",
)

# (version, statements): never edit a released migration; add a new one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, BASE_TABLES),
    (2, (SIGNALS_TABLE, *ALL_VIEWS)),
    (3, ("ALTER TABLE sayiir_signals ADD COLUMN signal_id VARCHAR",)),
    # sizes in bytes with strlen: a cast to BLOB refused text that is not ASCII
    (4, ALL_VIEWS),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def stored_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in the store (0 for an empty one)."""
    conn.execute(META)
    row = conn.execute(
        "SELECT value FROM sayiir_meta WHERE key = 'schema_version'"
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(
    conn: duckdb.DuckDBPyConnection, where: str, upto: int = SCHEMA_VERSION
) -> int:
    """Apply the missing migrations (up to ``upto``) in one transaction;
    return the version the store is at."""
    conn.execute("BEGIN TRANSACTION")
    try:
        current = stored_version(conn)
        if current > SCHEMA_VERSION:
            raise BackendError(
                f"{where} has schema version {current}, newer than this sayiir-nb "
                f"knows ({SCHEMA_VERSION}); upgrade sayiir-nb to open it."
            )
        for version, statements in MIGRATIONS:
            if current < version <= upto:
                for statement in statements:
                    conn.execute(statement)
                current = version
        conn.execute(
            "INSERT INTO sayiir_meta VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [str(current)],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return current
