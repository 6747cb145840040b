"""Workflows: named graphs of nodes, built with :class:`Flow`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Union

from .duration import Duration, to_seconds
from .errors import DefinitionError
from .nodes import (
    KINDS,
    LABELS,
    MISSING,
    Chain,
    Child,
    Delay,
    FanOut,
    Loop,
    Node,
    Parallel,
    Route,
    Step,
    WaitSignal,
    describe_chain,
)
from .tasks import Task, as_task

_STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
_ON_MAX = ("fail", "return")

Branch = Union[Task, Callable[..., Any], "Flow", "Workflow", list[Any], tuple[Any, ...]]


class Workflow:
    """A named, immutable graph of nodes with a definition hash.

    Build one with :class:`Flow`. The definition hash covers the structure
    (every node kind, id, branch, bound and duration) and every task option,
    not the code of the functions: a run started with one definition is
    refused by a workflow whose hash differs.

    Attributes
    ----------
    name
        The workflow's name.
    steps
        The top-level nodes, in order (for a plain chain: its task steps).
    definition_hash
        Hex SHA-256 of the definition.
    """

    def __init__(self, name: str, nodes: Chain) -> None:
        self.name = name
        self.steps = nodes
        self._by_id = {node.node_id: index for index, node in enumerate(nodes)}
        description = {"workflow": name, "steps": describe_chain(nodes)}
        text = json.dumps(description, sort_keys=True, separators=(",", ":"))
        self.definition_hash = hashlib.sha256(text.encode()).hexdigest()

    @property
    def nodes(self) -> Chain:
        return self.steps

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(node.node_id for node in self.steps)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Every task the workflow uses, nested ones included."""
        found: dict[str, Task] = {}
        for _, node in walk(self.steps):
            if isinstance(node, Step | FanOut):
                found.setdefault(node.task.name, node.task)
        return tuple(found.values())

    def index_of(self, step_id: str) -> int:
        """Position of a top-level node; raises ``KeyError`` if unknown."""
        return self._by_id[step_id]

    def known_steps(self) -> list[tuple[str, str]]:
        """``(step id, label)`` of the steps known before running: tasks,
        route keys, delays and signal waits, branches included. Fan-out items
        and loop iterations exist only once a run makes them."""
        steps = []
        for prefix, node in walk(self.steps, loops=False):
            if isinstance(node, Step):
                steps.append((prefix + node.step_id, node.task.name))
            elif not isinstance(node, Parallel | Child | FanOut | Loop):
                steps.append((prefix + node.node_id, LABELS[KINDS[type(node)]]))
        return steps

    def _repr_html_(self) -> str:
        """The task graph as inline SVG, laid out from input to output."""
        from .rich import workflow_html

        return workflow_html(self)

    def __repr__(self) -> str:
        return (
            f"<Workflow {self.name!r}: {' -> '.join(self.step_ids)} "
            f"(hash {self.definition_hash[:12]})>"
        )


def walk(
    chain: Chain, prefix: str = "", *, loops: bool = True
) -> list[tuple[str, Node]]:
    """Every node with the prefix of its step ids, depth first. Loop bodies
    (whose step ids exist per iteration) are included when ``loops``, with
    ``#n`` in place of the iteration."""
    found: list[tuple[str, Node]] = []
    for node in chain:
        found.append((prefix, node))
        if isinstance(node, Parallel | Route):
            for name, branch in node.branches:
                found.extend(
                    walk(branch, f"{prefix}{node.node_id}/{name}/", loops=loops)
                )
        elif isinstance(node, Child):
            found.extend(
                walk(node.workflow.steps, f"{prefix}{node.node_id}/", loops=loops)
            )
        elif isinstance(node, Loop) and loops:
            found.extend(walk(node.body, f"{prefix}{node.node_id}#n/"))
    return found


