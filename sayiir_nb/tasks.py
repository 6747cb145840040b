"""Tasks: plain functions marked with their timeout and retry policy."""

from __future__ import annotations

import functools
import inspect
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from .duration import Duration, optional_seconds, to_seconds
from .errors import DefinitionError

LONGEST_WAIT_S = 1e9


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often a failed attempt is tried again, and how long to wait first.

    The wait before retry ``k`` (``k`` counted from 1) is
    ``backoff_s * backoff_multiplier ** (k - 1)``, then spread by ``jitter``
    and finally capped by ``max_backoff_s``. The first wait therefore equals
    ``backoff_s``.

    Attributes
    ----------
    retries
        How many times a failed attempt is retried: at most ``retries + 1``
        attempts fail before the step fails.
    backoff_s
        The wait before the first retry, in seconds.
    backoff_multiplier
        The factor between two consecutive waits.
    max_backoff_s
        The longest wait, in seconds; ``None`` for no cap.
    jitter
        A fraction between 0 and 1: each wait is multiplied by a factor drawn
        uniformly from ``[1 - jitter, 1 + jitter]`` (before the cap).
    retry_on
        The exception types that are retried; all ``Exception`` subclasses
        when empty.
    """

    retries: int = 0
    backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_s: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = ()

    def wait_before_retry_s(
        self, retry: int, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1-based).

        Without ``max_backoff_s`` the waits grow without bound, up to
        :data:`LONGEST_WAIT_S` (about 31 years).
        """
        try:
            wait = self.backoff_s * self.backoff_multiplier ** (retry - 1)
        except OverflowError:
            wait = math.inf
        if self.jitter and math.isfinite(wait):
            wait *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        if self.max_backoff_s is not None:
            wait = min(wait, self.max_backoff_s)
        return min(wait, LONGEST_WAIT_S)

    def should_retry(self, error: BaseException, failures: int) -> bool:
        """Whether a step that has failed ``failures`` times with ``error``
        gets another attempt."""
        if failures > self.retries or not isinstance(error, Exception):
            return False
        return not self.retry_on or isinstance(error, self.retry_on)


