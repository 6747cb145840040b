"""A PostgreSQL server for trying the workers out.

:func:`dev_dsn` returns, in order: ``$SAYIIR_NB_DSN``; the local server at
``127.0.0.1:5432`` (user ``postgres``, database ``test``) if it answers; else
a private server started from the ``pgserver`` wheel (``pip install
pgserver``) in a temporary folder, which stops when the process ends.
"""

from __future__ import annotations

import os
import tempfile
import warnings

LOCAL = "postgresql://postgres@127.0.0.1:5432/test"
_started: list[object] = []


def dev_dsn() -> str:
    """A DSN of a server to try the workers on; see the module's notes."""
    import psycopg

    given = os.environ.get("SAYIIR_NB_DSN")
    if given:
        return given
    try:
        psycopg.connect(LOCAL, connect_timeout=2).close()
        return LOCAL
    except psycopg.Error:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(
                tempfile.mkdtemp(prefix="sayiir-pg-"), cleanup_mode="stop"
            )
    except Exception as error:
        raise RuntimeError(
            "no PostgreSQL server: set SAYIIR_NB_DSN, start one on 127.0.0.1:5432, "
            f"or pip install pgserver (starting it failed: {error})."
        ) from error
    _started.append(server)
    return server.get_uri()
