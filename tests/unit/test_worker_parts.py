"""Small parts of the worker machinery: task limits as options, worker
arguments, the command's registry loading, DSNs in logs."""

from __future__ import annotations

import pytest

from sayiir_nb import DefinitionError, Flow, InMemoryBackend, PooledWorker, task
from sayiir_nb.backends.postgres_rows import safe_dsn
from sayiir_nb.cli import load_registry
from sayiir_nb.errors import SayiirError


@pytest.mark.parametrize(
    ("given", "per_s"),
    [("10/s", 10.0), ("300/m", 5.0), ("1800/h", 0.5), (2, 2.0), (" 2.5 / sec", 2.5)],
)
def test_rate_limits_are_read_as_attempts_per_second(given, per_s) -> None:
    @task(rate_limit=given)
    def send(x):
        return x

    assert send.options.rate_per_s == per_s


@pytest.mark.parametrize("bad", ["10", "ten/s", "0/s", "-1/s", 0, True, "5/day"])
def test_a_bad_rate_limit_is_refused_with_the_task_named(bad) -> None:
    with pytest.raises(DefinitionError, match=r"rate_limit of task 'send'"):
        task(lambda x: x, name="send", rate_limit=bad)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_a_bad_max_concurrency_is_refused(bad) -> None:
    with pytest.raises(DefinitionError, match=r"max_concurrency of task 'send'"):
        task(lambda x: x, name="send", max_concurrency=bad)


def test_limits_do_not_change_the_definition_hash() -> None:
    @task
    def send(x):
        return x

    plain = Flow("f").then(send).build()
    limited = Flow("f").then(send.with_options(rate_limit="5/s")).build()
    assert plain.definition_hash == limited.definition_hash


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "a%b"}, "worker_id"),
        ({"worker_id": "host/2"}, "worker_id"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.0}, "concurrency"),
        ({"lease": 0}, "lease"),
        ({"lease": 0.05}, r"lease 0.05s is too short .* at least 0.5s"),
        ({"poll": 0}, r"poll 0s must be longer than zero"),
    ],
)
def test_bad_worker_arguments_are_refused(kwargs, match) -> None:
    arguments = {"worker_id": "w", "concurrency": 1, **kwargs}
    worker_id = arguments.pop("worker_id")
    with pytest.raises(DefinitionError, match=match):
        PooledWorker(worker_id, InMemoryBackend(), [], **arguments)


def test_a_registry_given_as_a_string_is_refused_with_what_to_pass() -> None:
    with pytest.raises(DefinitionError, match=r"string 'app:registry'.*load_registry"):
        PooledWorker("w", InMemoryBackend(), "app:registry")


@pytest.mark.parametrize(
    ("workflow", "run_id", "match"),
    [
        (None, "r-1", r"needs a workflow .*got None"),
        ("", "r-1", r"needs a workflow"),
        ("few", "a\x00b", r"run id 'a\\x00b' contains a NUL character"),
        ("few", "bad\ud800", r"run id 'bad\\ud800' is not valid Unicode text"),
    ],
)
def test_enqueue_names_a_bad_workflow_or_run_id(workflow, run_id, match) -> None:
    backend = InMemoryBackend()
    with pytest.raises(SayiirError, match=match):
        backend.enqueue_workflow(workflow, run_id, 1)
    assert backend.list_runs() == []


def test_the_command_loads_registries_and_explains_bad_app_names() -> None:
    registry = load_registry("tests.integration.workers_app:registry")
    assert sorted(registry.names()) == ["few", "slow-chain"]
    single = load_registry("tests.integration.workers_app:few")
    assert single.names() == ["few"]
    with pytest.raises(SayiirError, match="must look like 'package.module:registry'"):
        load_registry("tests.integration.workers_app")
    with pytest.raises(SayiirError, match="cannot import"):
        load_registry("no_such_module_here:registry")
    with pytest.raises(SayiirError, match="has no 'nothing'"):
        load_registry("tests.integration.workers_app:nothing")
    with pytest.raises(SayiirError, match=r"calling mark\(\) failed .* no arguments"):
        load_registry("tests.integration.workers_app:mark")  # it needs one


def test_passwords_never_reach_a_log_line() -> None:
    assert safe_dsn("postgresql://app:s3cret@db/x") == "postgresql://app:***@db/x"
    assert "s3cret" not in safe_dsn("host=db user=app password=s3cret dbname=x")
    assert safe_dsn("postgresql://app@db/x") == "postgresql://app@db/x"
    # a password holding '@' or spaces, quoted, or in a URL's query
    assert safe_dsn("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    quoted = safe_dsn("host=h password='s3 cret' dbname=x")
    assert quoted == "host=h password=*** dbname=x"
    assert safe_dsn("postgresql:///db?host=/tmp&password=pw&x=1") == (
        "postgresql:///db?host=/tmp&password=***&x=1"
    )


def test_the_command_is_installed_and_documents_its_options() -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    command = shutil.which("sayiir-nb") or str(
        Path(sys.executable).parent / "sayiir-nb"
    )
    done = subprocess.run(
        [command, "worker", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for option in ("--dsn", "--app", "--concurrency", "--worker-id", "--grace"):
        assert option in done.stdout
    assert "default: sayiir" in done.stdout  # the schema's default is shown
    missing = subprocess.run(
        [command, "worker", "--app", "x:y"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert missing.returncode == 2 and "give --dsn" in missing.stderr
