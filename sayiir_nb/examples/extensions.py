"""Four extensions of the email campaign, each a workflow:

``multichannel_workflow``
    email, SMS and push sent in parallel branches, then one report;
``ab_test_workflow``
    recipients split in two by a stable hash of their address, each half
    rendered from its own template (``spring-sale`` and ``spring-sale-b``) and
    sent in its own branch;
``batched_workflow``
    messages sent in batches, with a durable delay between batches to respect
    a provider's rate limit (a loop whose body is "send a batch, then wait");
``reported_workflow``
    the campaign as a child workflow, then a wait for the signal
    ``delivery_report`` carrying the SMTP server's counts, then a reconciliation.

SMS and push have no real provider here: they are recorded in the campaign
database's ``sms_outbox`` and ``push_outbox`` tables, which is what a provider's
API would receive.
"""

from __future__ import annotations

import hashlib
from typing import Any

import duckdb

from .. import Flow, RunContext, WorkflowRegistry, task
from .email_campaign import (
    Campaign,
    Message,
    Recipient,
    TransientDeliveryError,
    campaign_workflow,
    database_path,
    deliver,
    fetch_recipients,
    load_campaign,
    render,
    render_messages,
    send_messages,
)

BATCH_SIZE = 50


def _outbox(table: str, run_id: str, rows: list[tuple[str, str]]) -> int:
    """Record messages for a channel without a real provider; idempotent per
    run and address, so a retried step does not record twice."""
    with duckdb.connect(str(database_path())) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (run_id VARCHAR, address VARCHAR, "
            "text VARCHAR, PRIMARY KEY (run_id, address))"
        )
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(run_id, address, text) for address, text in rows],
        )
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]
        ).fetchone()
    return int(row[0]) if row else 0


# -- SMS and push in parallel with email --------------------------------------


@task(retries=2, backoff="100ms")
def send_sms(messages: list[Message], ctx: RunContext) -> dict[str, int]:
    rows = [(m.to, m.subject[:160]) for m in messages]
    return {"sms": _outbox("sms_outbox", ctx.run_id, rows)}


@task(retries=2, backoff="100ms")
async def send_push(messages: list[Message], ctx: RunContext) -> dict[str, int]:
    rows = [(m.to, m.subject[:80]) for m in messages]
    return {"push": _outbox("push_outbox", ctx.run_id, rows)}


@task
def channel_report(outcomes: dict[str, Any]) -> dict[str, int]:
    """One line per channel: how many messages went out."""
    return {
        "email": outcomes["email"].messages,
        "sms": outcomes["sms"]["sms"],
        "push": outcomes["push"]["push"],
    }


multichannel_workflow = (
    Flow("campaign-multichannel")
    .then(load_campaign)
    .then(fetch_recipients)
    .then(render_messages)
    .parallel("channels", {"email": send_messages, "sms": send_sms, "push": send_push})
    .then(channel_report)
    .build()
)


# -- A/B test ----------------------------------------------------------------


def variant_of(email: str) -> str:
    """``"a"`` or ``"b"``, stable for an address across runs and machines."""
    return "a" if hashlib.sha256(email.encode()).digest()[0] % 2 == 0 else "b"


@task
def split_ab(recipients: list[Recipient]) -> dict[str, list[Recipient]]:
    groups: dict[str, list[Recipient]] = {"a": [], "b": []}
    for person in recipients:
        groups[variant_of(person.email)].append(person)
    return groups


def _variant_sender(variant: str, template_suffix: str):
    @task(
        name=f"send_variant_{variant}",
        retries=6,
        backoff="200ms",
        max_backoff="3s",
        retry_on=TransientDeliveryError,
    )
    def send_variant(
        groups: dict[str, list[Recipient]], ctx: RunContext
    ) -> dict[str, Any]:
        campaign: Campaign = ctx.output("load_campaign")
        messages = render(
            groups[variant], campaign, campaign.template + template_suffix
        )
        report = deliver(messages, ctx.run_id, campaign.campaign_id)
        return {"variant": variant, "recipients": report.messages}

    return send_variant


@task
def ab_report(outcomes: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: outcome["recipients"] for name, outcome in sorted(outcomes.items())}


