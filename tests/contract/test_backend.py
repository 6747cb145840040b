"""The storage contract: leases, fencing, atomic batches, the queue."""

from __future__ import annotations

import time

import pytest

from sayiir_nb import AttemptState, BackendError, LeaseLostError, RunState
from sayiir_nb.backends.base import (
    AttemptRecord,
    Checkpoint,
    RunRecord,
    RunUpdate,
    WriteBatch,
)


def record(run_id: str, state: RunState = RunState.PENDING, wake: float | None = None):
    now = time.time()
    return RunRecord(
        run_id=run_id,
        workflow_name="wf",
        definition_hash="h",
        state=state,
        input_json="null",
        input_digest="d",
        created_epoch=now,
        updated_epoch=now,
        wake_epoch=wake,
    )


def attempt(run_id: str, n: int, state=AttemptState.RUNNING) -> AttemptRecord:
    return AttemptRecord(
        run_id=run_id,
        step_id="s",
        task_name="t",
        attempt=n,
        state=state,
        started_epoch=1.0,
    )


def point(run_id: str, step: str = "s") -> Checkpoint:
    return Checkpoint(run_id=run_id, step_id=step, output_json="1", created_epoch=1.0)


def success(run_id: str, n: int = 1, step: str = "s") -> WriteBatch:
    done = AttemptRecord(
        run_id=run_id,
        step_id=step,
        task_name="t",
        attempt=n,
        state=AttemptState.SUCCEEDED,
        started_epoch=1.0,
        ended_epoch=2.0,
    )
    return WriteBatch(inserts=(done,), checkpoint=point(run_id, step))


def test_create_is_insert_if_absent(backend):
    _, created = backend.create_run(record("r"))
    assert created
    again, created_again = backend.create_run(record("r", RunState.FAILED))
    assert not created_again
    assert again.state is RunState.PENDING
    assert backend.get_run("missing") is None


def test_lease_is_exclusive_and_fenced(backend):
    backend.create_run(record("r"))
    first = backend.claim("r", "a", 30)
    assert first is not None
    assert backend.claim("r", "b", 30) is None
    assert backend.current_lease("r") == first
    backend.release(first)
    second = backend.claim("r", "b", 30)
    assert second.fence > first.fence
    with pytest.raises(LeaseLostError, match="'a'"):
        backend.write(first, success("r"))
    assert backend.load("r").checkpoints == {}
    assert backend.attempts("r") == []
    backend.write(second, success("r"))
    assert backend.load("r").checkpoints == {"s": "1"}


def test_revoked_lease_cannot_write(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    backend.revoke("r")
    with pytest.raises(LeaseLostError):
        backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.COMPLETED)))
    assert backend.get_run("r").state is RunState.PENDING
    with pytest.raises(LeaseLostError):
        backend.renew(lease, 30)


def test_batch_is_all_or_nothing(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    backend.write(lease, success("r", 1))
    second = success("r", 2)  # the step has a checkpoint already: must fail
    bad = WriteBatch(
        inserts=(attempt("r", 3, AttemptState.FAILED), *second.inserts),
        checkpoint=second.checkpoint,
        run=RunUpdate(state=RunState.COMPLETED, output_json="1"),
    )
    with pytest.raises(BackendError):
        backend.write(lease, bad)
    assert [a.attempt for a in backend.attempts("r")] == [1]
    assert backend.get_run("r").state is RunState.PENDING


def test_insert_of_a_stored_attempt_and_update_of_a_missing_one_fail(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    backend.write(lease, WriteBatch(inserts=(attempt("r", 1),)))
    with pytest.raises(BackendError):
        backend.write(lease, WriteBatch(inserts=(attempt("r", 1),)))
    with pytest.raises(BackendError):
        backend.write(
            lease,
            WriteBatch(
                updates=(attempt("r", 7),), run=RunUpdate(state=RunState.FAILED)
            ),
        )
    assert backend.get_run("r").state is RunState.PENDING
    assert [a.attempt for a in backend.attempts("r")] == [1]


def test_checkpoint_needs_its_succeeded_attempt(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    with pytest.raises(BackendError, match="succeeded attempt"):
        backend.write(lease, WriteBatch(checkpoint=point("r")))


def test_attempts_are_updated_by_key(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    backend.write(lease, WriteBatch(inserts=(attempt("r", 1),)))
    done = AttemptRecord(
        run_id="r",
        step_id="s",
        task_name="t",
        attempt=1,
        state=AttemptState.SUCCEEDED,
        started_epoch=1.0,
        ended_epoch=2.0,
    )
    backend.write(
        lease,
        WriteBatch(updates=(done,), inserts=(attempt("r", 2),), checkpoint=point("r")),
    )
    rows = backend.attempts("r")
    assert [(r.attempt, r.state) for r in rows] == [
        (1, AttemptState.SUCCEEDED),
        (2, AttemptState.RUNNING),
    ]
    assert rows[0].ended_epoch == 2.0
    assert backend.load("r").checkpoints == {"s": "1"}


def test_run_update_changes_state_output_and_error(backend):
    from sayiir_nb import ErrorInfo

    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    error = ErrorInfo(type="ValueError", message="no", traceback="tb", step_id="s")
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.FAILED, error=error)))
    stored = backend.get_run("r")
    assert stored.state is RunState.FAILED
    assert stored.error == error
    assert stored.error.traceback == "tb"


def test_claim_next_picks_runnable_work_only(backend):
    now = time.time()
    backend.create_run(record("pending"))
    backend.create_run(record("later", RunState.WAITING, wake=now + 3600))
    backend.create_run(record("due", RunState.WAITING, wake=now - 1))
    backend.create_run(record("done", RunState.COMPLETED))
    backend.create_run(record("held"))
    held = backend.claim("held", "other", 30)
    claimed = []
    while (lease := backend.claim_next("worker", 30, now)) is not None:
        claimed.append(lease.run_id)
    assert sorted(claimed) == ["due", "pending"]
    backend.release(held)
    assert backend.claim_next("worker", 30, now).run_id == "held"


def test_abandoned_running_run_is_claimable(backend):
    backend.create_run(record("crashed", RunState.RUNNING))
    lease = backend.claim_next("worker", 30, time.time())
    assert lease.run_id == "crashed"


def test_reset_run_clears_history(backend):
    backend.create_run(record("r"))
    lease = backend.claim("r", "a", 30)
    backend.write(lease, success("r"))
    backend.reset_run(lease, record("r", RunState.RUNNING))
    snapshot = backend.load("r")
    assert snapshot.checkpoints == {}
    assert snapshot.attempts == ()
    assert snapshot.run.state is RunState.RUNNING


def test_claims_can_be_limited_to_known_workflows(backend):
    backend.create_run(record("mine"))
    other = record("theirs")
    backend.create_run(RunRecord(**{**other.__dict__, "workflow_name": "other"}))
    now = time.time()
    lease = backend.claim_next("w", 30, now, workflows=["other"])
    assert lease is not None and lease.run_id == "theirs"
    assert backend.claim_next("w", 30, now, workflows=["nobody"]) is None
    assert backend.claim_next("w", 30, now, workflows=["wf"]).run_id == "mine"


def test_control_requests_are_kept_until_answered(backend):
    backend.create_run(record("r", RunState.RUNNING))
    lease = backend.claim("r", "a", 30)
    assert backend.requested("r", fresh=True) is None
    backend.request_control("r", RunState.CANCELLED)
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.PENDING)))
    assert backend.requested("r", fresh=True) is RunState.CANCELLED  # handed back
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.CANCELLED)))
    # answered; what still runs of the run (its parts) stops all the same
    assert backend.requested("r", fresh=True) is RunState.CANCELLED


