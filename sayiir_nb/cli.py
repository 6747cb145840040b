"""The ``sayiir-nb`` command: ``sayiir-nb worker --dsn ... --app mod:registry``.

The worker logs what it does on stderr and stops cleanly on SIGTERM or
SIGINT: it stops claiming, lets running steps finish within the grace period
and gives the rest back to the queue. A second signal stops at once (the
leases then lapse and other workers take over).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from .errors import SayiirError
from .registry import WorkflowRegistry
from .workflow import Workflow

logger = logging.getLogger("sayiir_nb.cli")


def load_registry(spec: str) -> WorkflowRegistry:
    """The registry named by ``package.module:attribute``: a
    :class:`WorkflowRegistry`, a workflow, an iterable of workflows, or a
    function returning one of these."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SayiirError(
            f"--app {spec!r} must look like 'package.module:registry' (a module "
            "and the name of a WorkflowRegistry in it)."
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SayiirError(
            f"--app {spec!r}: cannot import {module_name}: {error}"
        ) from error
    found: Any = getattr(module, attribute, None)
    if found is None:
        raise SayiirError(f"--app {spec!r}: {module_name} has no {attribute!r}.")
    if callable(found) and not isinstance(found, WorkflowRegistry | Workflow):
        try:
            found = found()
        except TypeError as error:
            raise SayiirError(
                f"--app {spec!r}: calling {attribute}() failed ({error}); name a "
                "WorkflowRegistry, a workflow, a list of workflows, or a function "
                "that takes no arguments and returns one."
            ) from error
    if isinstance(found, WorkflowRegistry):
        return found
    if isinstance(found, Workflow):
        return WorkflowRegistry([found])
    try:
        return WorkflowRegistry(list(found))
    except TypeError:
        raise SayiirError(
            f"--app {spec!r} is a {type(found).__name__}, not a WorkflowRegistry, "
            "a workflow or a list of workflows."
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sayiir-nb", description="Durable, checkpointed task pipelines."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker",
        help="run a pool of worker slots on a PostgreSQL backend",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    worker.add_argument(
        "--dsn",
        default=os.environ.get("SAYIIR_NB_DSN"),
        help="PostgreSQL connection string; $SAYIIR_NB_DSN if not given",
    )
    worker.add_argument("--schema", default="sayiir", help="PostgreSQL schema")
    worker.add_argument(
        "--app",
        required=True,
        help="package.module:name of a WorkflowRegistry, a workflow, a list of "
        "workflows, or a function returning one",
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="slots: runs executed at once"
    )
    worker.add_argument(
        "--worker-id",
        default=argparse.SUPPRESS,
        help="name of this worker, one per live worker (default: the host name "
        "and the process id, new at every start; a stable name lets a "
        "restarted worker take back its old claims at once)",
    )
    worker.add_argument("--lease", type=float, default=30.0, help="seconds")
    worker.add_argument("--grace", type=float, default=10.0, help="seconds")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds")
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.dsn:
        print("sayiir-nb worker: give --dsn or set SAYIIR_NB_DSN", file=sys.stderr)
        return 2
    try:
        return _work(args)
    except SayiirError as error:
        print(f"sayiir-nb worker: {error}", file=sys.stderr)
        return 1


def _work(args: argparse.Namespace) -> int:
    from .backends.postgres import PostgresBackend
    from .worker import PooledWorker

    registry = load_registry(args.app)
    backend = PostgresBackend(args.dsn, schema=args.schema)
    worker_id = getattr(args, "worker_id", f"{socket.gethostname()}-{os.getpid()}")
    worker = PooledWorker(
        worker_id,
        backend,
        registry,
        concurrency=args.concurrency,
        lease=args.lease,
        grace=args.grace,
        poll=args.poll,
    )
    stop = threading.Event()

    def on_signal(number: int, _frame: object) -> None:
        if stop.is_set():
            logger.warning("second signal: exiting now")
            os._exit(1)
        logger.info("received %s", signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "workflows: %s", ", ".join(registry.names()), extra={"event": "cli.start"}
    )
    worker.start()
    while not stop.wait(0.5):
        pass
    worker.stop()
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
