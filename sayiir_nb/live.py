"""Watching runs: a live notebook view (ipywidgets) and a text progress line.

:class:`RunViewModel` holds what a view shows (pure Python, unit-tested);
:class:`RunView` draws it with ipywidgets and updates live from the runner's
threads; :class:`TextProgress` prints it for scripts. ``runner.run(...,
show=True)`` picks the right one.
"""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from .events import RunEvent
from .graph import STATE_COLOURS, build, svg
from .nodes import WaitSignal
from .rich import STATE_BADGES, summary
from .workflow import walk

if TYPE_CHECKING:
    from .runner import CheckpointingRunner
    from .status import WorkflowStatus
    from .workflow import Workflow

_RENDER_EVERY_S = 0.2


@dataclass
class StepView:
    """One step as a view shows it."""

    step_id: str
    label: str
    state: str = "pending"
    attempt: int = 0
    duration_s: float | None = None
    next_wait_s: float | None = None
    error: str = ""

    @property
    def text(self) -> str:
        """The state in words: ``running (attempt 2)``, ``retrying ...``."""
        if self.state == "running":
            return f"running (attempt {self.attempt})"
        if self.state == "retrying":
            wait = (
                f", next in {self.next_wait_s:.2f}s"
                if self.next_wait_s is not None
                else ""
            )
            return f"retrying: attempt {self.attempt} failed{wait}"
        if self.state == "timed_out":
            return f"timed out (attempt {self.attempt})"
        if self.state in ("succeeded", "failed") and self.attempt > 1:
            return f"{self.state} (attempt {self.attempt})"
        return self.state


