"""Runner behaviour that must hold on every backend."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from sayiir_nb import (
    AttemptState,
    CheckpointingRunner,
    CodecError,
    DefinitionMismatchError,
    Flow,
    InputMismatchError,
    RunNotFoundError,
    RunState,
    UnenforceableTimeoutWarning,
    task,
)


class Calls:
    """Counts executions of task bodies, thread-safely."""

    def __init__(self):
        self._lock = threading.Lock()
        self.log: list[str] = []

    def hit(self, name: str) -> None:
        with self._lock:
            self.log.append(name)

    def count(self, name: str) -> int:
        return self.log.count(name)


def chain(calls: Calls, name: str = "chain"):
    @task
    def fetch(campaign):
        calls.hit("fetch")
        return [f"{campaign}-{i}" for i in range(3)]

    @task
    def render(recipients, ctx):
        calls.hit("render")
        return {
            "campaign": ctx.input,
            "count": len(recipients),
            "first": (recipients[0],),
        }

    @task
    def send(messages):
        calls.hit("send")
        return messages["count"]

    return Flow(name).then(fetch).then(render).then(send).build()


def test_chain_passes_values_and_context(runner):
    calls = Calls()
    wf = chain(calls)
    status = runner.run(wf, "c-1", "spring")
    assert status.state is RunState.COMPLETED
    assert status.output == 3
    assert status.run_id == "c-1"
    assert [s.state for s in status.steps] == ["succeeded"] * 3


def test_task_reads_any_earlier_output(runner):
    @task
    def first(x):
        return {"campaign": x}

    @task
    def second(_):
        return [1, 2]

    @task
    def third(recipients, ctx):
        return (ctx.output("first")["campaign"], tuple(recipients), ctx.attempt)

    wf = Flow("reads").then(first).then(second).then(third).build()
    assert runner.run(wf, "r", "c9").output == ("c9", (1, 2), 1)


def test_retries_make_exactly_n_plus_one_attempts(runner, backend):
    calls = Calls()

    @task(retries=2, backoff=0.01)
    def always_fails(_):
        calls.hit("x")
        raise ConnectionError("smtp down")

    wf = Flow("fails").then(always_fails).build()
    status = runner.run(wf, "f-1", None)
    assert status.state is RunState.FAILED
    assert calls.count("x") == 3
    assert status.error.type == "ConnectionError"
    assert status.error.message == "smtp down"
    assert status.error.step_id == "always_fails"
    with pytest.raises(ConnectionError, match="smtp down"):
        status.raise_for_error()
    rows = backend.attempts("f-1")
    assert [(r.attempt, r.state) for r in rows] == [
        (1, AttemptState.FAILED),
        (2, AttemptState.FAILED),
        (3, AttemptState.FAILED),
    ]


def test_final_error_survives_the_store(runner, backend):
    class QuotaExceeded(Exception):
        pass

    @task
    def over_quota(_):
        raise QuotaExceeded("daily quota of 500 reached")

    wf = Flow("quota").then(over_quota).build()
    runner.run(wf, "q", None)
    fresh = CheckpointingRunner(backend)
    error = fresh.status("q").error
    assert error.type.endswith("QuotaExceeded")
    assert error.message == "daily quota of 500 reached"
    assert "QuotaExceeded" in error.traceback


def test_waits_follow_backoff(runner, backend):
    @task(retries=3, backoff=0.05, backoff_multiplier=2)
    def flaky(_, ctx):
        if ctx.attempt < 4:
            raise TimeoutError("busy")
        return ctx.attempt

    wf = Flow("waits").then(flaky).build()
    assert runner.run(wf, "w", None).output == 4
    rows = backend.attempts("w")
    assert [r.wait_before_s for r in rows] == pytest.approx([0, 0.05, 0.1, 0.2])
    for before, after in itertools.pairwise(rows):
        gap = after.started_epoch - before.ended_epoch
        assert gap >= after.wait_before_s - 0.005
        assert gap < after.wait_before_s + 0.25


def test_retry_on_filters(runner):
    calls = Calls()

    @task(retries=3, backoff=0.01, retry_on=ConnectionError)
    def picky(_):
        calls.hit("p")
        raise ValueError("bad template")

    status = runner.run(Flow("picky").then(picky).build(), "p", None)
    assert status.state is RunState.FAILED
    assert calls.count("p") == 1
    assert status.error.type == "ValueError"


def test_async_task_is_cancelled_at_its_deadline(runner, backend):
    cancelled = threading.Event()

    @task(timeout=0.1)
    async def slow(_):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    began = time.perf_counter()
    status = runner.run(Flow("slow-async").then(slow).build(), "a", None)
    took = time.perf_counter() - began
    assert status.state is RunState.FAILED
    assert took < 1.0
    assert cancelled.is_set()
    assert status.error.type == "TimeoutError"
    assert backend.attempts("a")[0].state is AttemptState.TIMED_OUT


def test_sync_timeout_reported_at_deadline_and_late_result_discarded(runner, backend):
    finished = threading.Event()

    @task(timeout=0.2, retries=1, backoff=0)
    def blocking(_, ctx):
        if ctx.attempt == 1:
            time.sleep(1.0)
            finished.set()
            return "late"
        return "on time"

    began = time.perf_counter()
    with pytest.warns(UnenforceableTimeoutWarning, match="cannot kill a thread"):
        status = runner.run(Flow("slow-sync").then(blocking).build(), "s", None)
    took = time.perf_counter() - began
    assert took < 0.9
    assert status.output == "on time"
    states = [r.state for r in backend.attempts("s")]
    assert states == [AttemptState.TIMED_OUT, AttemptState.SUCCEEDED]
    assert finished.wait(2)
    time.sleep(0.05)
    assert runner.status("s").output == "on time"


def test_task_raising_timeout_error_is_a_plain_failure(runner, backend):
    @task(timeout=5)
    async def raises_its_own(_):
        raise TimeoutError("upstream said timeout")

    runner.run(Flow("own-timeout").then(raises_its_own).build(), "t", None)
    assert backend.attempts("t")[0].state is AttemptState.FAILED


def test_completed_run_returns_stored_output_and_runs_nothing(runner):
    calls = Calls()
    wf = chain(calls)
    first = runner.run(wf, "done", "spring")
    again = runner.run(wf, "done", "spring")
    assert again.output == first.output
    assert calls.log == ["fetch", "render", "send"]


def test_different_input_is_refused_naming_both(runner):
    calls = Calls()
    wf = chain(calls)
    runner.run(wf, "in", "spring")
    with pytest.raises(InputMismatchError) as info:
        runner.run(wf, "in", "autumn")
    assert "spring" in str(info.value)
    assert "autumn" in str(info.value)
    assert "restart=True" in str(info.value)
    assert runner.run(wf, "in", "autumn", restart=True).output == 3
    assert calls.count("fetch") == 2


def test_equal_inputs_with_other_key_order_match(runner):
    calls = Calls()
    wf = chain(calls)
    runner.run(wf, "order", {"a": 1, "b": 2})
    runner.run(wf, "order", {"b": 2, "a": 1})
    assert calls.count("fetch") == 1


def test_changed_definition_is_refused_naming_both(runner):
    calls = Calls()
    old = chain(calls, "pipeline")
    runner.run(old, "def", "x")

    @task(retries=5)
    def other(x):
        return x

    new = Flow("pipeline").then(other).build()
    with pytest.raises(DefinitionMismatchError) as info:
        runner.run(new, "def", "x")
    assert old.definition_hash[:12] in str(info.value)
    assert new.definition_hash[:12] in str(info.value)
    assert runner.run(new, "def", "x", restart=True).output == "x"


def test_two_threads_running_one_run_id_execute_once(runner):
    calls = Calls()

    @task
    def slow_step(x):
        calls.hit("slow")
        time.sleep(0.3)
        return x * 2

    wf = Flow("once").then(slow_step).build()
    results = []

    def go():
        results.append(runner.run(wf, "same", 21))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls.count("slow") == 1
    assert [r.output for r in results] == [42, 42, 42]


def test_every_attempt_is_recorded(runner, backend):
    @task(retries=1, backoff=0.02)
    def once_flaky(_, ctx):
        if ctx.attempt == 1:
            raise ConnectionResetError("reset by peer")
        return "ok"

    runner.run(Flow("recorded").then(once_flaky).build(), "rec", None)
    first, second = backend.attempts("rec")
    assert (first.run_id, first.step_id, first.task_name) == (
        "rec",
        "once_flaky",
        "once_flaky",
    )
    assert (first.attempt, first.state) == (1, AttemptState.FAILED)
    assert (first.error.type, first.error.message) == (
        "ConnectionResetError",
        "reset by peer",
    )
    assert first.started_epoch <= first.ended_epoch <= second.started_epoch
    assert (second.attempt, second.state, second.error) == (
        2,
        AttemptState.SUCCEEDED,
        None,
    )
    assert second.wait_before_s == pytest.approx(0.02)
    assert first.owner == runner.owner


def test_keyboard_interrupt_marks_interrupted_and_resumes(runner, backend):
    calls = Calls()

    @task(retries=3)
    def interrupted_once(x):
        calls.hit("i")
        if calls.count("i") == 1:
            raise KeyboardInterrupt
        return x

    wf = Flow("kbd").then(interrupted_once).build()
    with pytest.raises(KeyboardInterrupt):
        runner.run(wf, "k", 5)
    assert runner.status("k").state is RunState.INTERRUPTED
    assert [r.state for r in backend.attempts("k")] == [AttemptState.INTERRUPTED]
    assert runner.run(wf, "k", 5).output == 5
    assert calls.count("i") == 2


def test_cancelling_arun_marks_interrupted(runner, backend):
    started = asyncio.Event()

    @task
    async def long_running(_):
        started.set()
        await asyncio.sleep(10)

    @task
    async def quick(_):
        return "resumed"

    wf = Flow("cancel").then(long_running).build()

    async def main():
        job = asyncio.ensure_future(runner.arun(wf, "c", None))
        await started.wait()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    began = time.perf_counter()
    asyncio.run(main())
    assert time.perf_counter() - began < 2
    assert runner.status("c").state is RunState.INTERRUPTED
    assert backend.attempts("c")[0].state is AttemptState.INTERRUPTED


def test_sync_run_inside_a_running_event_loop(runner):
    calls = Calls()
    wf = chain(calls)

    @task
    async def hop(x):
        await asyncio.sleep(0.01)
        return x + 1

    async_wf = Flow("in-loop").then(hop).then(hop, name="hop2").build()

    async def main():
        return runner.run(wf, "loop", "x"), runner.run(async_wf, "loop2", 1)

    sync_status, async_status = asyncio.run(main())
    assert sync_status.output == 3
    assert async_status.output == 3


def test_refused_output_fails_the_attempt_and_stores_nothing(runner, backend):
    calls = Calls()

    @task(retries=3)
    def returns_socket(_):
        calls.hit("r")
        return {"ok": [1, threading.Lock()]}

    wf = Flow("refused").then(returns_socket).build()
    status = runner.run(wf, "bad", None)
    assert status.state is RunState.FAILED
    assert calls.count("r") == 1
    assert status.error.type.endswith("CodecError")
    assert "returns_socket" in status.error.message
    assert "output['ok'][1]" in status.error.message
    assert backend.load("bad").checkpoints == {}
    with pytest.raises(CodecError):
        status.raise_for_error()


def test_unknown_run_id(runner):
    with pytest.raises(RunNotFoundError, match="nope"):
        runner.status("nope")


def test_abrupt_stop_resumes_the_unfinished_step_only(runner, backend):
    """An engine that stops without writing anything (as a killed process
    does) leaves a run that the next call resumes at the unfinished step."""

    class Crash(BaseException):
        pass

    calls = Calls()

    @task
    def one(x):
        calls.hit("one")
        return x + 1

    @task
    def two(x):
        calls.hit("two")
        return x + 1

    @task
    def three(x):
        calls.hit("three")
        if calls.count("three") == 1:
            raise Crash
        return x + 1

    wf = Flow("abrupt").then(one).then(two).then(three).build()
    with pytest.raises(Crash):
        runner.run(wf, "ab", 0)
    assert CheckpointingRunner(backend).status("ab").state is RunState.INTERRUPTED
    assert CheckpointingRunner(backend).run(wf, "ab", 0).output == 3
    assert calls.log == ["one", "two", "three", "three"]
    states = [(r.step_id, r.attempt, r.state) for r in backend.attempts("ab")]
    assert ("three", 1, AttemptState.INTERRUPTED) in states
    assert ("three", 2, AttemptState.SUCCEEDED) in states


def test_default_runner_uses_a_duckdb_file(tmp_path):
    from sayiir_nb import DuckDBBackend, default_store_path

    with CheckpointingRunner() as runner:
        assert isinstance(runner.backend, DuckDBBackend)
        assert runner.backend.path == str(default_store_path())
        runner.run(chain(Calls()), "d", "x")
    with CheckpointingRunner() as again:
        assert again.status("d").output == 3


def test_unstorable_outputs_fail_the_run_not_the_engine(runner, backend):
    calls = Calls()

    @task(retries=2)
    def cyclic(_):
        calls.hit("c")
        loop: list = []
        loop.append(loop)
        return loop

    status = runner.run(Flow("cycle").then(cyclic).build(), "cyc", None)
    assert status.state is RunState.FAILED
    assert calls.count("c") == 1
    assert "cycle" in status.error.message
    assert [a.state for a in backend.attempts("cyc")] == [AttemptState.FAILED]


def test_racing_callers_on_a_new_run_execute_it_once(runner, backend):
    calls = Calls()
    original = backend.claim
    first = threading.Event()

    def slow_first_claim(*args, **kwargs):
        if not first.is_set():
            first.set()
            time.sleep(0.3)  # the first caller is descheduled before claiming
        return original(*args, **kwargs)

    backend.claim = slow_first_claim

    @task
    def once(x):
        calls.hit("once")
        return x + 1

    wf = Flow("race").then(once).build()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(runner.run(wf, "new", 1)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert calls.count("once") == 1
    assert [r.output for r in results] == [2, 2]
    assert [a.state for a in backend.attempts("new")] == [AttemptState.SUCCEEDED]


@pytest.mark.parametrize("bad", [None, 5, "", "   ", "x" * 201])
def test_bad_run_ids_are_refused(runner, bad):
    from sayiir_nb import RunIdError

    with pytest.raises(RunIdError, match="run id"):
        runner.run(chain(Calls()), bad, "x")


def test_equal_dicts_with_other_key_types_match(runner):
    calls = Calls()
    wf = chain(calls)
    runner.run(wf, "keys", {1: "x", 2: "y", "$": 3})
    runner.run(wf, "keys", {"$": 3, 2: "y", 1: "x"})
    assert calls.count("fetch") == 1


def test_a_cancelled_run_started_over_runs_to_its_end(runner, backend):
    calls = Calls()
    wf = chain(calls)
    backend.enqueue_workflow(wf, "again", "spring")
    assert runner.cancel("again").state is RunState.CANCELLED
    assert runner.run(wf, "again", "spring").state is RunState.CANCELLED  # stays
    status = runner.run(wf, "again", "spring", restart=True)
    assert status.state is RunState.COMPLETED and status.output == 3
    assert calls.log == ["fetch", "render", "send"]
