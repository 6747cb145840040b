"""The task graph of a workflow, laid out in layers and drawn as inline SVG.

Layers run from the input (top) to the output (bottom): every box sits one
layer below the lowest box that feeds it, and the boxes of a layer are spread
side by side. Every node kind has its own shape label: tasks, parallel
branches (a fork), routes (the key's box, then one lane per branch),
fan-outs (``name[*]``), loops (their body, with the loop's bound), child
workflows (their steps, prefixed), delays and signal waits. Names written by
the user are escaped before they reach the SVG.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from .nodes import Chain, Child, Delay, FanOut, Loop, Parallel, Route, Step, WaitSignal

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 24, 30, 12

KIND_COLOURS = {
    "input": "#e5e7eb",
    "task": "#dbeafe",
    "fork": "#fef3c7",
    "route": "#fde68a",
    "fan_out": "#e9d5ff",
    "loop": "#ccfbf1",
    "delay": "#e0f2fe",
    "signal": "#fce7f3",
    "output": "#e5e7eb",
}
STATE_COLOURS = {
    "pending": "#f3f4f6",
    "scheduled": "#fef9c3",
    "running": "#bfdbfe",
    "retrying": "#fed7aa",
    "succeeded": "#bbf7d0",
    "failed": "#fecaca",
    "timed_out": "#fca5a5",
    "interrupted": "#e5e7eb",
    "waiting": "#fef08a",
    "cancelled": "#d1d5db",
}


@dataclass
class Box:
    """One drawn box: ``key`` is the step id it stands for (or a marker)."""

    key: str
    label: str
    kind: str
    layer: int = 0
    column: int = 0


@dataclass
class Graph:
    boxes: dict[str, Box] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # from, to, style

    def add(self, key: str, label: str, kind: str) -> str:
        self.boxes[key] = Box(key=key, label=label, kind=kind)
        return key


def build(chain: Chain, name: str) -> Graph:
    """The graph of a workflow's nodes, with an input and an output box."""
    graph = Graph()
    start = graph.add("·input", f"input of {name}", "input")
    ends = _chain(graph, chain, "", [start])
    end = graph.add("·output", "output", "output")
    for tail in ends:
        graph.edges.append((tail, end, "solid"))
    _layers(graph)
    return graph


def _chain(graph: Graph, chain: Chain, prefix: str, heads: list[str]) -> list[str]:
    for node in chain:
        heads = _node(graph, node, prefix, heads)
    return heads


def _link(graph: Graph, heads: list[str], key: str, style: str = "solid") -> None:
    for head in heads:
        graph.edges.append((head, key, style))


def _node(graph: Graph, node: object, prefix: str, heads: list[str]) -> list[str]:
    if isinstance(node, Step):
        key = graph.add(prefix + node.step_id, node.step_id, "task")
        _link(graph, heads, key)
        return [key]
    if isinstance(node, Parallel | Route):
        kind = "fork" if isinstance(node, Parallel) else "route"
        key = graph.add(prefix + node.node_id, node.node_id, kind)
        _link(graph, heads, key)
        tails: list[str] = []
        for branch, chain in node.branches:
            tails += _chain(graph, chain, f"{prefix}{node.node_id}/{branch}/", [key])
        return tails
    if isinstance(node, FanOut):
        key = graph.add(
            prefix + node.node_id, f"{node.node_id}[*] ×{node.concurrency}", "fan_out"
        )
        _link(graph, heads, key)
        return [key]
    if isinstance(node, Loop):
        key = graph.add(
            prefix + node.node_id, f"{node.node_id} (≤{node.max_iterations})", "loop"
        )
        _link(graph, heads, key)
        tails = _chain(graph, node.body, f"{prefix}{node.node_id}#n/", [key])
        for tail in tails:
            graph.edges.append((tail, key, "back"))
        return tails
    if isinstance(node, Child):
        return _chain(graph, node.workflow.steps, f"{prefix}{node.node_id}/", heads)
    if isinstance(node, Delay):
        key = graph.add(
            prefix + node.node_id, f"delay {node.node_id} {node.delay_s:g}s", "delay"
        )
        _link(graph, heads, key)
        return [key]
    if isinstance(node, WaitSignal):
        key = graph.add(prefix + node.node_id, f"signal {node.signal}", "signal")
        _link(graph, heads, key)
        return [key]
    raise TypeError(f"cannot draw {node!r}")