class RunViewModel:
    """What a view of one run shows: the run's state and every step's."""

    def __init__(self, run_id: str, workflow: Workflow | None = None) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.state = "pending"
        self.error = ""
        self.output = ""
        self.waiting_for: tuple[str, str] | None = None  # (step id, signal name)
        self.steps: dict[str, StepView] = {}
        if workflow is not None:
            for step_id, label in workflow.known_steps():
                self.steps[step_id] = StepView(step_id, label)

    def apply(self, event: RunEvent) -> None:
        """Take one event of the run into account."""
        if event.run_id != self.run_id:
            return
        if event.kind == "run.start":
            self.state, self.waiting_for, self.error = "running", None, ""
            return
        if event.kind == "run.end":
            self.state = event.state
            self.error = str(event.error) if event.error else ""
            self._cancel_pending()
            return
        step = self.steps.get(event.step_id) or self.steps.setdefault(
            event.step_id, StepView(event.step_id, event.task_name)
        )
        step.attempt = event.attempt
        if event.kind == "attempt.start":
            step.state, step.next_wait_s = "running", None
        elif event.kind == "attempt.end":
            step.state, step.duration_s = event.state, event.duration_s
            step.error = str(event.error) if event.error else step.error
        elif event.kind == "attempt.retry":
            step.state, step.next_wait_s = "retrying", event.wait_s
            step.duration_s = event.duration_s
            step.error = str(event.error) if event.error else step.error

    def load(self, status: WorkflowStatus) -> None:
        """Take the stored state of the run (for a run executed elsewhere, or
        after the fact)."""
        self.state = status.state.value
        self.error = str(status.error) if status.error else ""
        self.output = summary(status.output) if status.output is not None else ""
        signals = self._signal_steps()
        self.waiting_for = None
        for stored in status.steps:
            step = self.steps.get(stored.step_id) or self.steps.setdefault(
                stored.step_id, StepView(stored.step_id, stored.task_name)
            )
            step.state = stored.state
            if stored.state == "scheduled":
                waits = stored.task_name in ("(delay)", "(signal)")
                step.state = "waiting" if waits else "retrying"
            step.attempt, step.duration_s = stored.attempts, stored.duration_s
            step.error = str(stored.error) if stored.error else ""
            waiting = status.state.value == "waiting" and stored.state == "scheduled"
            if waiting and stored.task_name == "(signal)":
                self.waiting_for = (
                    stored.step_id,
                    self._signal_of(stored.step_id, signals),
                )
        self._cancel_pending()

    def _cancel_pending(self) -> None:
        if self.state == "cancelled":
            for step in self.steps.values():
                if step.state == "pending":
                    step.state = "cancelled"

    @staticmethod
    def _signal_of(step_id: str, signals: dict[str, str]) -> str:
        """The signal a wait step takes: from the workflow (loop iterations
        matched by pattern), else the step's own name (the default)."""
        if step_id in signals:
            return signals[step_id]
        generic = re.sub(r"#\d+/", "#n/", step_id)
        return signals.get(generic, step_id.rsplit("/", 1)[-1])

    def _signal_steps(self) -> dict[str, str]:
        if self.workflow is None:
            return {}
        return {
            prefix + node.node_id: node.signal
            for prefix, node in walk(self.workflow.steps)
            if isinstance(node, WaitSignal)
        }

    def graph_states(self) -> dict[str, str]:
        """States for the graph's boxes: a step's own, the latest iteration's
        for a loop body, and a combined one for fan-outs, forks and loops."""
        assert self.workflow is not None
        graph = build(self.workflow.steps, self.workflow.name)
        states: dict[str, str] = {}
        for key, box in graph.boxes.items():
            if key in self.steps and box.kind not in ("fan_out", "fork", "loop"):
                states[key] = self.steps[key].state
                continue
            if "#n/" in key:
                pattern = re.compile(re.escape(key).replace("\\#n/", "#(\\d+)/") + "$")
                found = [
                    (int(m.group(1)), s)
                    for s in self.steps.values()
                    if (m := pattern.match(s.step_id))
                ]
                if found:
                    states[key] = max(found, key=lambda pair: pair[0])[1].state
                continue
            inside = {"fan_out": f"{key}[", "fork": f"{key}/", "loop": f"{key}#"}.get(
                box.kind
            )
            if inside:
                combined = _combined(
                    [
                        s.state
                        for s in self.steps.values()
                        if s.step_id.startswith(inside)
                    ]
                )
                if combined:
                    states[key] = combined
        return states

    def html(self) -> str:
        """The view as escaped HTML: state, graph, step table."""
        badge = STATE_BADGES.get(self.state, "#6b7280")
        parts = [
            f'<div class="sayiir-live" data-state="{html.escape(self.state)}">'
            f"<b>run {html.escape(self.run_id)}</b> "
            f'<span class="sayiir-state" style="background:{badge};color:white;'
            f'padding:1px 6px;border-radius:8px">{html.escape(self.state)}</span>'
        ]
        if self.waiting_for:
            parts.append(
                f" waiting for signal <code>{html.escape(self.waiting_for[1])}</code>"
            )
        if self.error:
            parts.append(f'<div style="color:#b91c1c">{html.escape(self.error)}</div>')
        if self.output:
            parts.append(f"<div>output: <code>{self.output}</code></div>")
        if self.workflow is not None:
            graph = build(self.workflow.steps, self.workflow.name)
            parts.append(svg(graph, self.graph_states()))
        rows = "".join(
            f'<tr data-step="{html.escape(s.step_id)}">'
            f"<td><code>{html.escape(s.step_id)}</code></td>"
            f"<td>{html.escape(s.label)}</td>"
            f'<td style="background:{STATE_COLOURS.get(s.state, "#fff")}">'
            f"{html.escape(s.text)}</td>"
            f"<td>{'' if s.duration_s is None else f'{s.duration_s:.3f}s'}</td>"
            f"<td>{html.escape(s.error)}</td></tr>"
            for s in self.steps.values()
        )
        parts.append(
            '<table class="sayiir-steps"><tr><th>step</th><th>task</th><th>state</th>'
            f"<th>duration</th><th>last error</th></tr>{rows}</table></div>"
        )
        return "".join(parts)


_PRIORITY = ("failed", "timed_out", "running", "retrying", "waiting", "interrupted",
             "cancelled", "pending", "succeeded")  # fmt: skip


def _combined(states: list[str]) -> str:
    """One state for a group of steps: the most telling one."""
    if not states:
        return ""
    if all(state == "succeeded" for state in states):
        return "succeeded"
    for state in _PRIORITY:
        if state in states:
            return "running" if state in ("pending", "succeeded") else state
    return states[-1]