@dataclass(frozen=True, kw_only=True)
class TaskOptions:
    """The options of a task; part of a workflow's definition hash, except
    the limits (``max_concurrency``, ``rate_per_s``), which change how fast
    attempts start, not what they do."""

    timeout_s: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int | None = None
    rate_per_s: float | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, used for the definition hash."""
        policy = self.retry
        return {
            "timeout_s": self.timeout_s,
            "retries": policy.retries,
            "backoff_s": policy.backoff_s,
            "backoff_multiplier": policy.backoff_multiplier,
            "max_backoff_s": policy.max_backoff_s,
            "jitter": policy.jitter,
            "retry_on": sorted(_qualname(t) for t in policy.retry_on),
        }


class Task:
    """A function plus its options. Calling the task calls the function.

    Build tasks with the :func:`task` decorator rather than directly.

    The function receives the previous step's output (the run's input for the
    first step) as its single positional argument, or nothing if it takes no
    positional argument. A parameter named ``ctx`` (or annotated with
    :class:`~sayiir_nb.RunContext`) receives the run context, from which the
    run's input and the output of any earlier step can be read.
    """

    def __init__(self, fn: Callable[..., Any], name: str, options: TaskOptions) -> None:
        if not callable(fn):
            raise DefinitionError(f"task {name!r} must wrap a callable, got {fn!r}.")
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_value, self.context_param = _calling_convention(fn, name)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"

    def with_options(self, **changes: Any) -> Task:
        """A copy of this task with some options changed (same arguments as
        :func:`task`)."""
        current = _options_as_arguments(self)
        current.update(changes)
        name = current.pop("name")
        return Task(self.fn, name, _build_options(name, **current))


@overload
def task(fn: Callable[..., Any], /) -> Task: ...


@overload
def task(
    *,
    name: str | None = None,
    timeout: Duration | None = None,
    retries: int = 0,
    backoff: Duration = 1.0,
    backoff_multiplier: float = 2.0,
    max_backoff: Duration | None = None,
    jitter: float | bool = 0.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    max_concurrency: int | None = None,
    rate_limit: float | str | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...


def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a function as a task; use as ``@task`` or ``@task(retries=3, ...)``.

    Parameters
    ----------
    name
        The task's name; the function's name by default.
    timeout
        Limit of each attempt (seconds, ``timedelta`` or ``"10s"``). An async
        task is cancelled at the deadline. A sync task with a timeout runs in a
        thread of its own; Python cannot kill a thread, so at the deadline the
        attempt is reported timed out, the thread is left to finish and its
        late result is discarded.
    retries
        How many times a failed attempt is retried (at most ``retries + 1``
        failed attempts).
    backoff
        Wait before the first retry; later waits grow by ``backoff_multiplier``.
    backoff_multiplier
        Growth factor between waits (2 by default).
    max_backoff
        Cap on any single wait.
    jitter
        Fraction (0 to 1) by which each wait is randomly spread; ``True`` means
        0.5.
    retry_on
        Exception type(s) that are retried; by default every ``Exception``.
        ``KeyboardInterrupt``, ``SystemExit`` and cancellation are never
        retried.
    max_concurrency
        At most this many attempts of the task run at once, across every
        worker of the backend (with PostgreSQL: every process sharing it).
    rate_limit
        At most this many attempts start per second, across every worker of
        the backend: a number per second, or ``"10/s"``, ``"300/m"``,
        ``"1000/h"``. Starts are spaced evenly (``"10/s"`` starts one every
        0.1 s), so a burst waits its turn.
    """

    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise DefinitionError(
            f"@task got unknown option(s) {', '.join(unknown)}; the options are "
            f"{', '.join(sorted(_OPTIONS))}."
        )

    def decorate(function: Callable[..., Any]) -> Task:
        if isinstance(function, Task):
            function = function.fn
        given = dict(options)
        name = given.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise DefinitionError(
                f"a task name must be a non-empty string; got {name!r}."
            )
        name = name or getattr(function, "__name__", None)
        if not name or name == "<lambda>":
            raise DefinitionError(
                f"cannot name the task for {function!r}: pass name='...' to @task."
            )
        return Task(function, name, _build_options(name, **given))

    return decorate(fn) if fn is not None else decorate


_OPTIONS = frozenset(
    {
        "name",
        "timeout",
        "retries",
        "backoff",
        "backoff_multiplier",
        "max_backoff",
        "jitter",
        "retry_on",
        "max_concurrency",
        "rate_limit",
    }
)


def as_task(obj: Task | Callable[..., Any], name: str | None = None) -> Task:
    """Return ``obj`` if it is a task, else wrap the plain function in one,
    named after the function (or ``name`` for a lambda)."""
    if isinstance(obj, Task):
        return obj
    if name is not None and getattr(obj, "__name__", "<lambda>") == "<lambda>":
        return task(obj, name=name)
    return task(obj)


def _build_options(
    name: str,
    *,
    timeout: Duration | None = None,
    retries: int = 0,
    backoff: Duration = 1.0,
    backoff_multiplier: float = 2.0,
    max_backoff: Duration | None = None,
    jitter: float | bool = 0.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    max_concurrency: int | None = None,
    rate_limit: float | str | None = None,
) -> TaskOptions:
    where = f"of task {name!r}"
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DefinitionError(
            f"retries {where} must be a whole number >= 0; got {retries!r}."
        )
    multiplier = _number(backoff_multiplier, f"backoff_multiplier {where}")
    if not math.isfinite(multiplier) or multiplier < 1:
        raise DefinitionError(
            f"backoff_multiplier {where} must be a finite number >= 1; got "
            f"{backoff_multiplier!r}."
        )
    spread = 0.5 if jitter is True else _number(jitter, f"jitter {where}")
    if not 0 <= spread <= 1:  # also refuses NaN
        raise DefinitionError(
            f"jitter {where} must be between 0 and 1; got {jitter!r}."
        )
    policy = RetryPolicy(
        retries=retries,
        backoff_s=to_seconds(backoff, what=f"backoff {where}"),
        backoff_multiplier=multiplier,
        max_backoff_s=optional_seconds(max_backoff, what=f"max_backoff {where}"),
        jitter=spread,
        retry_on=_retry_types(retry_on, where),
    )
    timeout_s = optional_seconds(timeout, what=f"timeout {where}")
    if timeout_s == 0:
        raise DefinitionError(f"timeout {where} must be longer than zero.")
    return TaskOptions(
        timeout_s=timeout_s,
        retry=policy,
        max_concurrency=_concurrency(max_concurrency, where),
        rate_per_s=_rate(rate_limit, where),
    )