def _layers(graph: Graph) -> None:
    """Each box one layer below the lowest box feeding it (back edges of
    loops left out), then numbered across within its layer."""
    feeding: dict[str, list[str]] = {key: [] for key in graph.boxes}
    for source, target, style in graph.edges:
        if style != "back":
            feeding[target].append(source)
    for key in graph.boxes:  # insertion order is a topological order here
        sources = feeding[key]
        graph.boxes[key].layer = max(
            (graph.boxes[s].layer + 1 for s in sources), default=0
        )
    used: dict[int, int] = {}
    for box in graph.boxes.values():
        box.column = used.get(box.layer, 0)
        used[box.layer] = box.column + 1


def svg(graph: Graph, states: dict[str, str] | None = None) -> str:
    """The graph as an SVG document; ``states`` colours boxes by step state."""
    states = states or {}
    width = max((b.column for b in graph.boxes.values()), default=0) + 1
    height = max((b.layer for b in graph.boxes.values()), default=0) + 1
    total_w = MARGIN * 2 + width * (BOX_W + GAP_X) - GAP_X + BOX_W // 2  # loop arcs
    total_h = MARGIN * 2 + height * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sayiir-graph" '
        f'width="{total_w}" height="{total_h}" viewBox="0 0 {total_w} {total_h}" '
        'font-family="sans-serif" font-size="12">'
    ]
    for source, target, style in graph.edges:
        parts.append(_edge(graph.boxes[source], graph.boxes[target], style))
    for box in graph.boxes.values():
        parts.append(_box(box, states.get(box.key)))
    parts.append("</svg>")
    return "".join(parts)


def _centre(box: Box) -> tuple[float, float]:
    x = MARGIN + box.column * (BOX_W + GAP_X) + BOX_W / 2
    y = MARGIN + box.layer * (BOX_H + GAP_Y) + BOX_H / 2
    return x, y


def _edge(source: Box, target: Box, style: str) -> str:
    (x1, y1), (x2, y2) = _centre(source), _centre(target)
    if style == "back":
        return (
            f'<path d="M{x1 + BOX_W / 2:.0f},{y1:.0f} C{x1 + BOX_W:.0f},{y1:.0f} '
            f'{x2 + BOX_W:.0f},{y2:.0f} {x2 + BOX_W / 2:.0f},{y2:.0f}" fill="none" '
            'stroke="#0f766e" stroke-dasharray="4 3"/>'
        )
    top, bottom = y2 - BOX_H / 2, y1 + BOX_H / 2
    if target.layer - source.layer > 1:
        # down its own column first, so it does not cut through the boxes of
        # a longer branch beside it, then across to the target
        bend = top - GAP_Y / 2
        return (
            f'<polyline points="{x1:.0f},{bottom:.0f} {x1:.0f},{bend:.0f} '
            f'{x2:.0f},{top:.0f}" fill="none" stroke="#6b7280"/>'
        )
    return (
        f'<line x1="{x1:.0f}" y1="{bottom:.0f}" x2="{x2:.0f}" y2="{top:.0f}" '
        'stroke="#6b7280"/>'
    )


def _box(box: Box, state: str | None) -> str:
    x = MARGIN + box.column * (BOX_W + GAP_X)
    y = MARGIN + box.layer * (BOX_H + GAP_Y)
    fill = STATE_COLOURS.get(state or "", KIND_COLOURS.get(box.kind, "#ffffff"))
    radius = 16 if box.kind in ("input", "output") else 4
    label = box.label if len(box.label) <= 22 else box.label[:21] + "…"
    title = html.escape(f"{box.key} ({box.kind}{', ' + state if state else ''})")
    return (
        f'<g class="sayiir-node sayiir-{box.kind}" data-step="{html.escape(box.key)}"'
        f' data-state="{html.escape(state or "")}"><title>{title}</title>'
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="{radius}" '
        f'fill="{fill}" stroke="#374151"/>'
        f'<text x="{x + BOX_W / 2}" y="{y + BOX_H / 2 + 4}" text-anchor="middle">'
        f"{html.escape(label)}</text></g>"
    )