class Flow:
    """Builder of a :class:`Workflow`.

    Examples
    --------
    >>> wf = Flow("email-pipeline").then(load).then(render).then(send).build()

    A ``Flow`` that is not built can also be a branch or a loop body.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _STEP_ID.match(name):
            raise DefinitionError(
                f"workflow name {name!r} must be a non-empty string of letters, "
                "digits and _ . : -"
            )
        self.name = name
        self._nodes: list[Node] = []

    def then(
        self, fn: Task | Callable[..., Any] | Workflow, *, name: str | None = None
    ) -> Flow:
        """Append a step running ``fn``: a task, a plain function, or another
        workflow (a child workflow, stored under the step's id).

        Parameters
        ----------
        name
            The step id; the task's (or child workflow's) name by default.
            Give one to use the same task twice: steps are never merged.
        """
        if isinstance(fn, Workflow):
            return self._add(Child(node_id=name or fn.name, workflow=fn), "then")
        the_task = as_task(fn, name)
        return self._add(Step(step_id=name or the_task.name, task=the_task), "then")

    def parallel(self, name: str, branches: Mapping[str, Branch] | Any) -> Flow:
        """Run branches concurrently; the next step receives a dict of their
        outputs keyed by branch name.

        A branch is a task, a plain function, a list of them (a chain), a
        ``Flow`` or a ``Workflow``. Async tasks run on the event loop and sync
        tasks in threads, so two branches of 0.5 s take about 0.5 s. Under
        PostgreSQL workers each branch is claimed on its own, so branches run
        at once as far as the pool has free slots (a pool of one slot runs
        them one after the other). Every branch gets the same input. A
        failed branch (after its retries) fails the node with an error naming
        the branch, once the other branches have finished.
        """
        pairs = self._branches(name, branches, "parallel")
        return self._add(Parallel(node_id=name, branches=pairs), "parallel")

    def route(
        self,
        name: str,
        key: Callable[[Any], Any],
        branches: Mapping[str, Branch] | Any,
        *,
        default: str | None = None,
    ) -> Flow:
        """Run one of several named branches, chosen by ``key(value)``.

        The chosen key is checkpointed as step ``name``, so ``key`` does not
        run again on resume. A key that is not a branch name goes to
        ``default``; without one, the run fails with an error naming the key
        and the declared choices.
        """
        if not callable(key):
            raise DefinitionError(f"route {name!r} needs a callable key; got {key!r}.")
        pairs = self._branches(name, branches, "route")
        names = [branch for branch, _ in pairs]
        if default is not None and default not in names:
            raise DefinitionError(
                f"route {name!r} has default {default!r}, which is not one of its "
                f"branches ({', '.join(map(repr, names))})."
            )
        node = Route(node_id=name, key=key, branches=pairs, default=default)
        return self._add(node, "route")

    def fan_out(
        self,
        fn: Task | Callable[..., Any],
        *,
        name: str | None = None,
        concurrency: int = 4,
    ) -> Flow:
        """Run ``fn`` on every item of the previous output (a list or tuple),
        at most ``concurrency`` items at a time; the next step receives the
        results as a list, in input order. Every item is its own step
        (``name[0]``, ``name[1]``, ...), checkpointed and retried on its own.
        """
        the_task = as_task(fn, name)
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or concurrency < 1
        ):
            raise DefinitionError(
                f"fan_out {name or the_task.name!r} needs concurrency >= 1; got "
                f"{concurrency!r}."
            )
        node = FanOut(
            node_id=name or the_task.name, task=the_task, concurrency=concurrency
        )
        return self._add(node, "fan_out")

    def loop(
        self,
        name: str,
        body: Branch,
        *,
        until: Callable[[Any], bool],
        max_iterations: int,
        on_max: str = "fail",
    ) -> Flow:
        """Run ``body`` on its own previous output until ``until(output)`` is
        true; the next step receives the last output.

        ``until`` is a plain function of the body's output: the body says it
        is done through its output. Each iteration's steps are checkpointed
        (``name#1/...``, ``name#2/...``). When ``max_iterations`` is reached
        without ``until`` being true, ``on_max="fail"`` fails the run with a
        ``LoopLimitError`` and ``on_max="return"`` passes the last output on.
        """
        chain = self._chain_of(name, body, "loop", name)
        if not callable(until):
            raise DefinitionError(
                f"loop {name!r} needs a callable until=; got {until!r}."
            )
        if (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, int)
            or max_iterations < 1
        ):
            raise DefinitionError(
                f"loop {name!r} needs max_iterations >= 1; got {max_iterations!r}."
            )
        if on_max not in _ON_MAX:
            raise DefinitionError(
                f"loop {name!r}: on_max must be 'fail' or 'return'; got {on_max!r}."
            )
        node = Loop(
            node_id=name,
            body=chain,
            until=until,
            max_iterations=max_iterations,
            on_max=on_max,
        )
        return self._add(node, "loop")

    def delay(self, name: str, duration: Duration) -> Flow:
        """Pause the run durably for ``duration``; the value passes through.

        The wake-up time is stored when the delay is first reached, so a
        restart neither shortens nor loses it. A short delay waits in the
        process; a longer one (see ``CheckpointingRunner(inline_wait=...)``)
        returns a ``waiting`` status, and running the run id again after the
        wake-up time continues it.
        """
        seconds = to_seconds(duration, what=f"delay {name!r}")
        return self._add(Delay(node_id=name, delay_s=seconds), "delay")

    def wait_for_signal(
        self,
        name: str,
        *,
        signal: str | None = None,
        timeout: Duration | None = None,
        default: Any = MISSING,
    ) -> Flow:
        """Wait for the signal ``signal`` (``name`` by default); the next step
        receives its payload.

        A signal sent before the run reaches the wait is kept and consumed
        once (the run must exist: send it once the run has started). With
        ``timeout``, a wait that sees no signal in time passes ``default`` on,
        or, without a default, fails the run with a ``SignalTimeoutError``;
        a signal sent after the timeout does not count. ``run()`` waits in the
        process up to ``inline_wait`` for the signal, then returns a
        ``waiting`` status.
        """
        signal_name = signal or name
        _check_name(signal_name, "signal")
        seconds = (
            None
            if timeout is None
            else to_seconds(timeout, what=f"timeout of wait {name!r}")
        )
        node = WaitSignal(
            node_id=name, signal=signal_name, timeout_s=seconds, default=default
        )
        return self._add(node, "wait_for_signal")

    def build(self) -> Workflow:
        """Freeze the nodes into a :class:`Workflow`."""
        if not self._nodes:
            raise DefinitionError(
                f"workflow {self.name!r} has no steps; add some with then()."
            )
        return Workflow(self.name, tuple(self._nodes))

    def _add(self, node: Node, method: str) -> Flow:
        node_id = node.node_id
        _check_name(node_id, f"step id in {method}() of workflow {self.name!r};")
        if any(existing.node_id == node_id for existing in self._nodes):
            raise DefinitionError(
                f"workflow {self.name!r} already has a step {node_id!r}; pass "
                f"name='...' to {method}() to give this one its own id."
            )
        self._nodes.append(node)
        return self

    def _branches(
        self, name: str, branches: Any, kind: str
    ) -> tuple[tuple[str, Chain], ...]:
        _check_name(name, f"{kind} name")
        items = (
            list(branches.items()) if isinstance(branches, Mapping) else list(branches)
        )
        if not items:
            raise DefinitionError(
                f"{kind} {name!r} has no branches; give at least one."
            )
        pairs: list[tuple[str, Chain]] = []
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise DefinitionError(
                    f"{kind} {name!r}: branches are a dict (or pairs) of name to "
                    f"branch; got {item!r}."
                )
            branch_name, branch = item
            _check_name(branch_name, f"branch name in {kind} {name!r}:")
            if any(branch_name == seen for seen, _ in pairs):
                raise DefinitionError(
                    f"{kind} {name!r} has two branches named {branch_name!r}; "
                    "branch names must be unique."
                )
            pairs.append(
                (
                    branch_name,
                    self._chain_of(f"{name}/{branch_name}", branch, kind, branch_name),
                )
            )
        return tuple(pairs)

    def _chain_of(
        self, where: str, branch: Branch, kind: str, fallback: str | None = None
    ) -> Chain:
        if isinstance(branch, Workflow):
            return branch.steps
        if isinstance(branch, Flow):
            chain = tuple(branch._nodes)
        elif isinstance(branch, list | tuple):
            inner = Flow(self.name)
            for item in branch:
                inner.then(item)
            chain = tuple(inner._nodes)
        elif isinstance(branch, Task) or callable(branch):
            the_task = as_task(branch, fallback or where.rsplit("/", 1)[-1])
            chain = (Step(step_id=the_task.name, task=the_task),)
        else:
            raise DefinitionError(
                f"{kind} {where!r}: a branch is a task, a function, a list of them, "
                f"a Flow or a Workflow; got {branch!r}."
            )
        if not chain:
            raise DefinitionError(
                f"{kind} {where!r} has an empty branch; give it a task."
            )
        return chain


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _STEP_ID.match(name):
        raise DefinitionError(
            f"{what} {name!r} must be letters, digits and _ . : - (no spaces or "
            "slashes); pass name='...'."
        )


class RunContext:
    """What a task can read about its run: pass a parameter named ``ctx``.

    Attributes
    ----------
    run_id, workflow_name, step_id
        Where the task is running.
    attempt
        The attempt number, counted from 1.
    input
        The run's original input (decoded, equal to what was given); inside a
        child workflow, the input the child step received.
    """

    __slots__ = (
        "_input",
        "_input_read",
        "_outputs",
        "attempt",
        "run_id",
        "step_id",
        "workflow_name",
    )

    def __init__(
        self,
        *,
        run_id: str,
        workflow_name: str,
        step_id: str,
        attempt: int,
        input: Any,
        outputs: Mapping[str, Any],
    ) -> None:
        self.run_id = run_id
        self.workflow_name = workflow_name
        self.step_id = step_id
        self.attempt = attempt
        self._input = input
        self._input_read = not callable(input)
        self._outputs = outputs

    @property
    def input(self) -> Any:
        """The run's input (a copy of its own for this task)."""
        if not self._input_read:
            self._input = self._input()
            self._input_read = True
        return self._input

    def output(self, step_id: str) -> Any:
        """The output of an earlier step of this run.

        Each call returns a copy of its own, decoded from the checkpoint.
        ``step_id`` is looked up from where the task is: inside a branch, a
        loop or a child workflow, ``"render"`` finds that level's ``render``
        first (``child/render``), then the enclosing levels', then the top
        level's. A full step id (``"notify/sms/send"``) works too.

        Raises
        ------
        KeyError
            If ``step_id`` is not a step completed before this one.
        """
        parts = self.step_id.split("/")[:-1]
        for depth in range(len(parts), -1, -1):
            candidate = "/".join([*parts[:depth], step_id])
            if candidate in self._outputs:
                return self._outputs[candidate]
        else:
            known = ", ".join(repr(s) for s in self._outputs) or "none"
            raise KeyError(
                f"step {self.step_id!r} asked for the output of {step_id!r}, which "
                f"is not an earlier step of workflow {self.workflow_name!r} "
                f"(earlier steps: {known})."
            )

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Outputs of the earlier steps, by step id."""
        return dict(self._outputs)

    def __repr__(self) -> str:
        return (
            f"RunContext(run_id={self.run_id!r}, step_id={self.step_id!r}, "
            f"attempt={self.attempt})"
        )