_RATE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$"
)
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PER.update({"h": 3600, "hour": 3600})


def _concurrency(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(
            f"max_concurrency {where} must be a whole number >= 1 (or None for no "
            f"limit); got {value!r}."
        )
    return value


def _rate(value: object, where: str) -> float | None:
    """Attempts per second from a number or ``"N/s"``, ``"N/m"``, ``"N/h"``."""
    if value is None:
        return None
    rate: float | None = None
    if isinstance(value, str):
        found = _RATE.match(value)
        if found:
            rate = float(found.group(1)) / _PER[found.group(2)]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    if rate is None or not math.isfinite(rate) or rate <= 0:
        raise DefinitionError(
            f"rate_limit {where} must be a positive number of attempts per second "
            f"or a string such as '10/s', '300/m' or '1000/h'; got {value!r}."
        )
    return rate


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(f"{what} must be a number; got {value!r}.")
    return float(value)


def _retry_types(
    retry_on: type[BaseException] | tuple[type[BaseException], ...], where: str
) -> tuple[type[BaseException], ...]:
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise DefinitionError(
                f"retry_on {where} must list Exception subclasses; got {kind!r}. "
                "KeyboardInterrupt, SystemExit and cancellation are never retried."
            )
    return types


def _calling_convention(fn: Callable[..., Any], name: str) -> tuple[bool, str | None]:
    """Whether ``fn`` takes the previous output, and the name of its context
    parameter (``None`` if it takes none)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True, None
    context_param: str | None = None
    positional: list[inspect.Parameter] = []
    for parameter in parameters:
        if parameter.name == "ctx" or _is_context_annotation(parameter.annotation):
            context_param = parameter.name
        elif (
            parameter.kind
            in (
                parameter.POSITIONAL_ONLY,
                parameter.POSITIONAL_OR_KEYWORD,
            )
            or parameter.kind is parameter.VAR_POSITIONAL
        ):
            positional.append(parameter)
        elif (
            parameter.kind is parameter.KEYWORD_ONLY
            and parameter.default is parameter.empty
        ):
            raise DefinitionError(
                f"task {name!r} has a required keyword-only parameter "
                f"{parameter.name!r}; a step passes only the previous output and "
                "the run context (ctx). Give it a default or read it from ctx."
            )
    required = [
        p for p in positional if p.default is p.empty and p.kind is not p.VAR_POSITIONAL
    ]
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise DefinitionError(
            f"task {name!r} needs {len(required)} arguments ({names}) but a step "
            "passes one value, the previous step's output. Take one argument and "
            "read other earlier outputs with ctx.output('step name')."
        )
    return bool(positional), context_param


def _is_context_annotation(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.split(".")[-1] == "RunContext"
    return getattr(annotation, "__name__", None) == "RunContext"


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _options_as_arguments(t: Task) -> dict[str, Any]:
    policy = t.options.retry
    return {
        "name": t.name,
        "timeout": t.options.timeout_s,
        "retries": policy.retries,
        "backoff": policy.backoff_s,
        "backoff_multiplier": policy.backoff_multiplier,
        "max_backoff": policy.max_backoff_s,
        "jitter": policy.jitter,
        "retry_on": policy.retry_on,
        "max_concurrency": t.options.max_concurrency,
        "rate_limit": t.options.rate_per_s,
    }