ab_test_workflow = (
    Flow("campaign-ab-test")
    .then(load_campaign)
    .then(fetch_recipients)
    .then(split_ab)
    .parallel(
        "variants", {"a": _variant_sender("a", ""), "b": _variant_sender("b", "-b")}
    )
    .then(ab_report)
    .build()
)


# -- batches with a delay between them ---------------------------------------


@task
def into_batches(messages: list[Message]) -> dict[str, Any]:
    batches = [
        messages[i : i + BATCH_SIZE] for i in range(0, len(messages), BATCH_SIZE)
    ]
    return {"pending": batches, "sent": 0, "batches_sent": 0}


@task(retries=6, backoff="200ms", max_backoff="3s", retry_on=TransientDeliveryError)
def send_batch(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    batch, *rest = state["pending"]
    report = deliver(batch, ctx.run_id, ctx.input["campaign_id"])
    return {
        "pending": rest,
        "sent": state["sent"] + report.messages,
        "batches_sent": state["batches_sent"] + 1,
    }


def all_sent(state: dict[str, Any]) -> bool:
    return not state["pending"]


def batched_workflow_with(pause: str) -> Any:
    """The batched campaign with ``pause`` between batches."""
    body = Flow("batch").then(send_batch).delay("rate_limit", pause)
    return (
        Flow("campaign-batched")
        .then(load_campaign)
        .then(fetch_recipients)
        .then(render_messages)
        .then(into_batches)
        .loop("batches", body, until=all_sent, max_iterations=100)
        .build()
    )


batched_workflow = batched_workflow_with("300ms")


# -- a delivery report that arrives from outside -----------------------------


@task
def reconcile(report: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Compare what the campaign sent with what the SMTP server reports."""
    summary = ctx.output("campaign/summarize")
    return {
        "sent": summary["recipients"],
        "accepted_by_server": report["accepted"],
        "deferred_by_server": report["deferred"],
        "all_accounted_for": report["accepted"] >= summary["recipients"],
    }


reported_workflow = (
    Flow("campaign-reported")
    .then(campaign_workflow, name="campaign")
    .wait_for_signal("delivery_report", timeout="10m")
    .then(reconcile)
    .build()
)

registry = WorkflowRegistry(
    [multichannel_workflow, ab_test_workflow, batched_workflow, reported_workflow]
)


def run_extensions(
    folder: Any, *, failure_rate: float = 0.1, out: Any = None
) -> dict[str, Any]:
    """Run the four extensions against a local SMTP server; return their
    statuses and the server's counts."""
    import os
    import sys
    from pathlib import Path

    from .. import CheckpointingRunner, DuckDBBackend
    from .email_campaign import DB_ENV, SMTP_ENV, prepare_database
    from .smtp_server import LocalSMTPServer

    out = out or sys.stdout
    folder = Path(folder)
    data = folder / "campaign.duckdb"
    os.environ[DB_ENV] = str(data)
    prepare_database(data)
    request = {"campaign_id": "spring-sale"}
    seen: dict[str, Any] = {}
    with LocalSMTPServer(failure_rate=failure_rate) as smtp:
        os.environ[SMTP_ENV] = smtp.address
        with CheckpointingRunner(
            DuckDBBackend(folder / "store.duckdb"), inline_wait=1
        ) as runner:
            for label, workflow in (
                ("multichannel", multichannel_workflow),
                ("ab-test", ab_test_workflow),
                ("batched", batched_workflow),
            ):
                before = smtp.accepted_count
                status = runner.run(workflow, f"{label}-001", request)
                seen[label] = status
                seen[f"{label}-accepted"] = smtp.accepted_count - before
                print(
                    f"{workflow.name}: {status.state.value} {status.output}", file=out
                )

            before, deferred = smtp.accepted_count, smtp.handler.deferred
            waiting = runner.run(reported_workflow, "reported-001", request)
            print(
                f"{reported_workflow.name}: {waiting.state.value} for its report",
                file=out,
            )
            counts = {
                "accepted": smtp.accepted_count - before,
                "deferred": smtp.handler.deferred - deferred,
            }
            runner.send_signal("reported-001", "delivery_report", counts)
            seen["reported"] = runner.run(reported_workflow, "reported-001", request)
            seen["reported-waiting"] = waiting
            print(
                f"{reported_workflow.name}: {seen['reported'].state.value} "
                f"{seen['reported'].output}",
                file=out,
            )
        seen["deliveries"] = list(smtp.handler.accepted)
    return seen
