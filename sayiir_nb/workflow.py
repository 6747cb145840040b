"""Workflows: named graphs of steps, built with :class:`Flow`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DefinitionError
from .tasks import Task, as_task

_STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")


@dataclass(frozen=True, kw_only=True)
class Step:
    """One node of a workflow: a task under a stable step id.

    The step id is the name given to ``then`` or, by default, the task's name.
    It is derived from the graph, never from the order of completion, so the
    checkpoint of a step is found again after a restart.
    """

    step_id: str
    task: Task

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "task",
            "step_id": self.step_id,
            "task": self.task.name,
            "options": self.task.options.describe(),
        }


class Workflow:
    """A named, immutable sequence of steps with a definition hash.

    Build one with :class:`Flow`. The definition hash covers the structure
    and every task option (not the code of the functions): a run started with
    one definition is refused by a workflow whose hash differs.
    """

    def __init__(self, name: str, steps: tuple[Step, ...]) -> None:
        self.name = name
        self.steps = steps
        self._by_id = {step.step_id: index for index, step in enumerate(steps)}
        description = {"workflow": name, "steps": [s.describe() for s in steps]}
        text = json.dumps(description, sort_keys=True, separators=(",", ":"))
        self.definition_hash = hashlib.sha256(text.encode()).hexdigest()

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(step.step_id for step in self.steps)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(step.task for step in self.steps)

    def index_of(self, step_id: str) -> int:
        """Position of ``step_id``; raises ``KeyError`` for an unknown step."""
        return self._by_id[step_id]

    def __repr__(self) -> str:
        return (
            f"<Workflow {self.name!r}: {' -> '.join(self.step_ids)} "
            f"(hash {self.definition_hash[:12]})>"
        )


class Flow:
    """Builder of a :class:`Workflow`.

    Examples
    --------
    >>> wf = Flow("email-pipeline").then(load).then(render).then(send).build()
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _STEP_ID.match(name):
            raise DefinitionError(
                f"workflow name {name!r} must be a non-empty string of letters, "
                "digits and _ . : -"
            )
        self.name = name
        self._steps: list[Step] = []

    def then(self, fn: Task | Callable[..., Any], *, name: str | None = None) -> Flow:
        """Append a step running ``fn`` (a task or a plain function).

        Parameters
        ----------
        name
            The step id; the task's name by default. Give one to use the same
            task twice: steps are never merged silently.
        """
        the_task = as_task(fn)
        step_id = name or the_task.name
        if not _STEP_ID.match(step_id):
            raise DefinitionError(
                f"step id {step_id!r} in workflow {self.name!r} must be letters, "
                "digits and _ . : - ; pass name='...' to then()."
            )
        if any(step.step_id == step_id for step in self._steps):
            raise DefinitionError(
                f"workflow {self.name!r} already has a step {step_id!r}; pass "
                f"then({the_task.name}, name='...') to give the second one its own id."
            )
        self._steps.append(Step(step_id=step_id, task=the_task))
        return self

    def build(self) -> Workflow:
        """Freeze the steps into a :class:`Workflow`."""
        if not self._steps:
            raise DefinitionError(
                f"workflow {self.name!r} has no steps; add some with then()."
            )
        return Workflow(self.name, tuple(self._steps))


class RunContext:
    """What a task can read about its run: pass a parameter named ``ctx``.

    Attributes
    ----------
    run_id, workflow_name, step_id
        Where the task is running.
    attempt
        The attempt number, counted from 1.
    input
        The run's original input (decoded, equal to what was given).
    """

    __slots__ = ("_outputs", "attempt", "input", "run_id", "step_id", "workflow_name")

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
        self.input = input
        self._outputs = outputs

    def output(self, step_id: str) -> Any:
        """The output of an earlier step of this run.

        Raises
        ------
        KeyError
            If ``step_id`` is not a step completed before this one.
        """
        try:
            return self._outputs[step_id]
        except KeyError:
            known = ", ".join(repr(s) for s in self._outputs) or "none"
            raise KeyError(
                f"step {self.step_id!r} asked for the output of {step_id!r}, which "
                f"is not an earlier step of workflow {self.workflow_name!r} "
                f"(earlier steps: {known})."
            ) from None

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Outputs of the earlier steps, by step id."""
        return dict(self._outputs)

    def __repr__(self) -> str:
        return (
            f"RunContext(run_id={self.run_id!r}, step_id={self.step_id!r}, "
            f"attempt={self.attempt})"
        )
