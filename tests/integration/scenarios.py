"""Programs the crash and interrupt tests run in real subprocesses.

Usage: python -m tests.integration.scenarios NAME STORE SIDE_FILE [MODE]

Task bodies append lines to SIDE_FILE, so the tests count executions from
what the tasks did, not from what the engine says.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from sayiir_nb import CheckpointingRunner, DuckDBBackend, Flow, task

SIDE = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("side.txt")
MODE = sys.argv[4] if len(sys.argv) > 4 else ""


def note(line: str) -> None:
    with SIDE.open("a") as side:
        side.write(line + "\n")
        side.flush()
        os.fsync(side.fileno())


@task
def step1(x):
    note("step1")
    return x + 1


@task
def step2(x):
    note("step2")
    return x + 1


@task
def step3(x):
    note("step3 start")
    if MODE == "exit":
        os._exit(3)
    if MODE == "kill":
        time.sleep(60)
    note("step3 end")
    return x + 1


CHAIN = Flow("crash-chain").then(step1).then(step2).then(step3).build()


@task(retries=2, backoff=1.5)
def always_fails(_, ctx):
    note(f"attempt {ctx.attempt}")
    raise ConnectionError("still down")


BACKOFF = Flow("crash-backoff").then(always_fails).build()


@task
def sleepy(_):
    note("started")
    if MODE == "busy":
        deadline = time.time() + 30
        while time.time() < deadline:
            sum(range(1000))
    elif MODE != "resume":
        time.sleep(30)
    note("finished")
    return "done"


SLEEPY = Flow("sleepy").then(sleepy).build()


@task
async def spins(_):
    note("started")
    if MODE != "resume":
        deadline = time.time() + 30
        while time.time() < deadline:
            sum(range(1000))
    note("finished")
    return "done"


SPINS = Flow("spins").then(spins).build()


def big_step(index: int):
    @task(name=f"big{index}")
    def big(_):
        note(f"big{index}")
        return list(range(150_000))

    return big


MANY = Flow("many")
for _index in range(20):
    MANY.then(big_step(_index))
MANY = MANY.build()


@task
def branch_a(x):
    note("a")
    return x + 1


@task
def branch_b1(x):
    note("b1")
    return x + 10


@task
def branch_b2(x):
    note("b2 start")
    if MODE == "kill":
        time.sleep(60)
    note("b2 end")
    return x + 100


BRANCHES = (
    Flow("crash-branch")
    .parallel("fork", {"a": branch_a, "b": [branch_b1, branch_b2]})
    .build()
)


@task
async def item_work(x):
    note(f"item {x} start")
    if MODE == "kill" and x == 3:
        await asyncio.sleep(60)
    await asyncio.sleep(0.05)
    note(f"item {x} end")
    return x * x


FANOUT = Flow("crash-fanout").fan_out(item_work, concurrency=2).build()


@task
def iteration(state):
    note(f"iter {state} start")
    if MODE == "kill" and state == 2:
        time.sleep(60)
    note(f"iter {state} end")
    return state + 1


LOOP = (
    Flow("crash-loop")
    .loop("body", iteration, until=lambda s: s >= 4, max_iterations=10)
    .build()
)


@task
def before_delay(x):
    note(f"before {time.time():.3f}")
    return x


@task
def after_delay(x):
    note(f"after {time.time():.3f}")
    return x + 1


DELAY = (
    Flow("crash-delay")
    .then(before_delay)
    .delay("pause", "2s")
    .then(after_delay)
    .build()
)


def report(runner: CheckpointingRunner, run_id: str) -> None:
    status = runner.status(run_id)
    print(f"STATE {status.state.value}", flush=True)


def main() -> None:
    name, store = sys.argv[1], sys.argv[2]
    runner = CheckpointingRunner(DuckDBBackend(store), interrupt_grace_s=1.0)
    if name == "chain":
        print(f"OUTPUT {runner.run(CHAIN, 'chain-1', 0).output}")
    elif name == "backoff":
        report_status = runner.run(BACKOFF, "backoff-1", None)
        print(f"STATE {report_status.state.value}")
    elif name == "branch":
        print(f"OUTPUT {runner.run(BRANCHES, 'branch-1', 0).output}")
    elif name == "fanout":
        print(f"OUTPUT {runner.run(FANOUT, 'fanout-1', list(range(6))).output}")
    elif name == "loop":
        print(f"OUTPUT {runner.run(LOOP, 'loop-1', 0).output}")
    elif name == "delay":
        delays = CheckpointingRunner(DuckDBBackend(store), inline_wait=5)
        print(f"OUTPUT {delays.run(DELAY, 'delay-1', 0).output}")
        delays.close()
        runner.close()
        return
    elif name == "sigint-many":
        _interruptible(runner, lambda: runner.run(MANY, "many-1", None), "many-1")
    elif name == "sigint-async":
        _interruptible(runner, lambda: runner.run(SPINS, "spins-1", None), "spins-1")
    elif name == "sigint-asyncio-run":

        async def outer():
            return runner.run(SLEEPY, "sleepy-1", None)

        _interruptible(runner, lambda: asyncio.run(outer()), "sleepy-1")
    elif name in ("sigint-plain", "sigint-loop"):
        try:
            if name == "sigint-plain":
                status = runner.run(SLEEPY, "sleepy-1", None)
            else:
                status = asyncio.new_event_loop().run_until_complete(_in_loop(runner))
            print(f"OUTPUT {status.output}")
        except KeyboardInterrupt:
            print("KEYBOARD INTERRUPT", flush=True)
        report(runner, "sleepy-1")
    runner.close()


def _interruptible(runner: CheckpointingRunner, call, run_id: str) -> None:
    try:
        status = call()
        print(
            f"OUTPUT {status.output if not isinstance(status.output, list) else 'list'}"
        )
    except KeyboardInterrupt:
        print("KEYBOARD INTERRUPT", flush=True)
    report(runner, run_id)


async def _in_loop(runner: CheckpointingRunner):
    return runner.run(SLEEPY, "sleepy-1", None)


if __name__ == "__main__":
    main()