def test_a_pause_is_forgotten_once_the_run_is_unpaused(backend):
    backend.create_run(record("r", RunState.RUNNING))
    lease = backend.claim("r", "a", 30)
    backend.request_control("r", RunState.PAUSED)
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.PAUSED)))
    assert backend.requested("r", fresh=True) is RunState.PAUSED
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.WAITING)))
    assert backend.requested("r", fresh=True) is None  # unpaused: run again


def test_a_signal_makes_a_waiting_run_claimable(backend):
    backend.create_run(record("r", RunState.WAITING))  # waits for a signal
    assert backend.claim_next("w", 30, time.time()) is None
    backend.send_signal("r", "go", "1")
    lease = backend.claim_next("w", 30, time.time() + 0.001)
    assert lease is not None and lease.run_id == "r"


def test_enqueue_is_idempotent_and_refuses_another_input(backend):
    from sayiir_nb import InputMismatchError

    assert backend.enqueue_workflow("wf", "q-1", {"n": 1}) == "q-1"
    assert backend.enqueue_workflow("wf", "q-1", {"n": 1}) == "q-1"
    assert backend.get_run("q-1").state is RunState.PENDING
    with pytest.raises(InputMismatchError, match="q-1"):
        backend.enqueue_workflow("wf", "q-1", {"n": 2})
    assert backend.claim_next("w", 30, time.time()).run_id == "q-1"


def test_listening_wakes_on_enqueue(backend):
    import threading

    listener = backend.listen()
    try:
        connected = getattr(listener, "connected", None)
        if connected is not None:
            assert connected.wait(10)
            time.sleep(0.2)  # the wake-up sent on connecting is past
        seen = listener.events
        woke = threading.Event()

        def wait() -> None:
            listener.wait(5, seen)
            woke.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)
        assert not woke.is_set()
        backend.enqueue_workflow("wf", "woken", 1)
        assert woke.wait(3)
        waiter.join()
    finally:
        if hasattr(listener, "channels"):
            listener.close()


def test_enqueue_with_restart_starts_a_run_over(backend):
    from sayiir_nb import RunBusyError

    backend.enqueue_workflow("wf", "again", 1)
    lease = backend.claim("again", "w", 30)
    backend.write(lease, success("again"))
    with pytest.raises(RunBusyError, match="cancel it first"):
        backend.enqueue_workflow("wf", "again", 2, restart=True)
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.FAILED)))
    backend.release(lease)
    backend.enqueue_workflow("wf", "again", 2, restart=True)
    snapshot = backend.load("again")
    assert snapshot.run.state is RunState.PENDING
    assert snapshot.run.input_json == "2"
    assert snapshot.attempts == () and snapshot.checkpoints == {}


def test_a_run_started_over_forgets_its_cancel(backend):
    backend.create_run(record("r", RunState.RUNNING))
    lease = backend.claim("r", "a", 30)
    backend.request_control("r", RunState.CANCELLED)
    backend.write(lease, WriteBatch(run=RunUpdate(state=RunState.CANCELLED)))
    assert backend.requested("r") is RunState.CANCELLED
    backend.reset_run(lease, record("r", RunState.RUNNING))
    assert backend.requested("r") is None
    assert backend.requested("r", fresh=True) is None
