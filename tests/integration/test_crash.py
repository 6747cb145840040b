"""Crash tests: real processes killed in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sayiir_nb import AttemptState, CheckpointingRunner, DuckDBBackend, RunState

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def start(name: str, store: Path, side: Path, mode: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.scenarios",
            name,
            str(store),
            str(side),
            mode,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(side: Path, line: str, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if side.exists() and line in side.read_text().splitlines():
            return
        time.sleep(0.02)
    raise AssertionError(f"{line!r} never appeared in {side}")


def lines(side: Path) -> list[str]:
    return side.read_text().splitlines()


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_process_killed_inside_step_3_resumes_only_step_3(tmp_path, how):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    crashed = start("chain", store, side, how)
    if how == "kill":
        wait_for_line(side, "step3 start")
        crashed.send_signal(signal.SIGKILL)
    crashed.communicate(timeout=60)
    assert crashed.returncode != 0
    assert lines(side) == ["step1", "step2", "step3 start"]

    resumed = start("chain", store, side)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "OUTPUT 3" in out
    assert lines(side) == ["step1", "step2", "step3 start", "step3 start", "step3 end"]

    with DuckDBBackend(store) as backend:
        steps = [(a.step_id, a.attempt, a.state) for a in backend.attempts("chain-1")]
    assert steps == [
        ("step1", 1, AttemptState.SUCCEEDED),
        ("step2", 1, AttemptState.SUCCEEDED),
        ("step3", 1, AttemptState.INTERRUPTED),
        ("step3", 2, AttemptState.SUCCEEDED),
    ]


def test_crash_during_backoff_continues_the_retry_budget(tmp_path):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    first = start("backoff", store, side)
    wait_for_line(side, "attempt 1")
    time.sleep(0.3)  # inside the 1.5 s backoff wait
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed_at = time.time()

    with CheckpointingRunner(DuckDBBackend(store)) as runner:
        status = runner.status("backoff-1")
        assert status.state is RunState.INTERRUPTED
        scheduled = runner.backend.attempts("backoff-1")[-1]
    assert (scheduled.attempt, scheduled.state) == (2, AttemptState.SCHEDULED)

    second = start("backoff", store, side)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "STATE failed" in out
    assert lines(side) == ["attempt 1", "attempt 2", "attempt 3"]
    with DuckDBBackend(store) as backend:
        rows = backend.attempts("backoff-1")
    assert [(r.attempt, r.state) for r in rows] == [
        (1, AttemptState.FAILED),
        (2, AttemptState.FAILED),
        (3, AttemptState.FAILED),
    ]
    # the stored wake-up time was kept: attempt 2 did not start early
    assert rows[1].started_epoch >= rows[0].ended_epoch + 1.5 - 0.01
    assert rows[1].started_epoch >= killed_at - 1.5


@pytest.mark.parametrize(
    ("scenario", "mode"),
    [("sigint-plain", ""), ("sigint-loop", "busy"), ("sigint-loop", "")],
)
def test_interrupt_stops_promptly_and_the_run_resumes(tmp_path, scenario, mode):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    child = start(scenario, store, side, mode)
    wait_for_line(side, "started")
    sent = time.time()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    took = time.time() - sent
    assert child.returncode == 0, err
    assert "KEYBOARD INTERRUPT" in out
    assert "STATE interrupted" in out
    assert took < 5, f"took {took:.1f}s to stop"
    with DuckDBBackend(store) as backend:
        rows = backend.attempts("sleepy-1")
        assert [r.state for r in rows] == [AttemptState.INTERRUPTED]
        assert backend.get_run("sleepy-1").state is RunState.INTERRUPTED

    resumed = start(scenario, store, side, "resume")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "OUTPUT done" in out
    assert lines(side).count("started") == 2
    assert os.path.exists(store)


@pytest.mark.parametrize(
    ("scenario", "run_id", "marker"),
    [
        ("sigint-many", "many-1", "big0"),
        ("sigint-async", "spins-1", "started"),
        ("sigint-asyncio-run", "sleepy-1", "started"),
    ],
)
def test_interrupt_outside_sync_task_code_stops_the_run(
    tmp_path, scenario, run_id, marker
):
    """Ctrl-C while the engine encodes or commits, inside an async task that
    never yields, or in sync code under asyncio.run: the run still stops."""
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    child = start(scenario, store, side, "busy")
    wait_for_line(side, marker)
    sent = time.time()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    took = time.time() - sent
    assert "KEYBOARD INTERRUPT" in out, (out, err)
    assert "STATE interrupted" in out
    assert took < 6, f"took {took:.1f}s to stop"
    if scenario == "sigint-many":
        assert len(lines(side)) < 20
    resumed = start(scenario, store, side, "resume")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "STATE completed" in out


def _kill_when(scenario: str, store: Path, side: Path, line: str) -> None:
    child = start(scenario, store, side, "kill")
    wait_for_line(side, line)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)


def _resume(scenario: str, store: Path, side: Path) -> str:
    resumed = start(scenario, store, side)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    return out


def test_kill_inside_a_branch_reruns_only_that_branch_step(tmp_path):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    _kill_when("branch", store, side, "b2 start")
    before = lines(side)
    assert before.count("a") == 1 and before.count("b1") == 1
    assert "OUTPUT {'a': 1, 'b': 110}" in _resume("branch", store, side)
    after = lines(side)
    assert (after.count("a"), after.count("b1"), after.count("b2 start")) == (1, 1, 2)


def test_kill_during_a_fan_out_resumes_only_unfinished_items(tmp_path):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    _kill_when("fanout", store, side, "item 3 start")
    finished_before = {line.split()[1] for line in lines(side) if line.endswith("end")}
    assert "OUTPUT [0, 1, 4, 9, 16, 25]" in _resume("fanout", store, side)
    after = lines(side)
    for item in range(6):
        assert after.count(f"item {item} end") == 1
        if str(item) in finished_before:
            assert after.count(f"item {item} start") == 1
    assert after.count("item 3 start") == 2


def test_kill_inside_a_loop_resumes_at_that_iteration(tmp_path):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    _kill_when("loop", store, side, "iter 2 start")
    assert "OUTPUT 4" in _resume("loop", store, side)
    after = lines(side)
    assert [after.count(f"iter {i} start") for i in range(4)] == [1, 1, 2, 1]
    assert [after.count(f"iter {i} end") for i in range(4)] == [1, 1, 1, 1]


def test_kill_during_a_delay_neither_shortens_nor_restarts_it(tmp_path):
    store, side = tmp_path / "store.duckdb", tmp_path / "side.txt"
    child = start("delay", store, side, "kill")
    wait_for_line_starting(side, "before ")
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert "OUTPUT 1" in _resume("delay", store, side)
    stamps = {line.split()[0]: float(line.split()[1]) for line in lines(side)}
    waited = stamps["after"] - stamps["before"]
    assert 2.0 - 0.05 <= waited < 2.0 + 1.5, waited


def wait_for_line_starting(side: Path, prefix: str, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if side.exists() and any(
            x.startswith(prefix) for x in side.read_text().splitlines()
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"no line starting {prefix!r} in {side}")
