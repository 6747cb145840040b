"""Control flow on every backend: branches, routes, fan-out, loops, child
workflows, delays, signals, cancel and pause."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sayiir_nb import (
    AttemptState,
    CheckpointingRunner,
    CodecError,
    DefinitionError,
    DurationError,
    Flow,
    RunFinishedError,
    RunNotFoundError,
    RunState,
    task,
)


class Crash(BaseException):
    """Stops the engine without any write, as a killed process would."""


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def hit(self, name: str) -> int:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            return self.calls[name]

    def __getitem__(self, name: str) -> int:
        return self.calls.get(name, 0)


@pytest.fixture
def fast_runner(backend):
    return CheckpointingRunner(backend, inline_wait=0.3)


# -- parallel ----------------------------------------------------------------


def test_parallel_branches_really_run_concurrently(runner):
    @task
    async def email(x):
        await asyncio.sleep(0.5)
        return f"email:{x}"

    @task
    def sms(x):
        time.sleep(0.5)
        return f"sms:{x}"

    @task
    def push_prepare(x):
        time.sleep(0.25)
        return x

    @task
    async def push_send(x):
        await asyncio.sleep(0.25)
        return f"push:{x}"

    @task
    def join(outputs):
        return outputs

    wf = (
        Flow("notify")
        .parallel(
            "channels", {"email": email, "sms": sms, "push": [push_prepare, push_send]}
        )
        .then(join)
        .build()
    )
    began = time.perf_counter()
    status = runner.run(wf, "p", 7)
    took = time.perf_counter() - began
    assert status.output == {"email": "email:7", "sms": "sms:7", "push": "push:7"}
    assert took < 0.9, f"branches ran one after the other ({took:.2f}s)"
    steps = {s.step_id for s in status.steps}
    assert {
        "channels/email/email",
        "channels/sms/sms",
        "channels/push/push_send",
    } <= steps


def test_failed_branch_fails_the_join_naming_the_branch(runner, backend):
    counter = Counter()

    @task
    def ok(x):
        counter.hit("ok")
        return x

    @task(retries=1, backoff=0.01)
    def broken(x):
        counter.hit("broken")
        raise ConnectionError("provider down")

    wf = Flow("fails").parallel("send", {"email": ok, "sms": broken}).build()
    status = runner.run(wf, "f", 1)
    assert status.state is RunState.FAILED
    assert status.error.type == "ConnectionError"
    assert "branch 'sms' of parallel 'send'" in status.error.message
    assert "provider down" in status.error.message
    assert (counter["ok"], counter["broken"]) == (1, 2)
    assert backend.load("f").checkpoints.keys() == {"send/email/ok"}


def test_crash_inside_a_branch_reruns_only_unfinished_branch_steps(backend):
    counter = Counter()

    @task
    def a1(x):
        counter.hit("a1")
        return x + 1

    @task
    async def b1(x):
        await asyncio.sleep(0.05)
        counter.hit("b1")
        return x + 10

    @task
    def b2(x):
        if counter.hit("b2") == 1:
            raise Crash
        return x + 100

    wf = Flow("crashy").parallel("fork", {"a": a1, "b": [b1, b2]}).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "c", 0)
    status = CheckpointingRunner(backend).run(wf, "c", 0)
    assert status.output == {"a": 1, "b": 110}
    assert (counter["a1"], counter["b1"], counter["b2"]) == (1, 1, 2)


# -- routing -----------------------------------------------------------------


def test_route_chooses_and_checkpoints_the_key(backend):
    counter = Counter()

    def variant(recipient):
        counter.hit("key")
        return "a" if recipient["id"] % 2 else "b"

    @task
    def render_a(r):
        return f"A:{r['id']}"

    @task
    def render_b(r):
        if counter.hit("render_b") == 1:
            raise Crash
        return f"B:{r['id']}"

    wf = Flow("ab").route("split", variant, {"a": render_a, "b": render_b}).build()
    assert CheckpointingRunner(backend).run(wf, "odd", {"id": 1}).output == "A:1"
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "even", {"id": 2})
    assert CheckpointingRunner(backend).run(wf, "even", {"id": 2}).output == "B:2"
    assert counter["key"] == 2  # once per run, not again on resume
    chosen = CheckpointingRunner(backend).history.outputs("even")["split"]
    assert chosen == {"key": "b", "branch": "b"}


def test_route_default_and_unknown_key(runner):
    @task
    def fallback(x):
        return "default"

    @task
    def special(x):
        return "special"

    with_default = (
        Flow("r1")
        .route(
            "pick",
            lambda x: x,
            {"special": special, "other": fallback},
            default="other",
        )
        .build()
    )
    assert runner.run(with_default, "d", "nope").output == "default"
    strict = Flow("r2").route("pick", lambda x: x, {"special": special}).build()
    status = runner.run(strict, "s", "nope")
    assert status.state is RunState.FAILED
    assert "got key 'nope'" in status.error.message
    assert "'special'" in status.error.message
    assert status.error.type.endswith("RouteKeyError")


def test_route_key_function_that_raises(runner):
    def broken(x):
        raise ValueError("no segment")

    wf = Flow("r3").route("pick", broken, {"a": task(lambda x: x, name="same")}).build()
    status = runner.run(wf, "k", 1)
    assert status.state is RunState.FAILED
    assert status.error.type == "ValueError"
    assert (
        "key function of route 'pick' raised ValueError: no segment"
        in status.error.message
    )


# -- fan-out -----------------------------------------------------------------


def test_fan_out_keeps_order_and_bounds_concurrency(runner):
    running = []
    peak = []
    lock = threading.Lock()

    @task
    async def deliver(item):
        with lock:
            running.append(item)
            peak.append(len(running))
        await asyncio.sleep(0.05 * (5 - item % 5))
        with lock:
            running.remove(item)
        return item * 10

    wf = Flow("fan").fan_out(deliver, concurrency=3).build()
    status = runner.run(wf, "f", list(range(10)))
    assert status.output == [i * 10 for i in range(10)]
    assert max(peak) == 3
    assert {f"deliver[{i}]" for i in range(10)} <= {s.step_id for s in status.steps}


def test_fan_out_crash_resumes_only_unfinished_items(backend):
    counter = Counter()

    @task
    def square(x):
        counter.hit(f"item{x}")
        if x == 3 and counter[f"item{x}"] == 1:
            raise Crash
        return x * x

    wf = Flow("fan2").fan_out(square, concurrency=1).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "c", [0, 1, 2, 3, 4])
    status = CheckpointingRunner(backend).run(wf, "c", [0, 1, 2, 3, 4])
    assert status.output == [0, 1, 4, 9, 16]
    assert [counter[f"item{i}"] for i in range(5)] == [1, 1, 1, 2, 1]


def test_fan_out_over_something_else_fails_clearly(runner):
    wf = Flow("fan3").fan_out(task(lambda x: x, name="same"), name="each").build()
    status = runner.run(wf, "d", {"not": "a list"})
    assert status.state is RunState.FAILED
    assert "fan-out 'each' needs a list" in status.error.message


# -- loops -------------------------------------------------------------------


def test_loop_until_done(runner, backend):
    @task
    def next_batch(state):
        return {"sent": state["sent"] + 10, "total": state["total"]}

    wf = (
        Flow("batches")
        .loop(
            "send",
            next_batch,
            until=lambda s: s["sent"] >= s["total"],
            max_iterations=10,
        )
        .build()
    )
    status = runner.run(wf, "l", {"sent": 0, "total": 25})
    assert status.output == {"sent": 30, "total": 25}
    loop_steps = sorted(
        s.step_id for s in status.steps if s.step_id.startswith("send#")
    )
    assert loop_steps == ["send#1/next_batch", "send#2/next_batch", "send#3/next_batch"]


def test_loop_limit_fails_or_returns(runner):
    step = task(lambda x: x + 1, name="inc")
    failing = (
        Flow("l1").loop("grow", step, until=lambda x: False, max_iterations=3).build()
    )
    status = runner.run(failing, "a", 0)
    assert status.state is RunState.FAILED
    assert status.error.type.endswith("LoopLimitError")
    assert "max_iterations" in status.error.message
    returning = (
        Flow("l2")
        .loop("grow", step, until=lambda x: False, max_iterations=3, on_max="return")
        .build()
    )
    assert runner.run(returning, "b", 0).output == 3


def test_crash_inside_a_loop_resumes_the_iteration(backend):
    counter = Counter()

    @task
    def work(x):
        if counter.hit(f"work{x}") == 1 and x == 2:
            raise Crash
        return x + 1

    wf = Flow("l3").loop("it", work, until=lambda x: x >= 4, max_iterations=9).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "c", 0)
    assert CheckpointingRunner(backend).run(wf, "c", 0).output == 4
    assert [counter[f"work{i}"] for i in range(4)] == [1, 1, 2, 1]


# -- child workflows ---------------------------------------------------------


def test_child_workflow_as_a_step(runner):
    @task
    def render(x):
        return f"<{x}>"

    @task
    def wrap(x):
        return [x]

    child = Flow("render-child").then(render).build()
    parent = Flow("parent").then(child, name="rendering").then(wrap).build()
    status = runner.run(parent, "c", "hi")
    assert status.output == ["<hi>"]
    assert "rendering/render" in {s.step_id for s in status.steps}


# -- delays ------------------------------------------------------------------


def test_short_delay_waits_in_process(fast_runner):
    wf = (
        Flow("d1")
        .then(lambda x: x, name="a")
        .delay("pause", "200ms")
        .then(lambda x: x * 2, name="b")
        .build()
    )
    began = time.perf_counter()
    assert fast_runner.run(wf, "d", 21).output == 42
    assert time.perf_counter() - began >= 0.2


def test_long_delay_returns_waiting_and_survives_a_restart(backend):
    counter = Counter()

    @task
    def before(x):
        counter.hit("before")
        return x

    @task
    def after(x):
        counter.hit("after")
        return x + 1

    wf = Flow("d2").then(before).delay("rate_limit", "1.2s").then(after).build()
    began = time.time()
    first = CheckpointingRunner(backend, inline_wait=0.1).run(wf, "w", 1)
    assert first.state is RunState.WAITING
    assert first.wake_at_epoch == pytest.approx(began + 1.2, abs=0.2)
    again = CheckpointingRunner(backend, inline_wait=0.1).run(wf, "w", 1)
    assert again.state is RunState.WAITING
    assert again.wake_at_epoch == pytest.approx(first.wake_at_epoch)
    time.sleep(max(0.0, first.wake_at_epoch - time.time()) + 0.05)
    done = CheckpointingRunner(backend, inline_wait=0.1).run(wf, "w", 1)
    assert done.output == 2
    assert (counter["before"], counter["after"]) == (1, 1)
    assert time.time() >= first.wake_at_epoch


def test_due_waiting_runs_are_claimable(backend):
    wf = Flow("d3").delay("later", "0.3s").then(task(lambda x: x, name="a")).build()
    CheckpointingRunner(backend, inline_wait=0).run(wf, "w", 1)
    assert backend.claim_next("worker", 30, time.time()) is None
    lease = backend.claim_next("worker", 30, time.time() + 1)
    assert lease is not None and lease.run_id == "w"
    backend.release(lease)


# -- signals -----------------------------------------------------------------


def _approval_flow(name="approve", **options):
    @task
    def publish(decision):
        return {"published": decision["ok"]}

    return Flow(name).wait_for_signal("approval", **options).then(publish).build()


def test_signal_sent_before_the_wait_is_kept_and_consumed_once(fast_runner, backend):
    wf = _approval_flow()
    waiting = fast_runner.run(wf, "s", None)
    assert waiting.state is RunState.WAITING
    fast_runner.send_signal("s", "approval", {"ok": True})
    fast_runner.send_signal("s", "approval", {"ok": False})
    assert fast_runner.run(wf, "s", None).output == {"published": True}
    signals = fast_runner.history.signals("s")
    assert signals["consumed_at"].notna().tolist() == [True, False]


def test_signal_from_another_thread_during_the_wait(backend):
    runner = CheckpointingRunner(backend, inline_wait=5)
    wf = _approval_flow("approve-thread")
    created = threading.Event()

    def send_later():
        deadline = time.time() + 5
        while backend.get_run("t") is None and time.time() < deadline:
            time.sleep(0.01)
        created.set()
        time.sleep(0.2)
        runner.send_signal("t", "approval", {"ok": True})

    sender = threading.Thread(target=send_later)
    sender.start()
    status = runner.run(wf, "t", None)
    sender.join()
    assert status.output == {"published": True}


def test_signal_timeout_with_default_or_error(fast_runner):
    with_default = _approval_flow("d", timeout="100ms", default={"ok": "timeout"})
    assert fast_runner.run(with_default, "a", None).output == {"published": "timeout"}
    strict = _approval_flow("s", timeout="100ms")
    status = fast_runner.run(strict, "b", None)
    assert status.state is RunState.FAILED
    assert status.error.type.endswith("SignalTimeoutError")
    assert "approval" in status.error.message


def test_bad_signals_are_refused_at_send_time(fast_runner):
    wf = _approval_flow()
    fast_runner.run(wf, "x", None)
    with pytest.raises(RunNotFoundError):
        fast_runner.send_signal("missing", "approval", 1)
    with pytest.raises(CodecError, match="payload of signal 'approval'"):
        fast_runner.send_signal("x", "approval", {"lock": threading.Lock()})
    with pytest.raises(DefinitionError):
        fast_runner.send_signal("x", "", 1)


# -- cancel and pause --------------------------------------------------------


def test_cancel_stops_a_running_async_task_and_stays_cancelled(runner):
    started = threading.Event()

    @task
    async def slow(x):
        started.set()
        await asyncio.sleep(10)

    wf = Flow("c").then(slow).build()
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run(wf, "c", 1)))
    thread.start()
    assert started.wait(5)
    began = time.perf_counter()
    runner.cancel("c")
    thread.join(5)
    assert time.perf_counter() - began < 2
    assert results[0].state is RunState.CANCELLED
    assert runner.run(wf, "c", 1).state is RunState.CANCELLED
    with pytest.raises(RunFinishedError, match="cancelled already"):
        runner.cancel("c")


def test_pause_and_unpause_resume_where_it_stopped(runner):
    counter = Counter()
    gate = threading.Event()

    @task
    def first(x):
        counter.hit("first")
        gate.wait(5)
        return x + 1

    @task
    def second(x):
        counter.hit("second")
        return x + 1

    wf = Flow("p").then(first).then(second).build()
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run(wf, "p", 0)))
    thread.start()
    while counter["first"] == 0:
        time.sleep(0.01)
    runner.pause("p")
    gate.set()
    thread.join(5)
    assert results[0].state is RunState.PAUSED
    assert runner.run(wf, "p", 0).state is RunState.PAUSED
    assert counter["second"] == 0
    runner.unpause("p")
    assert runner.run(wf, "p", 0).output == 2
    assert (counter["first"], counter["second"]) == (1, 1)


def test_cancel_a_waiting_run_and_errors(fast_runner):
    wf = _approval_flow()
    fast_runner.run(wf, "w", None)
    assert fast_runner.cancel("w").state is RunState.CANCELLED
    with pytest.raises(RunNotFoundError):
        fast_runner.cancel("nope")
    done = Flow("done").then(task(lambda x: x, name="a")).build()
    fast_runner.run(done, "d", 1)
    with pytest.raises(RunFinishedError, match="completed"):
        fast_runner.pause("d")


# -- definitions -------------------------------------------------------------


def test_definition_hash_covers_the_structure():
    a, b = task(lambda x: x, name="a"), task(lambda x: x, name="b")
    hashes = {
        Flow("w").parallel("p", {"x": a, "y": b}).build().definition_hash,
        Flow("w").parallel("p", {"x": a, "z": b}).build().definition_hash,
        Flow("w").route("p", str, {"x": a, "y": b}).build().definition_hash,
        Flow("w")
        .route("p", str, {"x": a, "y": b}, default="x")
        .build()
        .definition_hash,
        Flow("w").fan_out(a, concurrency=2).build().definition_hash,
        Flow("w").fan_out(a, concurrency=3).build().definition_hash,
        Flow("w").delay("d", "1s").build().definition_hash,
        Flow("w").delay("d", "2s").build().definition_hash,
        Flow("w").wait_for_signal("s").build().definition_hash,
        Flow("w").wait_for_signal("s", timeout="1m").build().definition_hash,
    }
    assert len(hashes) == 10


@pytest.mark.parametrize(
    ("build", "error", "fragment"),
    [
        (lambda: Flow("w").parallel("p", {}), DefinitionError, "no branches"),
        (lambda: Flow("w").parallel("p", {"x": []}), DefinitionError, "empty branch"),
        (
            lambda: Flow("w").parallel("p", [("x", str), ("x", repr)]),
            DefinitionError,
            "two branches named 'x'",
        ),
        (lambda: Flow("w").route("r", str, {}), DefinitionError, "no branches"),
        (
            lambda: Flow("w").route("r", str, {"a": str}, default="b"),
            DefinitionError,
            "default 'b'",
        ),
        (
            lambda: Flow("w").route("r", "notcallable", {"a": str}),
            DefinitionError,
            "callable",
        ),
        (lambda: Flow("w").delay("d", "-1s"), DurationError, "'-1s'"),
        (lambda: Flow("w").delay("d", "soon"), DurationError, "'soon'"),
        (lambda: Flow("w").fan_out(str, concurrency=0), DefinitionError, "concurrency"),
        (
            lambda: Flow("w").loop("l", str, until=bool, max_iterations=0),
            DefinitionError,
            "max_iterations",
        ),
        (
            lambda: Flow("w").parallel("bad name", {"x": str}),
            DefinitionError,
            "bad name",
        ),
    ],
)
def test_bad_structures_are_refused_at_build_time(build, error, fragment):
    with pytest.raises(error, match=fragment):
        build()


def test_every_node_kind_has_a_readable_name_in_statuses(fast_runner):
    pair = task(lambda x: [x, x], name="pair")
    same = task(lambda x: x, name="same")
    wf = (
        Flow("names")
        .then(pair, name="start")
        .fan_out(same, name="each")
        .route("pick", lambda xs: "one", {"one": same})
        .delay("breathe", "10ms")
        .build()
    )
    status = fast_runner.run(wf, "n", 1)
    ids = [s.step_id for s in status.steps]
    assert ids[0] == "start"
    assert set(ids[1:3]) == {"each[0]", "each[1]"}
    assert ids[3:] == ["pick", "pick/one/same", "breathe"]
    assert all(s.state == "succeeded" for s in status.steps)
    assert status.output == [1, 1]
    labels = {s.step_id: s.task_name for s in status.steps}
    assert (labels["pick"], labels["breathe"], labels["each[0]"]) == (
        "(route)",
        "(delay)",
        "same",
    )


# -- regressions found by adversarial testing --------------------------------


def test_definition_hash_is_the_same_in_every_process(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "wf.py"
    script.write_text(
        "import functools\n"
        "from sayiir_nb import Flow, task\n"
        "def pick(field, value):\n"
        "    return value[field]\n"
        "class Until:\n"
        "    def __call__(self, value):\n"
        "        return True\n"
        "same = task(lambda x: x, name='same')\n"
        "wf = (Flow('h').route('r', functools.partial(pick, 'tier'), {'a': same})\n"
        "      .loop('l', same, until=Until(), max_iterations=2)\n"
        "      .wait_for_signal('go', timeout='1h',\n"
        "                       default={'alpha', 'beta', 'gamma'})\n"
        "      .build())\n"
        "print(wf.definition_hash)\n"
    )
    hashes = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "PYTHONHASHSEED": seed},
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        hashes.add(out.stdout.strip())
    assert len(hashes) == 1


def test_a_default_the_codec_refuses_is_a_build_error():
    with pytest.raises(DefinitionError, match="default of wait 'go'"):
        Flow("w").wait_for_signal("go", timeout="1s", default=object()).build()


def test_a_step_failed_for_good_is_not_run_again_on_resume(backend):
    counter = Counter()

    @task
    def charge(x):
        counter.hit("charge")
        raise ValueError("card declined")

    @task
    async def stops(x):
        await asyncio.sleep(0.1)
        if counter.hit("stops") == 1:
            raise Crash  # the engine stops before the join sees the failure
        return x

    wf = Flow("pf").parallel("p", {"a": charge, "b": stops}).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "x", 1)
    final = CheckpointingRunner(backend).run(wf, "x", 1)
    assert final.state is RunState.FAILED
    assert "card declined" in final.error.message
    assert counter["charge"] == 1


def test_each_reader_gets_its_own_copy(runner):
    @task
    def make(_):
        return {"items": [1, 2, 3]}

    @task
    def mutate(value):
        value["items"].append(7)
        return len(value["items"])

    @task
    def read(value):
        time.sleep(0.05)
        return len(value["items"])

    @task
    def earlier(_, ctx):
        first = ctx.output("make")
        first["items"].clear()
        return ctx.output("make")

    wf = (
        Flow("copies")
        .then(make)
        .parallel("p", {"m": mutate, "r": read})
        .then(earlier)
        .build()
    )
    assert runner.run(wf, "c", None).output == {"items": [1, 2, 3]}
    assert runner.history.outputs("c")["p/r/read"] == 3


def test_an_abrupt_stop_in_a_branch_wins_over_waits_and_failures(runner):
    @task
    def die(x):
        raise Crash

    @task
    def broken(x):
        raise ValueError("x")

    waiting = (
        Flow("bw").parallel("p", {"a": die, "b": Flow("b").delay("d", "1h")}).build()
    )
    with pytest.raises(Crash):
        runner.run(waiting, "w", 1)
    failing = Flow("bf").parallel("p", {"a": die, "b": broken}).build()
    with pytest.raises(Crash):
        runner.run(failing, "f", 1)


def test_a_lost_attempt_after_a_composite_is_recorded(backend):
    counter = Counter()

    @task
    def hang(x):
        if counter.hit("hang") == 1:
            raise Crash
        return x

    same = task(lambda x: x, name="same")
    wf = Flow("lost").parallel("p", {"a": same}).then(hang).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "l", 1)
    CheckpointingRunner(backend).run(wf, "l", 1)
    rows = [(a.attempt, a.state) for a in backend.attempts("l") if a.step_id == "hang"]
    assert rows == [(1, AttemptState.INTERRUPTED), (2, AttemptState.SUCCEEDED)]


def test_a_signal_sent_after_the_timeout_does_not_count(backend):
    runner = CheckpointingRunner(backend, inline_wait=0.1)
    wf = _approval_flow("late", timeout="300ms", default={"ok": "default"})
    assert runner.run(wf, "l", None).state is RunState.WAITING
    time.sleep(0.4)
    runner.send_signal("l", "approval", {"ok": "late"})
    assert runner.run(wf, "l", None).output == {"published": "default"}


def test_pausing_a_crashed_run_tidies_its_attempts(backend):
    counter = Counter()

    @task
    def hang(x):
        if counter.hit("hang") == 1:
            raise Crash
        return x

    same = task(lambda x: x, name="same")
    wf = Flow("pc").parallel("p", {"h": hang, "s": same}).build()
    with pytest.raises(Crash):
        CheckpointingRunner(backend).run(wf, "c", 1)
    runner = CheckpointingRunner(backend)
    runner.pause("c")
    states = {a.state for a in backend.attempts("c")}
    assert AttemptState.RUNNING not in states
    runner.unpause("c")
    assert runner.run(wf, "c", 1).output == {"h": 1, "s": 1}


def test_signals_to_finished_runs_and_keys_that_are_not_strings(fast_runner):
    one = task(lambda x: "one", name="one")
    other = task(lambda x: "other", name="other")
    wf = Flow("k").route("r", lambda x: 1, {"1": one, "x": other}).build()
    assert fast_runner.run(wf, "k", None).output == "one"
    with pytest.raises(RunFinishedError, match="completed already"):
        fast_runner.send_signal("k", "approval", 1)


def test_composite_outputs_are_readable_with_ctx_output(runner):
    same = task(lambda x: x, name="same")
    double = task(lambda x: x * 2, name="double")

    @task
    def look_back(_, ctx):
        return {
            "fork": ctx.output("fork"),
            "each": ctx.output("each"),
            "grow": ctx.output("grow"),
        }

    wf = (
        Flow("derived")
        .then(task(lambda x: [x, x + 1], name="pair"))
        .fan_out(double, name="each")
        .parallel("fork", {"a": same, "b": same})
        .then(task(lambda d: d["a"][0], name="first"))
        .loop("grow", double, until=lambda x: x > 10, max_iterations=5)
        .then(look_back)
        .build()
    )
    out = runner.run(wf, "d", 1).output
    assert out == {"fork": {"a": [2, 4], "b": [2, 4]}, "each": [2, 4], "grow": 16}


def test_waits_are_not_counted_as_backoff(fast_runner):
    wf = _approval_flow("nb", timeout="5s", default={"ok": False})
    fast_runner.run(wf, "w", None)
    fast_runner.send_signal("w", "approval", {"ok": True})
    fast_runner.run(wf, "w", None)
    rows = fast_runner.history.attempts("w")
    assert list(rows["wait_before_s"]) == [0.0, 0.0]
    assert "(signal)" not in set(fast_runner.history.task_summary()["task_name"])
