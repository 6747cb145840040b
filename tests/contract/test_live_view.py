"""The ipywidgets view follows a run live and answers a signal wait."""

from __future__ import annotations

import threading
import time

from sayiir_nb import CheckpointingRunner, Flow, RunState, task


def _until(predicate, timeout_s=5.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_view_updates_live_and_stays_right_after_the_end(backend):
    runner = CheckpointingRunner(backend, inline_wait=0.1)
    gate = threading.Event()

    @task
    def first(x):
        gate.wait(5)
        return x + 1

    @task(retries=1, backoff=0.05)
    def second(x, ctx):
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return x + 1

    wf = Flow("viewed").then(first).then(second).build()
    view = runner.view("v", wf)
    thread = threading.Thread(target=runner.run, args=(wf, "v", 1))
    thread.start()
    assert _until(lambda: "running (attempt 1)" in view.body.value)
    gate.set()
    thread.join(5)
    assert _until(lambda: 'data-state="completed"' in view.body.value)
    html = view.body.value
    assert "succeeded (attempt 2)" in html
    assert "ConnectionError: try again" in html
    assert "<svg" in html
    view.close()


def test_view_of_a_waiting_run_sends_the_signal_and_resumes(backend):
    runner = CheckpointingRunner(backend, inline_wait=0.1)

    @task
    def publish(decision):
        return {"published": decision["ok"]}

    wf = Flow("approve").wait_for_signal("approval").then(publish).build()
    assert runner.run(wf, "w", None).state is RunState.WAITING
    view = runner.view("w", wf)
    assert view.controls.layout.display == "flex"
    assert "waiting for signal <code>approval</code>" in view.body.value
    view.payload.value = "not json"
    view.send.click()
    assert "not JSON" in view.note.value
    view.payload.value = '{"ok": true}'
    view.send.click()
    assert _until(lambda: runner.status("w").state is RunState.COMPLETED)
    assert runner.status("w").output == {"published": True}
    assert _until(lambda: view.controls.layout.display == "none")
    view.close()


def test_show_prints_progress_outside_a_notebook(runner, capsys):
    wf = Flow("shown").then(task(lambda x: x, name="only")).build()
    runner.run(wf, "s", 1, show=True)
    err = capsys.readouterr().err
    assert "[1 done] only succeeded" in err
    assert "run s: completed" in err


def test_show_with_await(runner, capsys):
    import asyncio

    wf = Flow("shown-async").then(task(lambda x: x, name="only")).build()
    status = asyncio.run(runner.arun(wf, "a", 1, show=True))
    assert status.state is RunState.COMPLETED
    assert "run a: completed" in capsys.readouterr().err


def test_graph_colours_composite_nodes(runner):
    from sayiir_nb.live import RunViewModel

    inc = task(lambda x: x + 1, name="inc")
    wf = (
        Flow("colours")
        .then(task(lambda x: [1, 2, 3], name="items"))
        .fan_out(inc, name="item")
        .parallel("par", {"x": task(lambda xs: xs, name="same")})
        .then(task(lambda d: 0, name="zero"))
        .loop("lp", inc, until=lambda v: v >= 2, max_iterations=5)
        .build()
    )
    model = RunViewModel("g", wf)
    model.load(runner.run(wf, "g", None))
    states = model.graph_states()
    assert states["item"] == states["par"] == states["lp"] == "succeeded"
    assert states["lp#n/inc"] == "succeeded"


def test_signal_control_inside_a_loop_and_from_a_fresh_runner(backend):
    runner = CheckpointingRunner(backend, inline_wait=0.05)
    body = Flow("body").wait_for_signal("go").then(task(lambda p: p, name="take"))
    wf = Flow("looped").loop("lp", body, until=bool, max_iterations=3).build()
    assert runner.run(wf, "l", None).state is RunState.WAITING
    view = runner.view("l", wf)
    assert view.model.waiting_for == ("lp#1/go", "go")
    view.close()
    fresh = CheckpointingRunner(backend).view("l")  # no workflow known here
    assert fresh.model.waiting_for == ("lp#1/go", "go")
    assert fresh.controls.layout.display == "flex"
    fresh.close()


def test_a_cancelled_run_refreshes_the_view_and_the_button_explains(backend):
    runner = CheckpointingRunner(backend, inline_wait=0.05)
    wf = (
        Flow("c")
        .wait_for_signal("approval")
        .then(task(lambda p: p, name="take"))
        .build()
    )
    runner.run(wf, "c", None)
    view = runner.view("c", wf)
    runner.cancel("c")
    assert _until(lambda: 'data-state="cancelled"' in view.body.value)
    view.send.click()
    assert "no signal to send" in view.note.value
    view.close()


def test_progress_prints_a_retry_once(runner, capsys):
    @task(retries=1, backoff=0.01)
    def flaky(x, ctx):
        if ctx.attempt == 1:
            raise ConnectionError("refused")
        return x

    runner.run(Flow("once").then(flaky).build(), "o", 1, show=True)
    err = capsys.readouterr().err
    assert err.count("refused") == 1
    assert "retrying in 0.01s" in err
