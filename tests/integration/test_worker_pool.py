"""Worker pools inside this process: lapsed leases, dropped connections,
DuckDB worker threads, task limits, and what a notebook does with workers."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sayiir_nb import (
    AttemptState,
    CheckpointingRunner,
    DuckDBBackend,
    Flow,
    PooledWorker,
    RunState,
    WorkflowRegistry,
    current_context,
    task,
)
from sayiir_nb.backends.base import RunUpdate
from sayiir_nb.backends.postgres import PostgresBackend

from ..pg import drop_schema, fresh_schema, require_dsn
from ..waiting import wait_until


@pytest.fixture
def schema() -> Iterator[tuple[str, str]]:
    dsn = require_dsn()
    name = fresh_schema()
    yield dsn, name
    drop_schema(dsn, name)


def test_a_worker_whose_lease_lapsed_cannot_commit(schema, caplog) -> None:
    dsn, name = schema
    backend_a = PostgresBackend(dsn, schema=name)
    backend_b = PostgresBackend(dsn, schema=name)
    started, release = threading.Event(), threading.Event()
    holder: dict[str, PooledWorker] = {}

    @task
    def outlive(_, ctx):
        if ctx.attempt == 1:
            holder["a"].heartbeat.suspend()  # the test hook: stop renewing
            started.set()
            release.wait(20)
            return "from-a"
        return "from-b"

    wf = Flow("lapse").then(outlive).then(lambda v: v + "!", name="after").build()
    caplog.set_level(logging.WARNING, logger="sayiir_nb")
    holder["a"] = PooledWorker("a", backend_a, [wf], lease=0.5).start()
    worker_b = None
    try:
        backend_a.enqueue_workflow(wf, "lapse-1")
        assert started.wait(10)
        worker_b = PooledWorker("b", backend_b, [wf], lease=0.5).start()
        runner = CheckpointingRunner(backend_b, workflows=WorkflowRegistry([wf]))
        wait_until(
            lambda: runner.status("lapse-1").state is RunState.COMPLETED,
            15,
            "worker b to take the run over",
        )
        release.set()  # a's task returns now, long after its lease lapsed
        wait_until(lambda: holder["a"].executed == 1, 10, "worker a to give up")
    finally:
        release.set()
        holder["a"].stop(grace=1)
        if worker_b is not None:
            worker_b.stop(grace=1)
    status = runner.status("lapse-1")
    assert status.output == "from-b!"
    rows = [
        (a.step_id, a.attempt, a.state.value) for a in backend_b.attempts("lapse-1")
    ]
    assert ("outlive", 1, "interrupted") in rows
    assert ("outlive", 2, "succeeded") in rows
    assert [r for r in rows if r[2] == "succeeded" and r[0] == "outlive"] == [
        ("outlive", 2, "succeeded")
    ]
    assert any(
        getattr(r, "event", None) == "run.lease_lost" and r.run_id == "lapse-1"
        for r in caplog.records
    )
    backend_a.close()
    backend_b.close()


def _terminate_connections(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name = 'sayiir-nb' AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


class _ReplyLost:
    """A pooled connection that carries out and commits the next statement
    whose SQL holds ``armed["lose"]`` (any, if ``True``), then breaks before
    the reply arrives."""

    def __init__(self, conn, armed: dict) -> None:
        self._conn, self._armed = conn, armed

    def execute(self, query, *args, **kwargs):
        import psycopg

        wanted = self._armed["lose"]
        cursor = self._conn.execute(query, *args, **kwargs)
        if wanted is True or (wanted and wanted in str(query)):
            self._armed["lose"] = False
            self._conn.close()
            raise psycopg.OperationalError("the connection broke before the reply")
        return cursor

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def _lose_next_reply(backend: PostgresBackend, monkeypatch) -> dict:
    from contextlib import contextmanager

    real = backend._pool.connection
    armed: dict = {"lose": False}

    @contextmanager
    def connection(timeout=None):
        with real(timeout=timeout) as conn:
            yield _ReplyLost(conn, armed) if armed["lose"] else conn

    monkeypatch.setattr(backend._pool, "connection", connection)
    return armed


def test_statements_whose_reply_was_lost_are_applied_once(schema, monkeypatch):
    """A statement retried after its connection broke, although it had been
    committed: a signal is stored once, a task slot taken once, a step's
    write applied once, each without an error."""
    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    ran: list[int] = []

    @task
    def count(x):
        ran.append(x)
        return x + 1

    wf = Flow("lost-replies").then(count).then(count, name="again").build()
    armed = _lose_next_reply(backend, monkeypatch)
    backend.enqueue_workflow(wf, "lost-1", 1)

    armed["lose"] = True
    backend.send_signal("lost-1", "go", "1")
    assert backend.execute("SELECT count(*) FROM {s}.signals") == [(1,)]

    backend.enqueue_workflow(wf, "lost-2", 2)
    armed["lose"] = "claim_run"
    runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
    assert runner.cancel("lost-2").state is RunState.CANCELLED
    assert armed["lose"] is False  # the claim's reply was lost indeed
    armed["lose"] = "claim_run"
    lease = backend.claim("lost-1", "me/1", 30)
    assert lease is not None  # the retry keeps the lease the lost call took
    assert armed["lose"] is False
    assert backend.current_lease("lost-1") == lease
    backend.release(lease)
    assert backend.execute(
        "SELECT count(*) FROM {s}.leases WHERE owner IS NOT NULL"
    ) == [(0,)]

    armed["lose"] = True
    slot = backend.acquire_slot("limited", 2, "w/1/1/tok", 30)
    assert slot in (0, 1)
    held = backend.execute("SELECT holder FROM {s}.task_slots WHERE holder IS NOT NULL")
    assert held == [("w/1/1/tok",)]

    real_write = backend.write

    def write_losing_replies(lease, batch):
        armed["lose"] = True  # every step write of the run loses its reply
        return real_write(lease, batch)

    monkeypatch.setattr(backend, "write", write_losing_replies)
    status = runner.run(wf, "lost-1", 1)
    assert status.state is RunState.COMPLETED and status.output == 3
    assert ran == [1, 2]
    assert backend.execute(
        "SELECT step_id, attempt, state FROM {s}.attempts WHERE run_id = 'lost-1' "
        "ORDER BY step_id"
    ) == [("again", 1, "succeeded"), ("count", 1, "succeeded")]
    backend.close()


def test_worker_survives_terminated_connections(schema) -> None:
    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    in_step = threading.Event()

    @task
    def slow(x):
        in_step.set()
        time.sleep(1.0)
        return x + 1

    @task
    def quick(x):
        return x * 10

    wf = Flow("terminated").then(quick).then(slow).then(quick, name="again").build()
    worker = PooledWorker("t", backend, [wf], lease=3, poll=0.5).start()
    runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
    try:
        wait_until(worker._listener.connected.is_set, 10, "the listener to connect")
        assert _terminate_connections(dsn) >= 2  # idle: pool and listener
        backend.enqueue_workflow(wf, "idle-1", 1)
        wait_until(
            lambda: runner.status("idle-1").state is RunState.COMPLETED,
            15,
            "the run enqueued after the idle connections were dropped",
        )
        assert runner.status("idle-1").output == 110

        backend.enqueue_workflow(wf, "busy-1", 2)
        assert in_step.wait(10)
        assert _terminate_connections(dsn) >= 1  # while the step runs
        wait_until(
            lambda: runner.status("busy-1").state is RunState.COMPLETED,
            20,
            "the run whose connections were dropped mid-step",
        )
        assert runner.status("busy-1").output == 210
        succeeded = [
            a.step_id
            for a in backend.attempts("busy-1")
            if a.state.value == "succeeded"
        ]
        assert len(succeeded) == 3
    finally:
        worker.stop(grace=1)
        backend.close()


def test_duckdb_worker_threads_run_delays_signals_and_cancels(tmp_path: Path) -> None:
    backend = DuckDBBackend(tmp_path / "store.duckdb")

    @task
    def add(x):
        return x + 1

    @task
    def double(x):
        return x * 2

    @task
    def hold(x):
        time.sleep(0.3)
        return x

    delayed = (
        Flow("delayed")
        .then(add)
        .parallel("p", {"a": add, "b": double})
        .delay("pause", 1.5)
        .then(lambda d: d["a"] + d["b"], name="join")
        .build()
    )
    signalled = (
        Flow("signalled")
        .then(add)
        .wait_for_signal("approval")
        .then(add, name="after")
        .build()
    )
    long = Flow("long")
    for n in range(4):
        long = long.then(hold, name=f"hold{n}")
    long = long.build()
    registry = WorkflowRegistry([delayed, signalled, long])
    runner = CheckpointingRunner(backend, workflows=registry)
    worker = PooledWorker("local", backend, registry, concurrency=3).start()
    try:
        for n in range(8):
            backend.enqueue_workflow(delayed, f"d-{n}", n)
        backend.enqueue_workflow(signalled, "s-1", 1)
        backend.enqueue_workflow("nobody-knows-it", "u-1", 1)  # by name
        backend.enqueue_workflow("signalled", "by-name", 1)
        assert backend.get_run("by-name").definition_hash == ""
        backend.enqueue_workflow(long, "c-1", 0)
        wait_until(
            lambda: runner.status("c-1").steps[0].state == "succeeded",
            10,
            "the long run to get going",
        )
        runner.cancel("c-1")  # a worker thread holds it: asked, not forced
        wait_until(
            lambda: runner.status("s-1").state is RunState.WAITING, 10, "the wait"
        )
        runner.send_signal("s-1", "approval", 5)
        wait_until(
            lambda: (
                all(
                    runner.status(f"d-{n}").state is RunState.COMPLETED
                    for n in range(8)
                )
                and runner.status("s-1").state is RunState.COMPLETED
                and runner.status("c-1").state is RunState.CANCELLED
            ),
            20,
            "every run to end",
        )
    finally:
        worker.stop(grace=1)
    assert [runner.status(f"d-{n}").output for n in range(8)] == [
        (n + 2) + (n + 1) * 2 for n in range(8)
    ]
    assert runner.status("s-1").output == 6
    # a run enqueued by name took the definition of the worker that ran it
    assert backend.get_run("by-name").definition_hash == signalled.definition_hash
    # a worker claims only the workflows it knows: this one waits for another
    assert runner.status("u-1").state is RunState.PENDING
    ran = [s.state for s in runner.status("c-1").steps]
    assert ran.count("succeeded") < 4
    backend.close()


def test_task_limits_hold_across_workers(schema) -> None:
    dsn, name = schema
    backends = [PostgresBackend(dsn, schema=name) for _ in range(2)]
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    starts: list[float] = []

    @task(max_concurrency=1)
    def one_at_a_time(x):
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1
        return x

    @task(rate_limit="20/s")
    def paced(x):
        starts.append(time.time())
        return x

    wf = (
        Flow("limited")
        .then(lambda n: list(range(n)), name="items")
        .fan_out(one_at_a_time)
        .fan_out(paced)
        .then(len, name="count")
        .build()
    )
    workers = [
        PooledWorker(f"l{i}", b, [wf], concurrency=3).start()
        for i, b in enumerate(backends)
    ]
    runner = CheckpointingRunner(backends[0], workflows=WorkflowRegistry([wf]))
    try:
        backends[0].enqueue_workflow(wf, "limits-1", 10)
        wait_until(
            lambda: runner.status("limits-1").state is RunState.COMPLETED,
            30,
            "the limited run",
        )
    finally:
        for worker in workers:
            worker.stop(grace=1)
    assert runner.status("limits-1").output == 10
    assert running["most"] == 1
    starts.sort()
    assert len(starts) == 10
    # 20 per second: one start every 0.05 s, so ten starts span 0.45 s at least
    # (a start may come a little late, never early)
    assert starts[-1] - starts[0] >= 0.44
    paced_s = [
        a.ended_epoch - a.started_epoch
        for a in backends[0].attempts("limits-1")
        if a.task_name == "paced"
    ]
    assert len(paced_s) == 10
    assert max(paced_s) < 0.3  # waiting for the rate is not the attempt's time
    # the history agrees with the limit: no two attempts overlap in it
    spans = sorted(
        (a.started_epoch, a.ended_epoch)
        for a in backends[0].attempts("limits-1")
        if a.task_name == "one_at_a_time"
    )
    assert len(spans) == 10
    assert all(
        end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)
    )
    for b in backends:
        b.close()


def test_branches_and_items_of_one_run_run_on_several_workers(schema) -> None:
    dsn, name = schema
    backends = [PostgresBackend(dsn, schema=name) for _ in range(3)]
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    @task
    def branch(x):
        time.sleep(0.4)
        return x

    @task
    def item(x):
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.1)
        with lock:
            running["now"] -= 1
        # an item reads an earlier step's output although it runs elsewhere
        return x * 2 + len(current_context().output("items")) - 8

    wf = (
        Flow("spread")
        .parallel("p", {"left": branch, "right": branch})
        .then(lambda d: list(range(8)), name="items")
        .fan_out(item, concurrency=2)
        .then(sum, name="total")
        .build()
    )
    workers = [
        PooledWorker(f"s{i}", b, [wf], concurrency=1).start()
        for i, b in enumerate(backends)
    ]
    runner = CheckpointingRunner(backends[0], workflows=WorkflowRegistry([wf]))
    try:
        backends[0].enqueue_workflow(wf, "spread-1", 1)
        wait_until(
            lambda: runner.status("spread-1").state is RunState.COMPLETED,
            30,
            "the spread run",
        )
    finally:
        for worker in workers:
            worker.stop(grace=1)
    assert runner.status("spread-1").output == 2 * sum(range(8))
    branches = [
        a for a in backends[0].attempts("spread-1") if a.step_id.startswith("p/")
    ]
    assert len(branches) == 2
    assert branches[0].owner.split("/")[0] != branches[1].owner.split("/")[0]
    first, second = sorted(branches, key=lambda a: a.started_epoch)
    assert second.started_epoch < first.ended_epoch  # at the same time
    assert running["most"] == 2  # the fan-out's concurrency, across workers
    for b in backends:
        b.close()


def test_bad_connection_settings_get_clear_errors() -> None:
    from sayiir_nb import BackendError

    began = time.monotonic()
    with pytest.raises(BackendError, match=r"cannot connect to PostgreSQL at") as info:
        PostgresBackend("postgresql://someone:s3cret@127.0.0.1:9/nowhere")
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert time.monotonic() - began < 10
    with pytest.raises(BackendError, match=r"schema name 'Bad-Name'"):
        PostgresBackend("postgresql://postgres@127.0.0.1/test", schema="Bad-Name")


def _chain_with_a_slow_middle(step_s: float):
    ran: list[str] = []

    @task
    def start(x):
        ran.append("start")
        return x

    @task
    def slow(x):
        ran.append("slow")
        time.sleep(step_s)
        return x + 1

    @task
    def after(x):
        ran.append("after")
        return x * 10

    wf = Flow("slow-middle").then(start).then(slow).then(after).build()
    return wf, ran


def test_a_cancel_survives_a_graceful_stop(schema) -> None:
    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    wf, ran = _chain_with_a_slow_middle(1.0)
    runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
    first = PooledWorker("first", backend, [wf]).start()
    backend.enqueue_workflow(wf, "cancel-stop", 1)
    wait_until(lambda: "slow" in ran, 10, "the slow step")
    runner.cancel("cancel-stop")  # asked while the step runs
    first.stop(grace=5)  # the step finishes, the run goes back to the queue
    second = PooledWorker("second", backend, [wf]).start()
    try:
        wait_until(
            lambda: runner.status("cancel-stop").state is RunState.CANCELLED,
            10,
            "the run to be cancelled by the next worker",
        )
    finally:
        second.stop(grace=1)
    assert ran == ["start", "slow"]  # 'after' never ran
    backend.close()


@pytest.mark.parametrize("store", ["postgres", "duckdb"])
def test_a_step_longer_than_the_grace_period_is_handed_back(
    store, request, tmp_path: Path
) -> None:
    if store == "postgres":
        dsn, name = request.getfixturevalue("schema")
        backend = PostgresBackend(dsn, schema=name)
    else:
        backend = DuckDBBackend(tmp_path / "stop.duckdb")
    wf, ran = _chain_with_a_slow_middle(1.5)
    runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
    first = PooledWorker("first", backend, [wf]).start()
    backend.enqueue_workflow(wf, "give-up", 1)
    wait_until(lambda: "slow" in ran, 10, "the slow step")
    first.stop(grace=0.2)  # the step is still sleeping
    assert runner.status("give-up").state is RunState.PENDING
    [lost] = [a for a in backend.attempts("give-up") if a.step_id == "slow"]
    assert lost.state is AttemptState.INTERRUPTED
    assert lost.owner == first.owner  # the worker that gave it up
    assert lost.ended_epoch is not None
    assert "worker first stopped before this attempt ended" in lost.error.message
    time.sleep(1.5)  # the abandoned step returns; its write is refused
    assert runner.status("give-up").state is RunState.PENDING
    second = PooledWorker("second", backend, [wf]).start()
    try:
        wait_until(
            lambda: runner.status("give-up").state is RunState.COMPLETED,
            10,
            "the next worker to finish the run",
        )
    finally:
        second.stop(grace=1)
    assert runner.status("give-up").output == 20
    slow = [
        (a.attempt, a.state) for a in backend.attempts("give-up") if a.step_id == "slow"
    ]
    assert slow == [(1, AttemptState.INTERRUPTED), (2, AttemptState.SUCCEEDED)]
    assert ran == ["start", "slow", "slow", "after"]
    backend.close()


def test_parts_a_stopping_worker_held_are_settled_when_the_run_is_cancelled(
    schema,
) -> None:
    dsn, name = schema
    backends = [PostgresBackend(dsn, schema=name) for _ in range(2)]
    bodies: list[str] = []

    def branch(label: str):
        @task(name=label)
        def run(x):
            bodies.append(label)
            time.sleep(1.0)
            return x

        return run

    wf = (
        Flow("settle-parts")
        .parallel("p", {k: branch(k) for k in ("a", "b", "c")})
        .build()
    )
    runner = CheckpointingRunner(backends[0], workflows=WorkflowRegistry([wf]))
    driver = PooledWorker("drv", backends[0], [wf], concurrency=1).start()
    helper = PooledWorker("hlp", backends[1], [wf], concurrency=2).start()
    try:
        backends[0].enqueue_workflow(wf, "settle-1", 0)
        wait_until(lambda: len(bodies) == 3, 10, "the three branches to start")
        held = [
            a.step_id
            for a in backends[0].attempts("settle-1")
            if a.owner.startswith(f"{helper.owner}/")
        ]
        assert held  # the helper runs at least one branch
        runner.cancel("settle-1")
        helper.stop(grace=0.2)  # its branches are still sleeping
        wait_until(
            lambda: runner.status("settle-1").state is RunState.CANCELLED,
            10,
            "the cancel",
        )
        time.sleep(1.2)  # every abandoned body has returned by now
    finally:
        driver.stop(grace=1)
        helper.stop(grace=1)
    attempts = backends[0].attempts("settle-1")
    assert [a.step_id for a in attempts if a.state is AttemptState.RUNNING] == []
    for attempt in attempts:
        if attempt.step_id in held:
            assert attempt.state is AttemptState.INTERRUPTED
            assert attempt.ended_epoch is not None
            assert "worker hlp stopped before this attempt ended" in (
                attempt.error.message
            )
    for b in backends:
        b.close()


def test_a_step_waiting_for_its_limit_at_a_stop_has_no_attempt(tmp_path) -> None:
    backend = DuckDBBackend(tmp_path / "capped.duckdb")
    bodies: list[int] = []

    @task(max_concurrency=2)
    def capped(x):
        bodies.append(x)
        time.sleep(0.8)
        return x

    wf = Flow("capped-stop").then(capped).build()
    runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
    first = PooledWorker("first", backend, [wf], concurrency=3).start()
    for n in range(3):
        backend.enqueue_workflow(wf, f"cap-{n}", n)
    wait_until(lambda: len(bodies) == 2, 10, "two capped bodies")
    time.sleep(0.1)  # the third waits for a slot
    first.stop(grace=0.1)
    waited = [n for n in range(3) if n not in bodies]
    assert len(waited) == 1
    assert backend.attempts(f"cap-{waited[0]}") == []  # it never started
    time.sleep(0.9)  # the abandoned bodies return
    second = PooledWorker("second", backend, [wf], concurrency=3).start()
    try:
        wait_until(
            lambda: all(
                runner.status(f"cap-{n}").state is RunState.COMPLETED for n in range(3)
            ),
            15,
            "the next worker to finish the runs",
        )
    finally:
        second.stop(grace=1)
    numbers = {n: [a.attempt for a in backend.attempts(f"cap-{n}")] for n in range(3)}
    assert numbers[waited[0]] == [1]
    assert sorted(len(v) for v in numbers.values()) == [1, 2, 2]
    backend.close()


def test_a_cancel_reaches_branches_on_other_workers(schema) -> None:
    dsn, name = schema
    backends = [PostgresBackend(dsn, schema=name) for _ in range(2)]
    ran: list[str] = []

    def stage(label: str):
        @task(name=label)
        def run(x):
            ran.append(label)
            time.sleep(0.6)
            return x

        return run

    wf = (
        Flow("cancel-branches")
        .parallel(
            "p",
            {
                "a": Flow("a").then(stage("a1")).then(stage("a2")).then(stage("a3")),
                "b": stage("b1"),
            },
        )
        .build()
    )
    runner = CheckpointingRunner(backends[0], workflows=WorkflowRegistry([wf]))
    workers = [PooledWorker(f"c{i}", b, [wf]).start() for i, b in enumerate(backends)]
    try:
        backends[0].enqueue_workflow(wf, "cb-1", 0)
        wait_until(lambda: "a1" in ran and "b1" in ran, 10, "both branches")
        runner.cancel("cb-1")
        wait_until(
            lambda: runner.status("cb-1").state is RunState.CANCELLED, 10, "cancel"
        )
        time.sleep(1.5)  # a branch that ignored the cancel would go on now
    finally:
        for worker in workers:
            worker.stop(grace=1)
    assert "a3" not in ran
    backends[0].close()
    backends[1].close()


def test_a_stopping_worker_leaves_a_lease_it_lost_alone(schema) -> None:
    dsn, name = schema
    backend_a = PostgresBackend(dsn, schema=name)
    backend_b = PostgresBackend(dsn, schema=name)
    wf, ran = _chain_with_a_slow_middle(2.0)
    runner = CheckpointingRunner(backend_b, workflows=WorkflowRegistry([wf]))
    a = PooledWorker("a", backend_a, [wf], lease=0.5).start()
    backend_a.enqueue_workflow(wf, "stop-lost", 1)
    wait_until(lambda: "slow" in ran, 10, "the slow step on a")
    a.heartbeat.suspend()
    b = PooledWorker("b", backend_b, [wf], lease=0.5).start()
    try:
        wait_until(lambda: ran.count("slow") == 2, 10, "b to take the run over")
        a.stop(grace=0.1)  # must not void b's lease
        wait_until(
            lambda: runner.status("stop-lost").state is RunState.COMPLETED,
            15,
            "b to finish",
        )
    finally:
        b.stop(grace=1)
    assert ran.count("slow") == 2  # a's attempt and b's: not a third one
    assert runner.status("stop-lost").output == 20
    backend_a.close()
    backend_b.close()


def _running_run(backend: PostgresBackend, wf, run_id: str):
    """A run stored as running under a driver's lease, as a worker leaves it."""
    from sayiir_nb.backends.base import RunUpdate, WriteBatch

    backend.enqueue_workflow(wf, run_id, 1)
    lease = backend.claim_next("driver/1/1", 30, time.time())
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.RUNNING)))
    return lease


