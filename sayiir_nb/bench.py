"""Benchmarks of the engine and the history: ``python -m sayiir_nb.bench``.

Prints, for trivial sync tasks, the cost per step of a chain of 1,000 and of
10,000 steps and of 1,000 runs of 3 steps, on the in-memory and the DuckDB
backends, and beside the DuckDB figures the cost of one raw DuckDB
``INSERT`` + ``COMMIT`` measured in the same run.
Targets: in-memory at most 30 µs per step and flat in chain length (10,000
steps cost at most 1.5 times per step what 1,000 do); DuckDB at most 1.5
times the raw commit.

Then it records 100,000 attempts in a DuckDB store and times loading them as a
DataFrame and computing the per-task summary (target: under 0.5 s each).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import duckdb

from .backends.base import Backend
from .backends.duckdb import DuckDBBackend
from .backends.memory import InMemoryBackend
from .runner import CheckpointingRunner
from .tasks import task
from .workflow import Flow, Workflow


@task
def increment(x: int) -> int:
    return x + 1


def chain(length: int) -> Workflow:
    flow = Flow(f"bench-chain-{length}")
    for index in range(length):
        flow.then(increment, name=f"s{index}")
    return flow.build()


def per_step_chain_us(make_backend: Callable[[], Backend], length: int) -> float:
    workflow = chain(length)
    backend = make_backend()
    runner = CheckpointingRunner(backend)
    began = time.perf_counter()
    status = runner.run(workflow, "bench", 0)
    took = time.perf_counter() - began
    assert status.output == length, status
    backend.close()
    return took / length * 1e6


def per_step_runs_us(make_backend: Callable[[], Backend], runs: int) -> float:
    workflow = chain(3)
    backend = make_backend()
    runner = CheckpointingRunner(backend)
    began = time.perf_counter()
    for index in range(runs):
        assert runner.run(workflow, f"run-{index}", 0).output == 3
    took = time.perf_counter() - began
    backend.close()
    return took / (runs * 3) * 1e6


def raw_commit_us(folder: Path, count: int = 500) -> float:
    """One INSERT + COMMIT on a DuckDB file, median over ``count``."""
    conn = duckdb.connect(str(folder / "raw.duckdb"))
    conn.execute("CREATE TABLE t (run_id VARCHAR, step_id VARCHAR, output VARCHAR)")
    samples = []
    for index in range(count):
        began = time.perf_counter()
        conn.execute("BEGIN TRANSACTION")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", ["bench", f"s{index}", "1"])
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - began)
    conn.close()
    return statistics.median(samples) * 1e6


def fill_history(backend: DuckDBBackend, attempts: int) -> None:
    """Record ``attempts`` attempts directly: runs of 5 steps, one step in
    ten retried once, one run in fifty failed."""
    runs = attempts // 5
    with backend.reading() as conn:
        conn.execute(
            "INSERT INTO sayiir_runs SELECT 'run-' || i, 'bench', 'h', "
            "CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END, '1', 'd', "
            "'json', '2', NULL, NULL, NULL, NULL, 1.7e9 + i, 1.7e9 + i + 0.5, NULL "
            "FROM range(?) t(i)",
            [runs],
        )
        conn.execute(
            "INSERT INTO sayiir_attempts SELECT 'run-' || (n // 5), "
            "'step-' || (n % 5), "
            "'task-' || (n % 5), CASE WHEN n % 10 = 3 THEN 2 ELSE 1 END, "
            "CASE WHEN n % 250 = 4 THEN 'failed' ELSE 'succeeded' END, "
            "1.7e9 + n // 5, 1.7e9 + n // 5 + (n % 5) * 0.1, "
            "1.7e9 + n // 5 + (n % 5) * 0.1 + random() * 0.05, "
            "CASE WHEN n % 10 = 3 THEN 0.5 ELSE 0 END, 'bench-worker', '1' "
            "FROM range(?) t(n)",
            [attempts],
        )


def history_figures(folder: Path, attempts: int) -> None:
    """Time loading every attempt as a DataFrame and the per-task summary.

    pandas and pyarrow are imported first (a notebook has them loaded
    already); the first query then still pays for DuckDB reading the new
    rows, so the first and a repeated call are both printed.
    """
    import pandas  # noqa: F401

    with suppress(ImportError):
        import pyarrow  # noqa: F401

    from .history import History

    backend = DuckDBBackend(folder / "history.duckdb")
    fill_history(backend, attempts)
    history = History(backend)
    for label in ("first call", "repeated"):
        began = time.perf_counter()
        frame = history.attempts()
        load_s = time.perf_counter() - began
        began = time.perf_counter()
        summary = history.task_summary()
        summary_s = time.perf_counter() - began
        print(
            f"history ({label}): {len(frame):,} attempts as a DataFrame in "
            f"{load_s:.3f}s; per-task summary of {len(summary)} tasks in "
            f"{summary_s:.3f}s (target < 0.5s each)"
        )
    backend.close()

    memory = InMemoryBackend()
    runner = CheckpointingRunner(memory)
    workflow = chain(5)
    for index in range(attempts // 50):
        runner.run(workflow, f"run-{index}", 0)
    began = time.perf_counter()
    frame = History(memory).attempts()
    print(
        f"history (in-memory backend): {len(frame):,} attempts as a DataFrame in "
        f"{time.perf_counter() - began:.3f}s (the rows are copied into DuckDB per read)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--history-only", action="store_true", help="only the history figures"
    )
    args = parser.parse_args(argv)
    small, large, runs = (200, 2000, 200) if args.quick else (1000, 10000, 1000)

    folder = Path(tempfile.mkdtemp(prefix="sayiir-bench-"))
    if args.history_only:
        history_figures(folder, 100_000)
        return
    counter = iter(range(10**9))

    def duck() -> Backend:
        return DuckDBBackend(folder / f"bench-{next(counter)}.duckdb")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    )
    per_step_chain_us(InMemoryBackend, 200)  # warm-up: imports and first calls
    memory_small = per_step_chain_us(InMemoryBackend, small)
    memory_large = per_step_chain_us(InMemoryBackend, large)
    memory_runs = per_step_runs_us(InMemoryBackend, runs)
    raw = raw_commit_us(folder)
    duck_small = per_step_chain_us(duck, small)
    duck_large = per_step_chain_us(duck, large)
    duck_runs = per_step_runs_us(duck, runs)

    rows = [
        ("in-memory", f"chain of {small:,}", memory_small, None),
        ("in-memory", f"chain of {large:,}", memory_large, None),
        ("in-memory", f"{runs:,} runs of 3", memory_runs, None),
        ("duckdb", f"chain of {small:,}", duck_small, duck_small / raw),
        ("duckdb", f"chain of {large:,}", duck_large, duck_large / raw),
        ("duckdb", f"{runs:,} runs of 3", duck_runs, duck_runs / raw),
    ]
    print(f"raw DuckDB INSERT + COMMIT: {raw:,.0f} µs (median of 500)")
    print(f"{'backend':<10} {'workload':<18} {'µs per step':>12} {'x raw commit':>13}")
    for backend, workload, cost, ratio in rows:
        shown = f"{ratio:.2f}" if ratio is not None else "-"
        print(f"{backend:<10} {workload:<18} {cost:>12,.1f} {shown:>13}")
    flat = memory_large / memory_small
    print(f"in-memory flatness ({large:,} vs {small:,}): {flat:.2f}x (target <= 1.5)")
    print(
        f"in-memory per step: {max(memory_small, memory_large):.1f} µs (target <= 30)"
    )
    worst = max(duck_small, duck_large, duck_runs) / raw
    print(f"duckdb per step vs raw commit: {worst:.2f}x at worst (target <= 1.5)")
    history_figures(folder, 100_000)


if __name__ == "__main__":
    main()
