"""Where the PostgreSQL tests find a server.

``SAYIIR_NB_TEST_DSN`` names one (CI sets it, and sets
``SAYIIR_NB_REQUIRE_PG=1`` so that an unreachable server fails the suite
instead of skipping). Without it, a private server is started from the
``pgserver`` wheel; if that is not possible either, PostgreSQL tests skip and
say why.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from functools import cache

import pytest

DSN_ENV = "SAYIIR_NB_TEST_DSN"
REQUIRE_ENV = "SAYIIR_NB_REQUIRE_PG"


@cache
def server_dsn() -> str | None:
    """The DSN of a reachable server, or ``None`` (the reason is kept)."""
    import psycopg

    dsn = os.environ.get(DSN_ENV)
    if dsn:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.Error as error:
            _why.append(f"{DSN_ENV} is set but the server is unreachable: {error}")
            return None
        return dsn
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' notices on import
            import pgserver
    except ImportError:
        _why.append(f"{DSN_ENV} is not set and the pgserver package is missing")
        return None
    try:
        folder = tempfile.mkdtemp(prefix="sayiir-pgserver-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(folder, cleanup_mode="stop")
        _servers.append(server)
        return server.get_uri()
    except Exception as error:
        _why.append(f"{DSN_ENV} is not set and pgserver could not start: {error}")
        return None


_why: list[str] = []
_servers: list[object] = []


def require_dsn() -> str:
    """A server's DSN, or skip the test (fail it when CI requires one)."""
    dsn = server_dsn()
    if dsn is None:
        reason = "; ".join(_why) or "no PostgreSQL server"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"PostgreSQL is required here: {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    return dsn


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class PrivateServer:
    """A server of one test's own, started from the ``pgserver`` wheel in
    ``folder``, that the test may restart (the shared one must not be)."""

    def __init__(self, folder: str) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver
                from pgserver import _commands

                self._server = pgserver.get_server(folder, cleanup_mode="stop")
        except Exception as error:
            pytest.skip(f"a private PostgreSQL server could not start: {error}")
        self._pg_ctl = _commands.pg_ctl
        self.dsn = self._server.get_uri()

    def restart(self) -> None:
        """Stop the server (ending every connection) and start it again."""
        self._ctl("-m", "fast", "restart")
        self.start()  # pgserver learns the new server process

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def start(self) -> None:
        """Start the stopped server again, with the options it had."""
        with self._server._lock:
            self._server.ensure_postgres_running()

    def close(self) -> None:
        """Stop the server for good."""
        self._server.cleanup()

    def _ctl(self, *args: str) -> None:
        self._pg_ctl(
            ["-w", *args],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=60,
        )
