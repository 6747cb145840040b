"""The email campaign: recipients from a database, personalised templates,
delivery through SMTP with retries.

Run the demo with ``python -m sayiir_nb.examples.email_campaign`` (or
``make demo``). It starts a local SMTP server that defers a share of the
deliveries with a transient 4xx answer, runs the campaign as a checkpointed
workflow stored in DuckDB, prints what happened, and then runs the same run id
again to show that a completed run returns its stored result and sends
nothing.

Workers import this module to find the workflow: ``registry`` lists it.

Where things are read from, so that the tasks also work in another process:
``SAYIIR_NB_DEMO_DB`` (the campaign database, a DuckDB file built from the
CSV files shipped in ``data/``) and ``SAYIIR_NB_DEMO_SMTP`` (``host:port``).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from .. import (
    CheckpointingRunner,
    DuckDBBackend,
    Flow,
    RunContext,
    RunState,
    WorkflowRegistry,
    task,
)

DB_ENV = "SAYIIR_NB_DEMO_DB"
SMTP_ENV = "SAYIIR_NB_DEMO_SMTP"
DATA = resources.files("sayiir_nb.examples") / "data"


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    name: str
    template: str
    sender: str
    discount_percent: int
    ends_on: date


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    first_name: str
    email: str
    language: str
    city: str
    signed_up: date


@dataclass(frozen=True)
class Message:
    to: str
    sender: str
    subject: str
    body: str
    language: str


@dataclass(frozen=True)
class DeliveryReport:
    campaign_id: str
    messages: int
    sent_by_final_attempt: int
    sent_by_earlier_attempts: int


class TransientDeliveryError(Exception):
    """The SMTP server deferred some deliveries (4xx); sending again later
    should succeed. Carries how many were deferred."""

    def __init__(self, deferred: int, attempted: int, sample: str) -> None:
        super().__init__(
            f"{deferred} of {attempted} deliveries deferred by the SMTP server "
            f"(for example: {sample}); the next attempt sends only those"
        )
        self.deferred = deferred


# -- the campaign database ---------------------------------------------------


def database_path() -> Path:
    value = os.environ.get(DB_ENV)
    if not value:
        raise RuntimeError(
            f"the campaign database is not configured: set {DB_ENV} to a DuckDB "
            "file path (the demo does this; see prepare_database())."
        )
    return Path(value)


def prepare_database(path: Path) -> None:
    """Create the campaign database from the CSV files if it is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as conn:
        for table in ("subscribers", "campaigns"):
            source = str(DATA / f"{table}.csv")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} AS "
                f"SELECT * FROM read_csv(?, header = true)",
                [source],
            )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (run_id VARCHAR, "
            "email VARCHAR, accepted_at TIMESTAMPTZ DEFAULT now())"
        )


def active_subscribers(path: Path) -> int:
    with duckdb.connect(str(path)) as conn:
        row = conn.execute("SELECT count(*) FROM subscribers WHERE active").fetchone()
    return int(row[0]) if row else 0


def clear_deliveries(path: Path, run_id: str) -> None:
    with duckdb.connect(str(path)) as conn:
        conn.execute("DELETE FROM deliveries WHERE run_id = ?", [run_id])


# -- the tasks ---------------------------------------------------------------


@task
def load_campaign(request: dict[str, Any]) -> Campaign:
    """Read the campaign named in the run's input."""
    campaign_id = request["campaign_id"]
    with duckdb.connect(str(database_path())) as conn:
        row = conn.execute(
            "SELECT campaign_id, name, template, sender, discount_percent, ends_on "
            "FROM campaigns WHERE campaign_id = ?",
            [campaign_id],
        ).fetchone()
    if row is None:
        raise LookupError(f"no campaign {campaign_id!r} in {database_path()}")
    return Campaign(*row[:4], int(row[4]), row[5])


