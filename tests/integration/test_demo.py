"""The email-campaign demo, end to end, on a real local SMTP server."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import duckdb

from sayiir_nb import RunState
from sayiir_nb.examples import email_campaign
from sayiir_nb.examples.email_campaign import DATA, run_demo

ROOT = Path(__file__).resolve().parents[2]


def subscribers() -> list[dict[str, str]]:
    with (DATA / "subscribers.csv").open() as source:
        return list(csv.DictReader(source))


def test_shipped_data_is_made_up_and_varied():
    rows = subscribers()
    assert 200 <= len(rows) <= 500
    assert all(r["email"].endswith("@example.com") for r in rows)
    assert len({r["email"] for r in rows}) == len(rows)
    assert any(r["active"] == "false" for r in rows)
    assert {"en", "fr", "de", "es", ""} <= {r["language"] for r in rows}


def test_campaign_reaches_every_active_recipient_once(tmp_path):
    out = io.StringIO()
    seen = run_demo(tmp_path, failure_rate=0.2, out=out)
    active = sum(r["active"] == "true" for r in subscribers())

    assert seen["status"].state is RunState.COMPLETED
    assert seen["active"] == active
    assert seen["accepted_first"] == active
    assert seen["deferred"] > 0
    assert seen["retried"] >= 1
    delivered = [d.recipients[0] for d in seen["deliveries"]]
    assert len(delivered) == len(set(delivered)) == active

    assert seen["again"].state is RunState.COMPLETED
    assert seen["again"].output == seen["status"].output
    assert seen["accepted_again"] == 0

    with duckdb.connect(str(tmp_path / "campaign.duckdb")) as conn:
        ledger = conn.execute("SELECT count(DISTINCT email) FROM deliveries").fetchone()
    assert ledger == (active,)
    text = out.getvalue()
    assert f"accepted by the SMTP server in this run: {active}" in text
    assert str(tmp_path / "store.duckdb") in text


def test_messages_are_personalised_in_the_recipients_language(tmp_path):
    seen = run_demo(tmp_path, failure_rate=0.0, out=io.StringIO())
    by_address = {d.recipients[0]: d.message for d in seen["deliveries"]}
    french = next(
        r for r in subscribers() if r["language"] == "fr" and r["active"] == "true"
    )
    message = by_address[french["email"]]
    assert message["Subject"].startswith(f"{french['first_name']}, le printemps")
    assert message["Content-Language"] == "fr"
    body = message.get_payload(decode=True).decode()
    assert french["city"] in body
    assert f"SPRING-SALE-{int(french['subscriber_id']):04d}" in body
    no_language = next(
        r for r in subscribers() if r["language"] == "" and r["active"] == "true"
    )
    assert by_address[no_language["email"]]["Content-Language"] == "en"


def test_demo_command_twice(tmp_path):
    command = [
        sys.executable,
        "-m",
        "sayiir_nb.examples.email_campaign",
        "--folder",
        str(tmp_path),
        "--failure-rate",
        "0.1",
    ]
    first = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert "run campaign-001: completed" in first.stdout
    second = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "accepted by the SMTP server in this run: 0" in second.stdout
    assert "had completed before" in second.stdout


def test_registry_lists_the_workflow():
    assert (
        email_campaign.registry.get("email-campaign")
        is email_campaign.campaign_workflow
    )


def test_the_four_extensions(tmp_path):
    from sayiir_nb.examples.extensions import run_extensions, variant_of

    seen = run_extensions(tmp_path, failure_rate=0.1, out=io.StringIO())
    active = [r for r in subscribers() if r["active"] == "true"]
    n = len(active)

    multichannel = seen["multichannel"]
    assert multichannel.state is RunState.COMPLETED
    assert multichannel.output == {"email": n, "sms": n, "push": n}
    assert seen["multichannel-accepted"] == n

    ab = seen["ab-test"]
    expected_a = sum(variant_of(r["email"]) == "a" for r in active)
    assert ab.output == {"a": expected_a, "b": n - expected_a}
    assert seen["ab-test-accepted"] == n
    b_person = next(r for r in active if variant_of(r["email"]) == "b")
    subjects = [
        d.message["Subject"]
        for d in seen["deliveries"]
        if d.recipients == [b_person["email"]]
    ]
    assert f"{b_person['first_name']}, your 20% spring code is inside" in subjects

    batched = seen["batched"]
    assert batched.output["sent"] == n
    assert batched.output["batches_sent"] == (n + 49) // 50
    delays = [s for s in batched.steps if s.step_id.endswith("/rate_limit")]
    assert len(delays) == batched.output["batches_sent"]

    assert seen["reported-waiting"].state is RunState.WAITING
    reported = seen["reported"]
    assert reported.state is RunState.COMPLETED
    assert reported.output["sent"] == n
    assert reported.output["accepted_by_server"] == n
    assert reported.output["all_accounted_for"] is True
