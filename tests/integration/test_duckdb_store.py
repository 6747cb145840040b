"""DuckDB specifics: the file lock, durability, failed transactions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sayiir_nb import (
    BackendError,
    CheckpointingRunner,
    DuckDBBackend,
    Flow,
    task,
)
from sayiir_nb.backends.schema import SCHEMA_VERSION


def test_second_process_gets_a_clear_error(tmp_path):
    path = tmp_path / "held.duckdb"
    holder = DuckDBBackend(path)
    script = textwrap.dedent(
        f"""
        from sayiir_nb import DuckDBBackend, StoreLockedError
        try:
            DuckDBBackend({str(path)!r})
        except StoreLockedError as error:
            print(error)
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    finally:
        holder.close()
    message = out.stdout
    assert str(path) in message
    assert f"process {os.getpid()}" in message
    assert "export_parquet" in message
    assert "runner.close()" in message
    assert out.returncode == 0


def test_same_file_twice_in_one_process_shares_the_lock_holder(tmp_path):
    """DuckDB lets one process open a file twice only through one database
    instance; a closed backend frees the file for the next one."""
    path = tmp_path / "s.duckdb"
    first = DuckDBBackend(path)
    first.close()
    second = DuckDBBackend(path)
    second.close()
    with pytest.raises(BackendError, match="closed"):
        second.get_run("x")


def test_failed_statement_is_never_a_successful_commit(tmp_path):
    backend = DuckDBBackend(tmp_path / "tx.duckdb")
    with pytest.raises(BackendError, match="rolled back"), backend._tx() as conn:
        conn.execute("INSERT INTO sayiir_meta VALUES ('k', 'v')")
        conn.execute("INSERT INTO sayiir_meta VALUES ('k', 'again')")
    rows = backend.execute(
        "SELECT count(*) FROM sayiir_meta WHERE key = 'k'"
    ).fetchone()
    assert rows == (0,)
    backend.close()


def test_runs_survive_reopening_the_file(tmp_path):
    path = tmp_path / "durable.duckdb"

    @task
    def add(x):
        return x + 1

    wf = Flow("durable").then(add).build()
    with CheckpointingRunner(DuckDBBackend(path)) as runner:
        runner.run(wf, "r", 1)
    with CheckpointingRunner(DuckDBBackend(path)) as runner:
        status = runner.status("r")
    assert status.output == 2
    assert [s.attempts for s in status.steps] == [1]


def test_schema_version_is_recorded(tmp_path):
    backend = DuckDBBackend(tmp_path / "v.duckdb")
    row = backend.execute(
        "SELECT value FROM sayiir_meta WHERE key = 'schema_version'"
    ).fetchone()
    assert row == (str(SCHEMA_VERSION),)
    backend.close()


def test_an_older_store_is_migrated_when_opened(tmp_path):
    import duckdb

    from sayiir_nb.backends.schema import migrate

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as conn:
        assert migrate(conn, "old store", upto=1) == 1
        conn.execute(
            "INSERT INTO sayiir_runs VALUES ('kept', 'wf', 'h', 'completed', '1', 'd', "
            "'json', '2', NULL, NULL, NULL, NULL, 1.0, 2.0, NULL)"
        )
        views = conn.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'runs'"
        ).fetchone()
        assert views == (0,)
    with CheckpointingRunner(DuckDBBackend(path)) as runner:
        assert runner.backend.schema_version == SCHEMA_VERSION
        runs = runner.history.runs()
    assert list(runs["run_id"]) == ["kept"]
    assert runs["duration_s"].iloc[0] == 1.0


def test_a_newer_store_is_refused(tmp_path):
    import duckdb

    path = tmp_path / "new.duckdb"
    DuckDBBackend(path).close()
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE sayiir_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(BackendError, match="schema version 99, newer"):
        DuckDBBackend(path)