def _units(run_id: str, parent: str, count: int, max_claimed=None):
    from sayiir_nb.backends.base import UnitRecord

    return [
        UnitRecord(
            run_id=run_id,
            unit_id=f"{parent}[{n}]",
            parent_id=parent,
            kind="item",
            node_prefix="",
            node_id=parent,
            part=str(n),
            input_json=str(n),
            max_claimed=max_claimed,
        )
        for n in range(count)
    ]


@task
def _noop(x):
    return x


_FANNED = Flow("fanned").fan_out(_noop).build()


def test_parts_and_their_fences_after_a_restart_or_a_race(schema) -> None:
    from sayiir_nb import LeaseLostError
    from sayiir_nb.backends.base import AttemptRecord, WriteBatch

    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    try:
        # a claim from before a restart cannot write into the new run
        driver = _running_run(backend, _FANNED, "fence-1")
        backend.publish_units(driver, _units("fence-1", "_noop", 1))
        old = backend.claim_unit("fence-1", "_noop", "old/1/1", 30, time.time())
        backend.release(driver)
        backend.enqueue_workflow(_FANNED, "fence-1", 1, restart=True)
        driver = backend.claim_next("driver/2/1", 30, time.time())
        backend.write(driver, WriteBatch(run=RunUpdate(state=RunState.RUNNING)))
        backend.publish_units(driver, _units("fence-1", "_noop", 1))
        new = backend.claim_unit("fence-1", "_noop", "new/1/1", 30, time.time())
        assert new is not None and new.fence != old.fence
        late = AttemptRecord(
            run_id="fence-1",
            step_id="_noop[0]",
            task_name="_noop",
            attempt=1,
            state=AttemptState.RUNNING,
            started_epoch=time.time(),
        )
        with pytest.raises(LeaseLostError):
            backend.write(old, WriteBatch(inserts=(late,)))

        # a fan-out at its limit does not hide the parts of other runs
        a = _running_run(backend, _FANNED, "full-a")
        backend.publish_units(a, _units("full-a", "_noop", 10, max_claimed=1))
        assert backend.claim_unit("full-a", "_noop", "x/1/1", 30, time.time())
        b = _running_run(backend, _FANNED, "free-b")
        backend.publish_units(b, _units("free-b", "_noop", 2))
        lease, _ = backend.claim_work("y/1/1", 30, time.time(), ("unit",))
        assert lease is not None and lease.run_id == "free-b"

        # no parts are handed out while a cancel is pending
        backend.request_control("free-b", RunState.CANCELLED)
        lease, _ = backend.claim_work("y/1/1", 30, time.time(), ("unit",))
        assert lease is None or lease.run_id != "free-b"
    finally:
        backend.close()


