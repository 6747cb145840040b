"""The live view's logic (states, labels, escaping) and text progress,
without a notebook or a browser."""

from __future__ import annotations

import io

from sayiir_nb import ErrorInfo, Flow, task
from sayiir_nb.events import RunEvent
from sayiir_nb.graph import STATE_COLOURS
from sayiir_nb.live import RunViewModel, StepView, TextProgress


def _flow():
    a, b = task(lambda x: x, name="a"), task(lambda x: x, name="b")
    return Flow("live").then(a).then(b).wait_for_signal("approval").build()


def test_known_steps_start_pending():
    model = RunViewModel("r", _flow())
    assert [(s.step_id, s.state) for s in model.steps.values()] == [
        ("a", "pending"),
        ("b", "pending"),
        ("approval", "pending"),
    ]


def test_events_move_steps_through_their_states():
    model = RunViewModel("r", _flow())
    model.apply(RunEvent(kind="run.start", run_id="r"))
    model.apply(RunEvent(kind="attempt.start", run_id="r", step_id="a", attempt=1))
    assert model.steps["a"].text == "running (attempt 1)"
    error = ErrorInfo(type="ConnectionError", message="down")
    model.apply(
        RunEvent(
            kind="attempt.end",
            run_id="r",
            step_id="a",
            attempt=1,
            state="failed",
            error=error,
        )
    )
    model.apply(
        RunEvent(
            kind="attempt.retry",
            run_id="r",
            step_id="a",
            attempt=1,
            state="failed",
            wait_s=0.4,
        )
    )
    assert model.steps["a"].text == "retrying: attempt 1 failed, next in 0.40s"
    model.apply(RunEvent(kind="attempt.start", run_id="r", step_id="a", attempt=2))
    model.apply(
        RunEvent(
            kind="attempt.end",
            run_id="r",
            step_id="a",
            attempt=2,
            state="succeeded",
            duration_s=0.5,
        )
    )
    assert model.steps["a"].text == "succeeded (attempt 2)"
    assert model.steps["a"].error == "ConnectionError: down"
    model.apply(
        RunEvent(kind="attempt.end", run_id="other", step_id="b", state="failed")
    )
    assert model.steps["b"].state == "pending"
    model.apply(RunEvent(kind="run.end", run_id="r", state="completed"))
    assert model.state == "completed"


def test_labels_for_every_state():
    assert StepView("s", "t", "timed_out", attempt=2).text == "timed out (attempt 2)"
    assert StepView("s", "t", "waiting").text == "waiting"
    assert StepView("s", "t", "cancelled").text == "cancelled"
    assert set(STATE_COLOURS) >= {
        "pending", "running", "retrying", "succeeded", "failed", "timed_out",
        "waiting", "cancelled",
    }  # fmt: skip


def test_view_html_escapes_user_text():
    evil = "<img src=x onerror=alert(1)>"
    model = RunViewModel(evil)
    model.apply(
        RunEvent(kind="attempt.end", run_id=evil, step_id="s", task_name=evil,
                 attempt=1, state="failed", error=ErrorInfo(type="E", message=evil))
    )  # fmt: skip
    rendered = model.html()
    assert "<img" not in rendered
    assert rendered.count("&lt;img") >= 3


def test_text_progress_lines():
    out = io.StringIO()
    progress = TextProgress("r", out)
    progress(
        RunEvent(
            kind="attempt.end",
            run_id="r",
            step_id="a",
            attempt=1,
            state="succeeded",
            duration_s=0.25,
        )
    )
    progress(
        RunEvent(kind="attempt.retry", run_id="r", step_id="b", attempt=1,
                 state="failed", wait_s=0.5, error=ErrorInfo(type="E", message="x"))
    )  # fmt: skip
    progress(RunEvent(kind="run.end", run_id="r", state="completed"))
    assert out.getvalue().splitlines() == [
        "[1 done] a succeeded in 0.250s",
        "  b: attempt 1 failed (E: x); retrying in 0.50s",
        "run r: completed (1 steps done)",
    ]
