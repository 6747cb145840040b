"""Shared fixtures: every contract test runs once per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sayiir_nb import CheckpointingRunner, DuckDBBackend, InMemoryBackend
from sayiir_nb.backends.base import Backend

os.environ.setdefault("MPLBACKEND", "Agg")  # no screen here

BACKENDS = ["memory", "duckdb", "postgres"]


def make_backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "memory":
        return InMemoryBackend()
    if kind == "duckdb":
        return DuckDBBackend(tmp_path / "store.duckdb")
    raise ValueError(kind)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        yield from _postgres_backend()
        return
    store = make_backend(request.param, tmp_path)
    yield store
    store.close()


def _postgres_backend() -> Iterator[Backend]:
    """A PostgresBackend on a schema of its own, dropped afterwards."""
    from sayiir_nb.backends.postgres import PostgresBackend

    from .pg import drop_schema, fresh_schema, require_dsn

    dsn = require_dsn()
    schema = fresh_schema()
    store = PostgresBackend(dsn, schema=schema)
    try:
        yield store
    finally:
        store.close()
        drop_schema(dsn, schema)


@pytest.fixture
def pg_dsn() -> str:
    from .pg import require_dsn

    return require_dsn()


@pytest.fixture
def pg_backend() -> Iterator[Backend]:
    yield from _postgres_backend()


@pytest.fixture
def runner(backend: Backend) -> CheckpointingRunner:
    return CheckpointingRunner(backend)


@pytest.fixture(autouse=True)
def _store_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the default store of CheckpointingRunner() out of the checkout."""
    monkeypatch.setenv("SAYIIR_NB_STORE", str(tmp_path / "default.duckdb"))