def test_a_run_that_parks_as_a_signal_or_a_part_arrives_is_due_at_once(
    schema,
) -> None:
    from sayiir_nb.backends.base import WriteBatch

    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    try:
        # the signal comes while the run is still running, then it parks
        driver = _running_run(backend, _FANNED, "race-1")
        backend.send_signal("race-1", "go", "1")
        backend.write(driver, WriteBatch(run=RunUpdate(state=RunState.WAITING)))
        backend.release(driver)
        again = backend.claim_next("w/1/1", 30, time.time() + 0.01)
        assert again is not None and again.run_id == "race-1"
        backend.release(again)

        # a part parks just as a signal arrives: it is due at once
        driver = _running_run(backend, _FANNED, "race-2")
        backend.publish_units(driver, _units("race-2", "_noop", 1))
        part = backend.claim_unit("race-2", "_noop", "p/1/1", 30, time.time())
        backend.send_signal("race-2", "go", "1")
        backend.finish_unit(part, "waiting", None)
        assert backend.claim_unit("race-2", "_noop", "q/1/1", 30, time.time() + 0.01)

        # a part ends after its run parked: the run is due at once
        backend.write(driver, WriteBatch(run=RunUpdate(state=RunState.WAITING)))
        backend.release(driver)
        part = backend.live_units("race-2")[0]
        lease = backend.claim_unit("race-2", "_noop", "r/1/1", 0.01, time.time())
        assert lease is None  # the run is waiting: parts are not handed out
        assert part.state == "claimed"
    finally:
        backend.close()


