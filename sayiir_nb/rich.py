"""HTML for notebooks: how workflows and statuses display themselves.

Everything a user wrote (task names, step ids, errors, outputs) is escaped.
"""

from __future__ import annotations

import html
import reprlib
from typing import TYPE_CHECKING

from .graph import STATE_COLOURS, build, svg

if TYPE_CHECKING:
    from .status import WorkflowStatus
    from .workflow import Workflow

_SHORT = reprlib.Repr()
_SHORT.maxstring = 120
_SHORT.maxother = 120
_SHORT.maxlist = 8
_SHORT.maxdict = 8
_SHORT.maxlevel = 3

STATE_BADGES = {
    "pending": "#9ca3af",
    "running": "#2563eb",
    "waiting": "#ca8a04",
    "completed": "#16a34a",
    "failed": "#dc2626",
    "interrupted": "#6b7280",
    "cancelled": "#4b5563",
    "paused": "#9333ea",
}


def summary(value: object) -> str:
    """A short, escaped description of a value."""
    return html.escape(_SHORT.repr(value))


def workflow_html(workflow: Workflow) -> str:
    graph = build(workflow.steps, workflow.name)
    return (
        f'<div class="sayiir-workflow"><b>{html.escape(workflow.name)}</b> '
        f"<code>{workflow.definition_hash[:12]}</code><br>{svg(graph)}</div>"
    )


def status_html(status: WorkflowStatus) -> str:
    state = status.state.value
    badge = STATE_BADGES.get(state, "#6b7280")
    rows = "".join(
        "<tr>"
        f"<td><code>{html.escape(step.step_id)}</code></td>"
        f"<td>{html.escape(step.task_name)}</td>"
        f'<td style="background:{STATE_COLOURS.get(step.state, "#fff")}">'
        f"{html.escape(step.state)}</td>"
        f"<td>{step.attempts}</td>"
        f"<td>{'' if step.duration_s is None else f'{step.duration_s:.3f}s'}</td>"
        f"<td>{html.escape(str(step.error)) if step.error else ''}</td>"
        "</tr>"
        for step in status.steps
    )
    parts = [
        '<div class="sayiir-status">',
        f"<b>run {html.escape(status.run_id)}</b> of "
        f"<b>{html.escape(status.workflow_name)}</b> "
        f'<span class="sayiir-state" style="background:{badge};color:white;'
        f'padding:1px 6px;border-radius:8px">{html.escape(state)}</span>',
    ]
    if status.output is not None:
        parts.append(f"<div>output: <code>{summary(status.output)}</code></div>")
    if status.error is not None:
        parts.append(
            f'<div style="color:#b91c1c">error: {html.escape(str(status.error))}</div>'
        )
    parts.append(
        '<table class="sayiir-steps"><tr><th>step</th><th>task</th><th>state</th>'
        "<th>attempts</th><th>duration</th><th>last error</th></tr>"
        f"{rows}</table></div>"
    )
    return "".join(parts)
