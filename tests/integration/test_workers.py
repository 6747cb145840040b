"""Worker processes on a real PostgreSQL server, killed on purpose."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sayiir_nb import CheckpointingRunner, RunState
from sayiir_nb.backends.postgres import PostgresBackend

from ..pg import PrivateServer, drop_schema, fresh_schema, require_dsn
from ..waiting import wait_until
from .workers_app import few, registry, slow_chain

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[str, str, PostgresBackend]]:
    dsn = require_dsn()
    schema = fresh_schema()
    backend = PostgresBackend(dsn, schema=schema)
    yield dsn, schema, backend
    backend.close()
    drop_schema(dsn, schema)


class Workers:
    """Worker processes started with the ``sayiir-nb worker`` command."""

    def __init__(self, dsn: str, schema: str, marks: Path, **env: str) -> None:
        self.dsn, self.schema, self.marks = dsn, schema, marks
        self.env = {**os.environ, "SAYIIR_NB_TEST_MARKS": str(marks), **env}
        self.env["PYTHONPATH"] = str(ROOT)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: collections.Counter[str] = collections.Counter()

    def start(self, worker_id: str, *, lease: float = 2.0, concurrency: int = 1):
        self.starts[worker_id] += 1
        with (self.marks.parent / f"{worker_id}.log").open("ab") as log:
            self.procs[worker_id] = subprocess.Popen(
            [
                sys.executable, "-m", "sayiir_nb.cli", "worker",
                "--dsn", self.dsn, "--schema", self.schema,
                "--app", "tests.integration.workers_app:registry",
                "--worker-id", worker_id, "--concurrency", str(concurrency),
                "--lease", str(lease), "--poll", "0.5", "--grace", "2",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        return self.procs[worker_id]

    def wait_started(self) -> None:
        """Wait until every worker has its signal handlers (it logged its
        start), so that SIGTERM means a graceful stop."""
        for worker_id in self.procs:
            log = self.marks.parent / f"{worker_id}.log"
            wanted = self.starts[worker_id]
            wait_until(
                lambda log=log, worker_id=worker_id, wanted=wanted: (
                    log.read_text().count(f"worker {worker_id} started") >= wanted
                ),
                30,
                f"worker {worker_id} to start",
            )

    def kill(self, worker_id: str) -> None:
        proc = self.procs.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> list[int]:
        self.wait_started()
        codes = []
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(-9)
        self.procs.clear()
        return codes


def marks(path: Path) -> list[tuple[str, str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def test_kill_9_mid_step_another_worker_finishes(pg, tmp_path: Path) -> None:
    dsn, schema, backend = pg
    side = tmp_path / "marks.txt"
    workers = Workers(dsn, schema, side, SAYIIR_NB_SLOW_S="3")
    backend.enqueue_workflow(slow_chain, "crash-1", 5)
    victim = workers.start("victim", lease=1.5)
    wait_until(
        lambda: ("crash-1", "middle", "start") in [m[:3] for m in marks(side)],
        30,
        "the middle step to start",
    )
    workers.kill("victim")
    assert victim.returncode == -signal.SIGKILL
    workers.start("rescuer", lease=1.5)
    runner = CheckpointingRunner(backend, workflows=registry)
    try:
        wait_until(
            lambda: runner.status("crash-1").state is RunState.COMPLETED,
            30,
            "the run to complete on the rescuer",
        )
    finally:
        workers.stop_all()
    assert runner.status("crash-1").output == (5 + 1) * 2 - 1
    seen = collections.Counter(m[1:3] for m in marks(side))
    assert seen[("first", "done")] == 1
    assert seen[("middle", "start")] == 2  # the interrupted step ran again
    assert seen[("middle", "done")] == 1
    assert seen[("last", "done")] == 1
    states = [(a.step_id, a.state.value) for a in backend.attempts("crash-1")]
    assert ("middle", "interrupted") in states
    assert states.count(("middle", "succeeded")) == 1


def test_200_runs_on_4_workers_killed_every_two_seconds(pg, tmp_path: Path) -> None:
    dsn, schema, backend = pg
    side = tmp_path / "marks.txt"
    # 800 sleeping steps of 0.1 s on 8 slots keep the pool busy for at least
    # 10 s however fast the machine, so at least four kills land mid-work
    workers = Workers(dsn, schema, side, SAYIIR_NB_STEP_S="0.1")
    ids = [f"chaos-{n}" for n in range(200)]
    for n, run_id in enumerate(ids):
        backend.enqueue_workflow(few, run_id, n)
    names = [f"w{n}" for n in range(4)]
    for name in names:
        workers.start(name, lease=1.0, concurrency=2)
    began = time.monotonic()
    kills = 0
    try:
        while time.monotonic() - began < 50:
            rows = backend.execute(
                "SELECT count(*) FROM {s}.runs WHERE state = 'completed'"
            )
            if rows[0][0] == len(ids):
                break
            time.sleep(2)
            victim = names[kills % len(names)]
            workers.kill(victim)
            workers.start(victim, lease=1.0, concurrency=2)  # same worker id
            kills += 1
    finally:
        codes = workers.stop_all()
    took = time.monotonic() - began
    states = collections.Counter(run.state for run in backend.list_runs())
    assert states == {RunState.COMPLETED: 200}, (states, took)
    assert kills >= 3, f"only {kills} kills happened in {took:.1f}s"
    assert codes == [0, 0, 0, 0]

    succeeded = backend.execute(
        "SELECT run_id, step_id, count(*) FROM {s}.attempts "
        "WHERE state = 'succeeded' GROUP BY run_id, step_id HAVING count(*) > 1"
    )
    assert succeeded == []
    claimed = backend.execute(
        "SELECT (SELECT count(*) FROM {s}.leases WHERE owner IS NOT NULL), "
        "(SELECT count(*) FROM {s}.units WHERE state = 'claimed')"
    )
    assert claimed == [(0, 0)]
    runner = CheckpointingRunner(backend, workflows=registry)
    for n in (0, 7, 199):
        m = n + 1
        assert runner.status(f"chaos-{n}").output == m * m + (m + 1) ** 2 + (m + 2) ** 2
    done = collections.Counter((m[0], m[1]) for m in marks(side) if m[2] == "done")
    # every step ran to its end at least once; one that was cut short by a
    # kill may have run again, but only one of its executions was stored
    assert len(done) == 200 * 4


@pytest.mark.parametrize("down_s", [0.0, 3.0])
def test_a_worker_rides_out_a_server_restart(tmp_path: Path, down_s: float) -> None:
    """The server restarts (ending every connection) while a step runs, at
    once or after ``down_s`` seconds, longer than the step has left: the
    step's write waits for it, the notebook's next enqueue and the worker's
    wake-ups go through new connections, and nothing runs twice."""
    server = PrivateServer(str(tmp_path / "pgdata"))
    try:
        schema = fresh_schema()
        backend = PostgresBackend(server.dsn, schema=schema)
        side = tmp_path / "marks.txt"
        workers = Workers(server.dsn, schema, side, SAYIIR_NB_SLOW_S="2")
        backend.enqueue_workflow(slow_chain, "before", 5)
        workers.start("survivor", lease=10.0)
        wait_until(
            lambda: ("before", "middle", "start") in [m[:3] for m in marks(side)],
            30,
            "the middle step to start",
        )
        if down_s:
            server.stop()
            time.sleep(down_s)
            server.start()
        else:
            server.restart()
        backend.enqueue_workflow(slow_chain, "after", 1)
        runner = CheckpointingRunner(backend, workflows=registry)
        try:
            for run_id in ("before", "after"):
                wait_until(
                    lambda run_id=run_id: (
                        runner.status(run_id).state is RunState.COMPLETED
                    ),
                    60,
                    f"run {run_id} to complete",
                )
        finally:
            codes = workers.stop_all()
        assert codes == [0]
        assert runner.status("before").output == (5 + 1) * 2 - 1
        assert runner.status("after").output == (1 + 1) * 2 - 1
        seen = collections.Counter(m[:3] for m in marks(side))
        for run_id in ("before", "after"):
            assert seen[(run_id, "first", "done")] == 1
            assert seen[(run_id, "middle", "start")] == 1  # not taken over
            assert seen[(run_id, "last", "done")] == 1
        assert {a.state.value for a in backend.attempts("before")} == {"succeeded"}
        backend.close()
    finally:
        server.close()


def test_a_worker_stopped_while_the_server_is_down_exits_on_time(
    tmp_path: Path,
) -> None:
    """SIGTERM during an outage: the worker waits out its grace period, gives
    up giving its leases back after a few seconds and exits; once the server
    is back, another worker finishes the runs when those leases lapse."""
    server = PrivateServer(str(tmp_path / "pgdata"))
    try:
        schema = fresh_schema()
        backend = PostgresBackend(server.dsn, schema=schema)
        side = tmp_path / "marks.txt"
        workers = Workers(server.dsn, schema, side, SAYIIR_NB_SLOW_S="3")
        for n in range(3):
            backend.enqueue_workflow(slow_chain, f"out-{n}", n)
        stuck = workers.start("stuck", lease=2.0, concurrency=3)
        wait_until(
            lambda: sum(m[1:3] == ("middle", "start") for m in marks(side)) == 3,
            30,
            "three middle steps to start",
        )
        workers.wait_started()
        server.stop()
        stuck.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = stuck.wait(30)
        took = time.monotonic() - began
        workers.procs.clear()
        assert code == 0
        assert took < 15, f"the stop took {took:.1f}s"  # grace 2 s + give-up 5 s
        server.start()
        workers.start("rescuer", lease=2.0, concurrency=3)
        runner = CheckpointingRunner(backend, workflows=registry)
        try:
            for n in range(3):
                wait_until(
                    lambda n=n: runner.status(f"out-{n}").state is RunState.COMPLETED,
                    60,
                    f"run out-{n} to complete",
                )
        finally:
            assert workers.stop_all() == [0]
        assert [runner.status(f"out-{n}").output for n in range(3)] == [1, 3, 5]
        backend.close()
    finally:
        server.close()
