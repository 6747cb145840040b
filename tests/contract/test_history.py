"""History: the same rows, columns and types on every backend."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from sayiir_nb import CheckpointingRunner, Flow, SayiirError, task

RUN_COLUMNS = [
    "run_id", "workflow_name", "definition_hash", "state", "created_at", "updated_at",
    "finished_at", "duration_s", "wake_at", "steps_completed", "attempts", "retries",
    "input_bytes", "output_bytes", "error_type", "error_message", "error_step", "codec",
]  # fmt: skip
STEP_COLUMNS = [
    "run_id", "workflow_name", "step_id", "task_name", "state", "attempts", "retries",
    "started_at", "ended_at", "duration_s", "failed_attempts_s", "backoff_s",
    "output_bytes", "last_error_type", "last_error_message",
]  # fmt: skip
ATTEMPT_COLUMNS = [
    "run_id", "workflow_name", "step_id", "task_name", "attempt", "state",
    "scheduled_at", "started_at", "ended_at", "duration_s", "wait_before_s",
    "error_type", "error_message", "worker_id", "output_bytes",
]  # fmt: skip


@pytest.fixture
def ran(runner):
    """Three runs: one clean, one with retries, one failed after a timeout."""

    @task
    def load(x):
        return list(range(x))

    @task(retries=2, backoff=0.05, backoff_multiplier=2)
    def send(items, ctx):
        if ctx.input == 2 and ctx.attempt < 3:
            raise ConnectionError(f"deferred {ctx.attempt}")
        return len(items)

    @task(timeout=0.05, retries=1, backoff=0.01)
    async def report(count, ctx):
        if ctx.input == 3:
            import asyncio

            await asyncio.sleep(1)
        return {"sent": count}

    wf = Flow("history").then(load).then(send).then(report).build()
    for value in (1, 2, 3):
        runner.run(wf, f"run-{value}", value)
    return runner


def test_runs_frame_has_documented_columns_and_values(ran):
    runs = ran.history.runs()
    assert list(runs.columns) == RUN_COLUMNS
    assert list(runs["run_id"]) == ["run-3", "run-2", "run-1"]
    by_id = runs.set_index("run_id")
    assert list(by_id.loc[["run-1", "run-2", "run-3"], "state"]) == [
        "completed",
        "completed",
        "failed",
    ]
    assert by_id.loc["run-2", "attempts"] == 5
    assert by_id.loc["run-2", "retries"] == 2
    assert by_id.loc["run-3", "error_type"] == "TimeoutError"
    assert by_id.loc["run-3", "error_step"] == "report"
    assert by_id.loc["run-1", "input_bytes"] == 1
    assert by_id.loc["run-1", "output_bytes"] == len('{"sent":1}')
    assert str(runs["created_at"].dtype) == "datetime64[us, UTC]"
    assert (runs["duration_s"] > 0).all()


def test_filters_on_runs(ran):
    history = ran.history
    assert list(history.runs(state="failed")["run_id"]) == ["run-3"]
    assert len(history.runs(state=["completed", "failed"])) == 3
    assert len(history.runs(workflow="other")) == 0
    assert len(history.runs(since="1h")) == 3
    assert len(history.runs(until=datetime.now(UTC) - timedelta(hours=1))) == 0
    with pytest.raises(SayiirError, match="unknown run state 'done'"):
        history.runs(state="done")
    with pytest.raises(SayiirError, match="no time zone"):
        history.runs(since=datetime(2026, 1, 1))


def test_attempt_rows_are_exact(ran):
    attempts = ran.history.attempts("run-2")
    assert list(attempts.columns) == ATTEMPT_COLUMNS
    rows = list(
        attempts[["step_id", "attempt", "state", "error_type"]].itertuples(
            index=False, name=None
        )
    )
    assert [(s, a, st) for s, a, st, _ in rows] == [
        ("load", 1, "succeeded"),
        ("send", 1, "failed"),
        ("send", 2, "failed"),
        ("send", 3, "succeeded"),
        ("report", 1, "succeeded"),
    ]
    send = attempts[attempts["step_id"] == "send"]
    assert list(send["error_message"].iloc[:2]) == ["deferred 1", "deferred 2"]
    assert list(send["wait_before_s"]) == pytest.approx([0, 0.05, 0.1])
    starts = list(send["started_at"])
    ends = list(send["ended_at"])
    gaps = [(starts[k + 1] - ends[k]).total_seconds() for k in range(2)]
    assert gaps[0] >= 0.05 - 0.005
    assert gaps[1] >= 0.1 - 0.005
    assert (attempts["worker_id"] == ran.owner).all()


def test_timeouts_show_in_attempts(ran):
    attempts = ran.history.attempts("run-3", task="report")
    assert list(attempts["state"]) == ["timed_out", "timed_out"]
    assert list(attempts["error_type"]) == ["TimeoutError", "TimeoutError"]
    assert (attempts["duration_s"] >= 0.04).all()
    assert (attempts["duration_s"] < 0.5).all()


def test_steps_frame_and_outputs_on_request(ran):
    steps = ran.history.steps("run-2")
    assert list(steps.columns) == STEP_COLUMNS
    assert list(steps["step_id"]) == ["load", "send", "report"]
    send = steps.set_index("step_id").loc["send"]
    assert (send["attempts"], send["retries"], send["state"]) == (3, 2, "succeeded")
    assert send["backoff_s"] == pytest.approx(0.15)
    assert send["last_error_type"] == "ConnectionError"
    with_outputs = ran.history.steps("run-2", outputs=True)
    assert list(with_outputs["output"]) == [[0, 1], 2, {"sent": 2}]
    assert ran.history.outputs("run-1") == {
        "load": [0],
        "send": 1,
        "report": {"sent": 1},
    }
    failed = ran.history.steps("run-3", outputs=True).set_index("step_id")
    assert failed.loc["report", "output"] is None
    assert len(ran.history.steps(["run-1", "run-2"])) == 6


def test_task_summary(ran):
    summary = ran.history.task_summary().set_index("task_name")
    assert list(summary.index) == ["load", "report", "send"]
    send = summary.loc["send"]
    assert (send["runs"], send["steps"], send["attempts"], send["failures"]) == (
        3,
        3,
        5,
        2,
    )
    assert send["success_rate"] == pytest.approx(1.0)
    assert send["retry_rate"] == pytest.approx(1 / 3)
    assert send["backoff_s"] == pytest.approx(0.15)
    assert send["time_lost_s"] >= send["backoff_s"]
    report = summary.loc["report"]
    assert report["success_rate"] == pytest.approx(2 / 3)
    assert report["failures"] == 2
    assert report["p95_s"] >= report["p50_s"] > 0


def test_sql_over_documented_names(ran):
    frame = ran.history.sql(
        "SELECT task_name, count(*) AS n FROM attempts WHERE state = ? "
        "GROUP BY task_name ORDER BY task_name",
        ["failed"],
    )
    assert frame.to_dict("records") == [{"task_name": "send", "n": 2}]
    assert len(ran.history.sql("SELECT * FROM signals")) == 0


def test_export_parquet_reads_back(ran, tmp_path):
    paths = ran.history.export_parquet(tmp_path / "export")
    assert set(paths) == {"runs", "steps", "attempts", "signals"}
    attempts = pd.read_parquet(paths["attempts"])
    assert len(attempts) == len(ran.history.attempts())
    assert set(attempts["run_id"]) == {"run-1", "run-2", "run-3"}


def test_retention_deletes_finished_runs_only(runner, backend):
    gate = threading.Event()

    @task
    def quick(x):
        return x

    @task
    def blocked(x):
        gate.wait(10)
        return x

    runner.run(Flow("quick").then(quick).build(), "old", 1)
    slow = Flow("slow").then(blocked).build()
    thread = threading.Thread(target=runner.run, args=(slow, "going", 1))
    thread.start()
    try:
        deadline = time.time() + 5
        while backend.current_lease("going") is None and time.time() < deadline:
            time.sleep(0.01)
        assert runner.history.delete_runs(older_than="1h") == 0
        with pytest.raises(SayiirError, match="keeps unfinished runs"):
            runner.history.delete_runs(states=["running"])
        assert runner.history.delete_runs() == 1
        assert list(runner.history.runs()["run_id"]) == ["going"]
        assert runner.history.attempts("old").empty
    finally:
        gate.set()
        thread.join()
    assert runner.status("going").output == 1


def test_reading_history_while_a_run_is_going(runner):
    release = threading.Event()
    seen = []

    @task
    def waits(x):
        release.wait(10)
        return x

    wf = Flow("live").then(waits).build()
    thread = threading.Thread(target=runner.run, args=(wf, "live-1", 1))
    thread.start()
    try:
        deadline = time.time() + 5
        while time.time() < deadline:
            frame = runner.history.runs()
            if len(frame):
                seen.append(frame.iloc[0]["state"])
                break
            time.sleep(0.01)
    finally:
        release.set()
        thread.join()
    assert seen == ["running"]
    assert list(runner.history.runs()["state"]) == ["completed"]


def test_empty_store_gives_empty_frames_with_columns(backend):
    history = CheckpointingRunner(backend).history
    assert list(history.runs().columns) == RUN_COLUMNS
    assert history.attempts().empty
    assert history.task_summary().empty


def test_task_summary_filters(ran):
    history = ran.history
    assert list(history.task_summary(workflow="history")["task_name"]) == [
        "load",
        "report",
        "send",
    ]
    assert history.task_summary(workflow="other").empty
    assert len(history.task_summary(since="1h")) == 3
    assert len(history.task_summary(workflow="history", since=datetime.now(UTC))) == 0


def test_delete_runs_takes_a_single_state(ran):
    assert ran.history.delete_runs(states="failed") == 1
    assert sorted(ran.history.runs()["run_id"]) == ["run-1", "run-2"]


def test_history_of_many_runs(runner):
    wf = Flow("many").then(task(lambda x: x, name="same")).build()
    for index in range(500):
        runner.run(wf, f"r{index}", index)
    attempts = runner.history.attempts()
    assert len(attempts) == 500
    assert set(attempts["state"]) == {"succeeded"}
    assert runner.history.task_summary().loc[0, "steps"] == 500


def test_sizes_of_text_that_is_not_ascii(runner):
    wf = Flow("text").then(task(lambda x: {"name": "Zoé ✓"}, name="greet")).build()
    runner.run(wf, "t", "Inès")
    runs = runner.history.runs()
    assert runs.loc[0, "input_bytes"] == len('"Inès"'.encode())
    steps = runner.history.steps("t")
    assert steps.loc[0, "output_bytes"] == len('{"name":"Zoé ✓"}'.encode())
