"""Registries: find tasks and workflows by name (workers load them this way)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .tasks import Task
from .workflow import Workflow


class TaskRegistry:
    """Tasks by name. Registering a name again replaces the old task, as
    happens when a notebook cell that defines it is run again."""

    def __init__(self, tasks: Iterable[Task] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        for item in tasks:
            self.register(item)

    def register(self, item: Task) -> Task:
        self._tasks[item.name] = item
        return item

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise KeyError(
                f"no task named {name!r} is registered (known: "
                f"{', '.join(sorted(self._tasks)) or 'none'})."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)


class WorkflowRegistry:
    """Workflows by name, with the tasks they use.

    A worker is given a registry (``package.module:registry``) to know what
    code a stored run needs. Registering a workflow under a name already taken
    replaces it.
    """

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        self.tasks = TaskRegistry()
        for workflow in workflows:
            self.register(workflow)

    def register(self, workflow: Workflow) -> Workflow:
        self._workflows[workflow.name] = workflow
        for item in workflow.tasks:
            self.tasks.register(item)
        return workflow

    def get(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except KeyError:
            raise KeyError(
                f"no workflow named {name!r} is registered (known: "
                f"{', '.join(sorted(self._workflows)) or 'none'}). Register it "
                "with WorkflowRegistry.register(workflow)."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._workflows.values())

    def __len__(self) -> int:
        return len(self._workflows)