def test_a_notebook_run_does_not_take_parts_that_workers_hold(schema) -> None:
    from sayiir_nb import RunBusyError

    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    try:
        driver = _running_run(backend, _FANNED, "held-1")
        backend.publish_units(driver, _units("held-1", "_noop", 2))
        assert backend.claim_unit("held-1", "_noop", "w/1/1", 30, time.time())
        backend.release(driver)  # the driving worker died
        runner = CheckpointingRunner(backend)
        with pytest.raises(RunBusyError, match="held-1.*parts"):
            runner.run(_FANNED, "held-1", 1)
    finally:
        backend.close()


def test_a_restarted_worker_frees_its_task_slots(schema) -> None:
    dsn, name = schema
    backend = PostgresBackend(dsn, schema=name)
    try:
        assert backend.acquire_slot("send", 1, "k0/old/1", 60) == 0
        assert backend.acquire_slot("send", 1, "k1/other/1", 60) is None
        backend.release_owners("k0/", "k0/new")
        assert backend.acquire_slot("send", 1, "k1/other/1", 60) == 0
    finally:
        backend.close()


def test_a_run_call_on_a_run_a_worker_holds_says_it_waits(tmp_path, monkeypatch):
    import sayiir_nb.runner as runner_module
    from sayiir_nb import SayiirWarning

    monkeypatch.setattr(runner_module, "_TELL_WAITING_S", 0.2)
    backend = DuckDBBackend(tmp_path / "store.duckdb")
    wf, ran = _chain_with_a_slow_middle(1.0)
    worker = PooledWorker("busy", backend, [wf]).start()
    try:
        backend.enqueue_workflow(wf, "held", 1)
        wait_until(lambda: "slow" in ran, 10, "the worker to start")
        runner = CheckpointingRunner(backend, workflows=WorkflowRegistry([wf]))
        with pytest.warns(SayiirWarning, match=r"'held' is being executed by 'busy/"):
            status = runner.run(wf, "held", 1)
    finally:
        worker.stop(grace=1)
    assert status.state is RunState.COMPLETED and status.output == 20
    assert ran == ["start", "slow", "after"]  # nothing ran twice
    backend.close()