class RunView:
    """A live ipywidgets view of one run, with a control that sends a signal
    the run waits for.

    Create it with ``runner.view(run_id, workflow)``; it follows the runner's
    events and can :meth:`refresh` from the store (or :meth:`watch` it, for a
    run executed elsewhere).
    """

    def __init__(
        self, runner: CheckpointingRunner, run_id: str, workflow: Workflow | None = None
    ) -> None:
        import ipywidgets as widgets

        self.runner = runner
        self.model = RunViewModel(run_id, workflow)
        self._lock = threading.RLock()
        self._rendered_at = 0.0
        self._pending: threading.Timer | None = None
        self.body = widgets.HTML()
        self.payload = widgets.Text(placeholder='payload as JSON, e.g. {"ok": true}')
        self.send = widgets.Button(description="send signal", button_style="primary")
        self.note = widgets.HTML()
        self.controls = widgets.HBox([self.payload, self.send, self.note])
        self.controls.layout.display = "none"
        self.widget = widgets.VBox([self.body, self.controls])
        self.send.on_click(self._on_send)
        runner.observe(self._on_event)
        if runner.backend.get_run(run_id) is not None:
            self.refresh()
        else:
            self.render()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _on_event(self, event: RunEvent) -> None:
        if event.run_id != self.model.run_id:
            return
        with self._lock:
            self.model.apply(event)
        if event.kind == "run.end":
            self.refresh()
        elif time.monotonic() - self._rendered_at >= _RENDER_EVERY_S:
            self.render()
        else:
            self._render_soon()

    def _render_soon(self) -> None:
        """Draw once the throttle window has passed (events come in bursts)."""
        with self._lock:
            if self._pending is not None:
                return
            self._pending = threading.Timer(_RENDER_EVERY_S, self._render_pending)
            self._pending.daemon = True
            self._pending.start()

    def _render_pending(self) -> None:
        with self._lock:
            self._pending = None
        self.render()

    def refresh(self) -> None:
        """Read the run's state from the store and redraw."""
        status = self.runner.status(self.model.run_id)
        with self._lock:
            self.model.load(status)
        self.render()

    def watch(
        self, every_s: float = 1.0, until_finished: bool = True
    ) -> threading.Thread:
        """Refresh from the store in a background thread every ``every_s``
        seconds (for a run that another thread or process executes)."""

        def loop() -> None:
            while True:
                self.refresh()
                if until_finished and self.model.state in (
                    "completed",
                    "failed",
                    "cancelled",
                ):
                    return
                time.sleep(every_s)

        thread = threading.Thread(
            target=loop, name=f"sayiir-view-{self.model.run_id}", daemon=True
        )
        thread.start()
        return thread

    def render(self) -> None:
        with self._lock:
            self.body.value = self.model.html()
            waiting = self.model.waiting_for is not None
        self.controls.layout.display = "flex" if waiting else "none"
        self._rendered_at = time.monotonic()

    def _on_send(self, _: Any) -> None:
        self.refresh()
        waiting = self.model.waiting_for
        if waiting is None:
            self.note.value = (
                f"the run is {html.escape(self.model.state)}: no signal to send"
            )
            return
        try:
            payload = (
                json.loads(self.payload.value) if self.payload.value.strip() else None
            )
        except ValueError as error:
            problem = html.escape(str(error))
            self.note.value = f'<span style="color:#b91c1c">not JSON: {problem}</span>'
            return
        try:
            self.runner.send_signal(self.model.run_id, waiting[1], payload)
        except Exception as error:
            self.note.value = (
                f'<span style="color:#b91c1c">{html.escape(str(error))}</span>'
            )
            return
        self.note.value = f"sent <code>{html.escape(waiting[1])}</code>"
        workflow = self.model.workflow
        if workflow is not None:
            threading.Thread(target=self._resume, args=(workflow,), daemon=True).start()

    def _resume(self, workflow: Workflow) -> None:
        stored = self.runner.backend.get_run(self.model.run_id)
        if stored is not None:
            self.runner.run(
                workflow, self.model.run_id, self.runner.codec.decode(stored.input_json)
            )

    def close(self) -> None:
        self.runner.unobserve(self._on_event)


class TextProgress:
    """Progress of a run as lines of text, for scripts (no notebook)."""

    def __init__(self, run_id: str, stream: IO[str] | None = None) -> None:
        self.run_id = run_id
        self.stream = stream or sys.stderr
        self.done = 0

    def __call__(self, event: RunEvent) -> None:
        if event.run_id != self.run_id:
            return
        line = None
        if event.kind == "attempt.end" and event.state == "succeeded":
            self.done += 1
            took = (
                f" in {event.duration_s:.3f}s" if event.duration_s is not None else ""
            )
            again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            line = f"[{self.done} done] {event.step_id} succeeded{took}{again}"
        elif event.kind == "attempt.retry":
            line = (
                f"  {event.step_id}: attempt {event.attempt} {event.state} "
                f"({event.error}); retrying in {event.wait_s or 0:.2f}s"
            )
        elif event.kind == "attempt.end" and event.state in ("failed", "timed_out"):
            line = (
                f"  {event.step_id}: attempt {event.attempt} {event.state}: "
                f"{event.error}"
            )
        elif event.kind == "run.end":
            line = f"run {event.run_id}: {event.state} ({self.done} steps done)"
        if line is not None:
            print(line, file=self.stream, flush=True)


def in_notebook() -> bool:
    """Whether code runs in a Jupyter kernel (where widgets display)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()  # type: ignore[attr-defined]
    return ipython is not None and hasattr(ipython, "kernel")
