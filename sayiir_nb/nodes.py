"""The kinds of node a workflow is made of.

Every node has an id that is unique among its siblings. The step ids stored
for a run are paths built from those ids, so they depend on the graph only:

* a task ``send`` at the top level: ``send``;
* inside branch ``sms`` of a parallel node ``notify``: ``notify/sms/send``;
* inside the chosen branch ``a`` of a route ``ab``: ``ab/a/render`` (the route's
  own step ``ab`` stores the chosen key);
* item 3 of a fan-out ``deliver``: ``deliver[3]``;
* iteration 2 of a loop ``batches``: ``batches#2/send``;
* inside a child workflow used as step ``report``: ``report/...``;
* a delay or a wait for a signal: its own id.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .tasks import Task

if TYPE_CHECKING:
    from .workflow import Workflow


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""No default value: a wait for a signal that times out fails."""

Chain = tuple["Node", ...]


def _callable_name(fn: Callable[..., Any]) -> str:
    """A name for a function that is the same in every process (never a
    ``repr`` with an address in it)."""
    if isinstance(fn, functools.partial):
        return f"partial({_callable_name(fn.func)})"
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    if not isinstance(qualname, str):
        qualname, module = type(fn).__qualname__, type(fn).__module__
    return f"{module}.{qualname}"


def _stable_value(value: Any, where: str) -> str:
    """The value's stored form, canonical (used by the definition hash)."""
    from .codec import JsonCodec
    from .errors import CodecError, DefinitionError

    try:
        text = JsonCodec().encode(value)
    except CodecError as error:
        raise DefinitionError(f"{where} cannot be stored: {error}") from None
    return json.dumps(json.loads(text), sort_keys=True)


def describe_chain(chain: Chain) -> list[dict[str, Any]]:
    return [node.describe() for node in chain]


@dataclass(frozen=True, kw_only=True)
class Step:
    """A task under a stable id (the name given to ``then``, or the task's)."""

    step_id: str
    task: Task

    @property
    def node_id(self) -> str:
        return self.step_id

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "task",
            "step_id": self.step_id,
            "task": self.task.name,
            "options": self.task.options.describe(),
        }


@dataclass(frozen=True, kw_only=True)
class Parallel:
    """Branches that run concurrently; the output maps branch names to the
    outputs of their last nodes."""

    node_id: str
    branches: tuple[tuple[str, Chain], ...]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "parallel",
            "id": self.node_id,
            "branches": {name: describe_chain(chain) for name, chain in self.branches},
        }


@dataclass(frozen=True, kw_only=True)
class Route:
    """One of several named branches, chosen by ``key(value)``."""

    node_id: str
    key: Callable[[Any], Any]
    branches: tuple[tuple[str, Chain], ...]
    default: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "route",
            "id": self.node_id,
            "key": _callable_name(self.key),
            "default": self.default,
            "branches": {name: describe_chain(chain) for name, chain in self.branches},
        }


@dataclass(frozen=True, kw_only=True)
class FanOut:
    """One task over every item of a list, at most ``concurrency`` at once;
    the output is the list of results in input order."""

    node_id: str
    task: Task
    concurrency: int

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fan_out",
            "id": self.node_id,
            "task": self.task.name,
            "options": self.task.options.describe(),
            "concurrency": self.concurrency,
        }


@dataclass(frozen=True, kw_only=True)
class Loop:
    """A body run again on its own output until ``until(output)`` is true,
    at most ``max_iterations`` times."""

    node_id: str
    body: Chain
    until: Callable[[Any], bool]
    max_iterations: int
    on_max: str  # "fail" or "return"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "loop",
            "id": self.node_id,
            "until": _callable_name(self.until),
            "max_iterations": self.max_iterations,
            "on_max": self.on_max,
            "body": describe_chain(self.body),
        }


@dataclass(frozen=True, kw_only=True)
class Child:
    """Another workflow used as one node; its steps are stored under this
    node's id, in the parent run."""

    node_id: str
    workflow: Workflow

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "child",
            "id": self.node_id,
            "workflow": self.workflow.name,
            "definition": self.workflow.definition_hash,
        }


@dataclass(frozen=True, kw_only=True)
class Delay:
    """A durable pause: its wake-up time is stored when it is first reached."""

    node_id: str
    delay_s: float

    def describe(self) -> dict[str, Any]:
        return {"kind": "delay", "id": self.node_id, "delay_s": self.delay_s}


@dataclass(frozen=True, kw_only=True)
class WaitSignal:
    """A wait for the named signal; its output is the signal's payload."""

    node_id: str
    signal: str
    timeout_s: float | None
    default: Any = MISSING

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "signal",
            "id": self.node_id,
            "signal": self.signal,
            "timeout_s": self.timeout_s,
            "default": None
            if self.default is MISSING
            else _stable_value(self.default, f"the default of wait {self.node_id!r}"),
            "has_default": self.default is not MISSING,
        }


Node = Union[Step, Parallel, Route, FanOut, Loop, Child, Delay, WaitSignal]  # noqa: UP007
# task names recorded for the steps of nodes that are not tasks; the brackets
# keep them apart from the names of real tasks
ROUTE_LABEL, DELAY_LABEL, SIGNAL_LABEL = "(route)", "(delay)", "(signal)"
LABELS = {"route": ROUTE_LABEL, "delay": DELAY_LABEL, "signal": SIGNAL_LABEL}

KINDS = {
    Step: "task",
    Parallel: "parallel",
    Route: "route",
    FanOut: "fan_out",
    Loop: "loop",
    Child: "child",
    Delay: "delay",
    WaitSignal: "signal",
}
