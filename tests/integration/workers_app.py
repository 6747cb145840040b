"""Workflows that the worker tests run in real worker processes.

``sayiir-nb worker --app tests.integration.workers_app:registry``. Task
bodies append a line per execution to the file named by
``SAYIIR_NB_TEST_MARKS``, so tests count what really ran. ``SAYIIR_NB_SLOW_S``
makes the middle step of ``slow-chain`` sleep that long; ``SAYIIR_NB_STEP_S``
(default 0.02) is how long ``quick`` and ``square`` sleep.
"""

from __future__ import annotations

import os
import time

from sayiir_nb import Flow, WorkflowRegistry, current_context, task


def mark(what: str) -> None:
    ctx = current_context()
    line = f"{ctx.run_id} {ctx.step_id} {what} {os.getpid()}\n"
    with open(os.environ["SAYIIR_NB_TEST_MARKS"], "a") as marks:
        marks.write(line)
        marks.flush()
        os.fsync(marks.fileno())


@task
def first(x):
    mark("done")
    return x + 1


@task
def middle(x):
    mark("start")
    time.sleep(float(os.environ.get("SAYIIR_NB_SLOW_S", "0")))
    mark("done")
    return x * 2


@task
def last(x):
    mark("done")
    return x - 1


@task
def quick(x):
    mark("start")
    time.sleep(float(os.environ.get("SAYIIR_NB_STEP_S", "0.02")))
    mark("done")
    return x + 1


@task
def square(x):
    mark("start")
    time.sleep(float(os.environ.get("SAYIIR_NB_STEP_S", "0.02")))
    mark("done")
    return x * x


slow_chain = Flow("slow-chain").then(first).then(middle).then(last).build()
few = (
    Flow("few")
    .then(quick)
    .then(lambda x: [x, x + 1, x + 2], name="spread")
    .fan_out(square)
    .then(sum, name="total")
    .build()
)
registry = WorkflowRegistry([slow_chain, few])
