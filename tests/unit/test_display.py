"""The task graph and the HTML of workflows and statuses, without a browser."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from sayiir_nb import ErrorInfo, Flow, RunState, StepStatus, WorkflowStatus, task
from sayiir_nb.graph import STATE_COLOURS, build, svg


def _task(name):
    return task(lambda x: x, name=name)


def every_kind():
    child = Flow("child").then(_task("inner")).build()
    return (
        Flow("kinds")
        .then(_task("load"))
        .parallel("fork", {"a": _task("a1"), "b": [_task("b1"), _task("b2")]})
        .route("pick", str, {"x": _task("x1"), "y": _task("y1")})
        .fan_out(_task("each"), concurrency=3)
        .loop("again", _task("body"), until=bool, max_iterations=5)
        .then(child, name="sub")
        .delay("pause", "5s")
        .wait_for_signal("approval")
        .build()
    )


def test_every_node_kind_is_drawn_in_layers():
    graph = build(every_kind().steps, "kinds")
    kinds = {box.kind for box in graph.boxes.values()}
    assert kinds == {
        "input", "task", "fork", "route", "fan_out", "loop", "delay", "signal",
        "output",
    }  # fmt: skip
    layer = {key: box.layer for key, box in graph.boxes.items()}
    assert layer["load"] == 1
    assert layer["fork/a/a1"] == layer["fork/b/b1"] == layer["fork"] + 1
    assert layer["fork/b/b2"] == layer["fork/b/b1"] + 1
    assert layer["pick"] == layer["fork/b/b2"] + 1  # joins after the longest branch
    assert layer["sub/inner"] > layer["again"]
    assert layer["·output"] == max(layer.values())
    assert ("again#n/body", "again", "back") in graph.edges


def test_svg_is_well_formed_and_readable_for_40_steps():
    flow = Flow("long")
    for index in range(40):
        flow.then(_task(f"s{index}"))
    drawn = svg(build(flow.build().steps, "long"))
    root = ET.fromstring(drawn)
    assert root.tag.endswith("svg")
    assert drawn.count('class="sayiir-node sayiir-task"') == 40
    assert int(root.get("height")) > 40 * 30


def test_user_text_is_escaped_in_svg_and_html():
    evil = "<script>alert(1)</script>"
    graph = build(Flow("esc").then(_task("ok")).build().steps, "esc")
    graph.add("odd", evil, "task")  # labels come from user-given names
    drawn = svg(graph)
    assert "<script>" not in drawn
    assert "&lt;script&gt;" in drawn
    assert (
        "<script>" not in Flow("esc").then(_task(evil), name="ok").build()._repr_html_()
    )
    status = WorkflowStatus(
        run_id=evil,
        workflow_name="w<b>",
        state=RunState.FAILED,
        output={"html": evil},
        error=ErrorInfo(type="ValueError", message=evil),
        steps=(StepStatus(step_id=evil, task_name=evil, state="failed", attempts=2),),
    )
    rendered = status._repr_html_()
    assert "<script>" not in rendered
    assert rendered.count("&lt;script&gt;") >= 4
    assert "w&lt;b&gt;" in rendered


def test_state_colours_reach_the_boxes():
    wf = Flow("c").then(_task("a")).then(_task("b")).build()
    drawn = svg(build(wf.steps, "c"), {"a": "succeeded", "b": "failed"})
    fills = dict(
        re.findall(
            r'data-step="(\w)" data-state="\w+"><title>.*?</title>'
            r'<rect [^>]*fill="(#\w+)"',
            drawn,
        )
    )
    assert fills == {"a": STATE_COLOURS["succeeded"], "b": STATE_COLOURS["failed"]}