def test_attempts_waiting_for_a_rate_limit_do_not_start_after_a_cancel(schema):
    dsn, name = schema
    backends = [PostgresBackend(dsn, schema=name) for _ in range(2)]
    starts: list[float] = []

    @task(rate_limit="5/s")
    def rated(x):
        starts.append(time.time())
        return x

    wf = (
        Flow("rated")
        .then(lambda n: list(range(n)), name="items")
        .fan_out(rated, concurrency=6)
        .build()
    )
    workers = [
        PooledWorker(f"r{i}", b, [wf], concurrency=3).start()
        for i, b in enumerate(backends)
    ]
    runner = CheckpointingRunner(backends[0], workflows=WorkflowRegistry([wf]))
    try:
        backends[0].enqueue_workflow(wf, "rated-1", 30)
        wait_until(lambda: len(starts) >= 3, 15, "the first rated starts")
        runner.cancel("rated-1")
        cancelled_at = time.time()
        wait_until(
            lambda: runner.status("rated-1").state is RunState.CANCELLED,
            15,
            "the cancel",
        )
        time.sleep(1.0)  # attempts that ignored the cancel would start now
    finally:
        for worker in workers:
            worker.stop(grace=1)
    late = [t for t in starts if t > cancelled_at + 0.05]
    assert late == []
    assert len(starts) < 30
    for b in backends:
        b.close()