@task
def fetch_recipients(campaign: Campaign) -> list[Recipient]:
    """Active subscribers, in a stable order."""
    with duckdb.connect(str(database_path())) as conn:
        rows = conn.execute(
            "SELECT subscriber_id, first_name, email, coalesce(language, ''), city, "
            "signed_up FROM subscribers WHERE active ORDER BY subscriber_id"
        ).fetchall()
    return [Recipient(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


@task
def render_messages(recipients: list[Recipient], ctx: RunContext) -> list[Message]:
    """One personalised message per recipient, in the recipient's language
    when the campaign has a template for it (English otherwise)."""
    campaign: Campaign = ctx.output("load_campaign")
    return render(recipients, campaign, campaign.template)


def render(
    recipients: list[Recipient], campaign: Campaign, template: str
) -> list[Message]:
    """Render ``template`` (a folder of ``<language>.txt`` Jinja2 files whose
    first line is ``Subject: ...``) for every recipient."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sayiir_nb.examples", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    available = set(env.list_templates())
    today = date(2027, 3, 21)
    messages = []
    for person in recipients:
        language = person.language or "en"
        name = f"{template}/{language}.txt"
        if name not in available:
            language, name = "en", f"{template}/en.txt"
        text = env.get_template(name).render(
            first_name=person.first_name,
            city=person.city,
            discount_percent=campaign.discount_percent,
            ends_on=campaign.ends_on.isoformat(),
            code=f"{campaign.campaign_id.upper()}-{person.subscriber_id:04d}",
            years_with_us=max(0, (today - person.signed_up).days // 365),
            sender_name=campaign.name,
        )
        subject_line, _, body = text.partition("\n\n")
        subject = subject_line.removeprefix("Subject: ").strip()
        messages.append(Message(person.email, campaign.sender, subject, body, language))
    return messages


@task(
    retries=6,
    backoff="200ms",
    max_backoff="3s",
    jitter=0.2,
    retry_on=TransientDeliveryError,
    timeout="5m",
)
def send_messages(messages: list[Message], ctx: RunContext) -> DeliveryReport:
    """Send every message not yet accepted, recording each acceptance."""
    return deliver(messages, ctx.run_id, ctx.input["campaign_id"])


def deliver(messages: list[Message], run_id: str, campaign_id: str) -> DeliveryReport:
    """Send the messages of ``run_id`` that the SMTP server has not accepted
    yet, recording each acceptance.

    The deliveries table is the run's ledger: a retry sends only what the
    SMTP server has not accepted yet. A crash between the server's acceptance
    and the ledger's insert sends that one message again (at-least-once).
    Raises :class:`TransientDeliveryError` if the server deferred any.
    """
    host, _, port = os.environ.get(SMTP_ENV, "127.0.0.1:8025").partition(":")
    with duckdb.connect(str(database_path())) as ledger:
        done = {
            row[0]
            for row in ledger.execute(
                "SELECT email FROM deliveries WHERE run_id = ?", [run_id]
            ).fetchall()
        }
        pending = [m for m in messages if m.to not in done]
        deferred: list[str] = []
        with smtplib.SMTP(host, int(port), timeout=10) as smtp:
            for message in pending:
                try:
                    smtp.send_message(_email(message))
                except smtplib.SMTPResponseException as error:
                    if 400 <= error.smtp_code < 500:
                        deferred.append(f"{message.to}: {error.smtp_code}")
                        continue
                    raise
                ledger.execute(
                    "INSERT INTO deliveries (run_id, email) VALUES (?, ?)",
                    [run_id, message.to],
                )
    if deferred:
        raise TransientDeliveryError(len(deferred), len(pending), deferred[0])
    return DeliveryReport(
        campaign_id=campaign_id,
        messages=len(messages),
        sent_by_final_attempt=len(pending),
        sent_by_earlier_attempts=len(messages) - len(pending),
    )


@task
def summarize(report: DeliveryReport, ctx: RunContext) -> dict[str, Any]:
    """The campaign's outcome, as the run's output."""
    languages: dict[str, int] = {}
    for message in ctx.output("render_messages"):
        languages[message.language] = languages.get(message.language, 0) + 1
    return {
        "campaign_id": report.campaign_id,
        "recipients": report.messages,
        "sent_by_final_attempt": report.sent_by_final_attempt,
        "sent_by_earlier_attempts": report.sent_by_earlier_attempts,
        "languages": dict(sorted(languages.items())),
    }


def _email(message: Message) -> EmailMessage:
    email = EmailMessage()
    email["From"] = message.sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email.set_content(message.body)
    email["Content-Language"] = message.language  # after set_content, which resets it
    return email


campaign_workflow = (
    Flow("email-campaign")
    .then(load_campaign)
    .then(fetch_recipients)
    .then(render_messages)
    .then(send_messages)
    .then(summarize)
    .build()
)

registry = WorkflowRegistry([campaign_workflow])


# -- the demo ----------------------------------------------------------------


def run_demo(
    folder: Path,
    *,
    run_id: str = "campaign-001",
    campaign_id: str = "spring-sale",
    failure_rate: float = 0.15,
    restart: bool = False,
    out: Any = None,
) -> dict[str, Any]:
    """Run the campaign against a local SMTP server; return what was seen."""
    from .smtp_server import LocalSMTPServer

    out = out or sys.stdout
    store = folder / "store.duckdb"
    data = folder / "campaign.duckdb"
    os.environ[DB_ENV] = str(data)
    prepare_database(data)
    if restart:
        clear_deliveries(data, run_id)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    request = {"campaign_id": campaign_id}
    with LocalSMTPServer(failure_rate=failure_rate) as smtp:
        os.environ[SMTP_ENV] = smtp.address
        with CheckpointingRunner(DuckDBBackend(store)) as runner:
            say(f"SMTP server on {smtp.address}, deferring {failure_rate:.0%} of mail")
            status = runner.run(campaign_workflow, run_id, request, restart=restart)
            accepted_first = smtp.accepted_count
            attempts = runner.backend.attempts(run_id)
            again = runner.run(campaign_workflow, run_id, request)
            accepted_again = smtp.accepted_count - accepted_first

    active = active_subscribers(data)
    retried = [a for a in attempts if a.step_id == "send_messages" and a.attempt > 1]
    say(f"run {run_id}: {status.state.value}")
    for step in status.steps:
        took = f"{step.duration_s:.3f}s" if step.duration_s is not None else "-"
        say(f"  {step.step_id:<17} {step.state:<10} attempts={step.attempts}  {took}")
    if status.output:
        say(f"output: {status.output}")
    say(f"active recipients: {active}")
    say(f"accepted by the SMTP server in this run: {accepted_first}")
    waits = ", ".join(f"{a.wait_before_s:.2f}s" for a in retried) or "none"
    say(f"retried attempts of send_messages: {len(retried)} (waits: {waits})")
    say(f"deferred answers (451) from the server: {smtp.handler.deferred}")
    same = again.output == status.output
    say(
        f"same run id again: {again.state.value}, same output: {same}, "
        f"messages sent: {accepted_again}"
    )
    say(f"store (runs, checkpoints, attempts): {store}")
    say(f"campaign database: {data}")
    return {
        "status": status,
        "again": again,
        "active": active,
        "accepted_first": accepted_first,
        "accepted_again": accepted_again,
        "retried": len(retried),
        "deferred": smtp.handler.deferred,
        "deliveries": list(smtp.handler.accepted),
        "store": store,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the email-campaign demo.")
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path("sayiir-demo"),
        help="where the store and campaign database live (default: ./sayiir-demo)",
    )
    parser.add_argument("--run-id", default="campaign-001")
    parser.add_argument(
        "--campaign", default="spring-sale", choices=["spring-sale", "welcome"]
    )
    parser.add_argument(
        "--failure-rate",
        type=float,
        default=0.15,
        help="share of deliveries the SMTP server defers with 451",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start the run over (and forget its deliveries)",
    )
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="also run the four extensions (SMS and push in parallel, an A/B "
        "split, batches with a delay, a delivery report waiting for a signal)",
    )
    args = parser.parse_args(argv)
    seen = run_demo(
        args.folder.resolve(),
        run_id=args.run_id,
        campaign_id=args.campaign,
        failure_rate=args.failure_rate,
        restart=args.restart,
    )
    status = seen["status"]
    if status.state.value != "completed":
        return 1
    if seen["accepted_first"] == 0:
        print(
            f"(run {args.run_id} had completed before: its stored result is shown and "
            "nothing was sent; pass --restart or another --run-id to send again)"
        )
    if args.extensions:
        from .extensions import run_extensions

        print("\nextensions:")
        more = run_extensions(args.folder.resolve(), failure_rate=args.failure_rate)
        if any(
            getattr(v, "state", None) not in (None, RunState.COMPLETED)
            for k, v in more.items()
            if k != "reported-waiting"
        ):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
