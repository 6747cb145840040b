"""Benchmark of PostgreSQL workers: throughput, pick-up time, round trips.

Usage: python -m sayiir_nb.bench_workers [--dsn DSN] [--runs N]

Prints steps per second for 1, 2 and 4 worker processes on trivial tasks
(runs of ten steps), the median time from enqueueing a run to a worker
starting its first step with an idle pool, and the SQL round trips per step
of one worker. The DSN defaults to ``$SAYIIR_NB_BENCH_DSN``, then
``$SAYIIR_NB_TEST_DSN``, then ``postgresql://postgres@127.0.0.1:5432/test``;
each measurement uses a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from .registry import WorkflowRegistry
from .tasks import task
from .workflow import Flow

if TYPE_CHECKING:
    pass

STEPS = 10


@task
def bump(x: int) -> int:
    return x + 1


def _chain() -> Flow:
    flow = Flow("bench-chain")
    for n in range(STEPS):
        flow = flow.then(bump, name=f"s{n}")
    return flow


chain = _chain().build()
registry = WorkflowRegistry([chain])


def _dsn(given: str | None) -> str:
    return (
        given
        or os.environ.get("SAYIIR_NB_BENCH_DSN")
        or os.environ.get("SAYIIR_NB_TEST_DSN")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


class _Schema:
    """A fresh schema with a backend on it, dropped on exit."""

    def __init__(self, dsn: str) -> None:
        from .backends.postgres import PostgresBackend

        self.dsn = dsn
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        self.backend = PostgresBackend(dsn, schema=self.name)

    def __enter__(self) -> _Schema:
        return self

    def __exit__(self, *exc: object) -> None:
        import psycopg

        self.backend.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def _start_workers(
    dsn: str, schema: str, count: int, logs: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(count):
        log = logs / f"worker-{schema}-{n}.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "sayiir_nb.cli",
                        "worker",
                        "--dsn",
                        dsn,
                        "--schema",
                        schema,
                        "--app",
                        "sayiir_nb.bench_workers:registry",
                        "--worker-id",
                        f"bench-{n}",
                        "--log-level",
                        "WARNING",
                    ],
                    stdout=out,
                    stderr=out,
                )
            )
    return procs


def _wait_idle_pool(backend, count: int) -> None:
    """Wait until every worker process listens (it is then ready)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = backend.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' "
            "AND application_name = 'sayiir-nb'"
        )
        if rows[0][0] >= count:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise RuntimeError("the worker processes did not start within 30 s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


def _completed(backend) -> int:
    return backend.execute("SELECT count(*) FROM {s}.runs WHERE state = 'completed'")[
        0
    ][0]


def throughput(dsn: str, processes: int, runs: int, logs: Path) -> float:
    """Steps per second of ``processes`` workers on ``runs`` runs."""
    with _Schema(dsn) as schema:
        procs = _start_workers(dsn, schema.name, processes, logs)
        try:
            _wait_idle_pool(schema.backend, processes)
            began = time.perf_counter()
            for n in range(runs):
                schema.backend.enqueue_workflow(chain, f"run-{n}", n)
            while _completed(schema.backend) < runs:
                time.sleep(0.02)
            took = time.perf_counter() - began
        finally:
            _stop(procs)
    return runs * STEPS / took


def pick_up(dsn: str, samples: int, logs: Path) -> list[float]:
    """Seconds from enqueue to the start of the first step, idle pool of 4."""
    with _Schema(dsn) as schema:
        procs = _start_workers(dsn, schema.name, 4, logs)
        found = []
        try:
            _wait_idle_pool(schema.backend, 4)
            for n in range(samples):
                enqueued = time.time()
                schema.backend.enqueue_workflow(chain, f"pick-{n}", n)
                while True:
                    rows = schema.backend.execute(
                        "SELECT started_epoch FROM {s}.attempts WHERE run_id = %s "
                        "AND step_id = 's0'",
                        [f"pick-{n}"],
                    )
                    if rows:
                        found.append(rows[0][0] - enqueued)
                        break
                    time.sleep(0.002)
                time.sleep(0.15)  # let the pool go idle again
        finally:
            _stop(procs)
    return found


def round_trips(dsn: str, runs: int) -> float:
    """SQL round trips per step of one in-process worker (claims, loads,
    writes and heartbeats included)."""
    from .backends.postgres import PostgresBackend
    from .worker import PooledWorker

    with _Schema(dsn) as schema:
        for n in range(runs):
            schema.backend.enqueue_workflow(chain, f"rt-{n}", n)
        own = PostgresBackend(dsn, schema=schema.name)
        worker = PooledWorker("bench-rt", own, registry, concurrency=1)
        own.round_trips = 0
        worker.start()
        while _completed(schema.backend) < runs:
            time.sleep(0.05)
        worker.stop()
        counted = own.round_trips
        own.close()
    return counted / (runs * STEPS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    dsn = _dsn(args.dsn)
    logs = Path(tempfile.mkdtemp(prefix="sayiir-bench-"))
    print(f"PostgreSQL workers, runs of {STEPS} trivial steps ({args.runs} runs)")
    rates = {}
    for processes in (1, 2, 4):
        rates[processes] = throughput(dsn, processes, args.runs, logs)
        print(f"  {processes} worker process(es): {rates[processes]:8.0f} steps/s")
    print(
        f"  scaling 4 vs 1: {rates[4] / rates[1]:.2f}x; target >= 500 steps/s with "
        f"4 processes: {'met' if rates[4] >= 500 else 'MISSED'}"
    )
    picks = pick_up(dsn, 30, logs)
    median_ms = statistics.median(picks) * 1000
    print(
        f"  pick-up, idle pool of 4: median {median_ms:.1f} ms, max "
        f"{max(picks) * 1000:.1f} ms over {len(picks)} runs; target < 50 ms: "
        f"{'met' if median_ms < 50 else 'MISSED'}"
    )
    per_step = round_trips(dsn, 50)
    print(f"  SQL round trips per step (one worker, all included): {per_step:.2f}")


if __name__ == "__main__":
    main()
