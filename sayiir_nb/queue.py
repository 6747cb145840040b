"""Putting runs in a backend's queue for workers, from any process."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from .backends.base import RunRecord
from .codec import Codec, JsonCodec
from .errors import (
    CodecError,
    DefinitionError,
    DefinitionMismatchError,
    InputMismatchError,
    RunBusyError,
    RunIdError,
)
from .status import RunState

if TYPE_CHECKING:
    from .backends.base import Backend
    from .workflow import Workflow


def enqueue(
    backend: Backend,
    workflow: str | Workflow,
    run_id: str,
    input: Any = None,
    *,
    codec: Codec | None = None,
    restart: bool = False,
) -> str:
    """Store run ``run_id`` of ``workflow`` as pending, for a worker to run.

    The same rules as :meth:`CheckpointingRunner.run` apply: enqueueing a run
    id that exists with the same input does nothing (whatever its state), and
    with a different input or workflow raises.

    Parameters
    ----------
    workflow
        The workflow, or only its name (a worker's registry then supplies the
        definition: the run takes whatever definition the worker has).
    input
        The input of the first step, stored with ``codec`` (JSON by default).
    restart
        Discard what the run id has stored (checkpoints, attempts, signals)
        and queue it afresh, also with another input or definition; refused
        while a worker executes it (cancel it first).

    Returns
    -------
    str
        The run id, for :meth:`CheckpointingRunner.status` and ``view``.

    Raises
    ------
    InputMismatchError, DefinitionMismatchError
        If the run id exists with another input or another workflow.
    RunBusyError
        With ``restart``, if the run is being executed.
    """
    check_run_id(run_id)
    from .workflow import Workflow

    name = workflow.name if isinstance(workflow, Workflow) else workflow
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(
            f"enqueue needs a workflow (built with Flow(...).build()) or a "
            f"workflow's name; got {workflow!r}."
        )
    record = _pending(workflow, run_id, input, codec or JsonCodec())
    if restart:
        _start_over(backend, record)
        return run_id
    stored, created = backend.create_run(record)
    if not created:
        check_compatible(
            stored,
            record.workflow_name,
            record.definition_hash,
            record.input_json,
            record.input_digest,
        )
    return run_id


def _pending(
    workflow: str | Workflow, run_id: str, input: Any, codec: Codec
) -> RunRecord:
    """The record of a run waiting in the queue (no definition for a
    workflow given by name: the worker that first runs it supplies it)."""
    if isinstance(workflow, str):
        name, definition = workflow, ""
    else:
        name, definition = workflow.name, workflow.definition_hash
    input_json = encode_value(codec, input, f"the input of run {run_id!r}", "input")
    now = time.time()
    return RunRecord(
        run_id=run_id,
        workflow_name=name,
        definition_hash=definition,
        state=RunState.PENDING,
        input_json=input_json,
        input_digest=input_digest(input_json),
        codec=codec.name,
        created_epoch=now,
        updated_epoch=now,
    )


def _start_over(backend: Backend, record: RunRecord) -> None:
    lease = backend.claim(record.run_id, "enqueue/restart", 30.0)
    if lease is None:
        raise RunBusyError(
            f"run {record.run_id!r} is being executed (another owner holds its "
            "lease); cancel it first, then enqueue it again with restart=True."
        )
    try:
        if backend.get_run(record.run_id) is None:
            backend.create_run(record)
        else:
            backend.reset_run(lease, record)
    finally:
        backend.release(lease)


class Enqueueing:
    """Gives a backend ``enqueue_workflow``, the method form of
    :func:`enqueue`."""

    def enqueue_workflow(
        self,
        workflow: str | Workflow,
        run_id: str,
        input: Any = None,
        *,
        codec: Codec | None = None,
        restart: bool = False,
    ) -> str:
        """Put a run in the queue for a worker; see :func:`sayiir_nb.enqueue`."""
        backend: Backend = self  # type: ignore[assignment]
        return enqueue(backend, workflow, run_id, input, codec=codec, restart=restart)


def check_compatible(
    run: RunRecord, name: str, definition: str, input_json: str, digest: str
) -> None:
    """Refuse to continue ``run`` as workflow ``name`` with ``definition`` and
    this input, if they differ from what it was started with (an empty
    definition on either side matches any)."""
    same_definition = (
        not definition or not run.definition_hash or run.definition_hash == definition
    )
    if run.workflow_name != name or not same_definition:
        raise DefinitionMismatchError(
            f"run {run.run_id!r} was started by workflow {run.workflow_name!r} "
            f"with definition {run.definition_hash[:12] or '(any)'}, but workflow "
            f"{name!r} now has definition {definition[:12] or '(any)'}. "
            "Use a new run id, or pass restart=True to start this run over."
        )
    if run.input_digest != digest:
        raise InputMismatchError(
            f"run {run.run_id!r} exists with input {_preview(run.input_json)}, "
            f"not {_preview(input_json)}. Use a new run id, or pass restart=True "
            "to start this run over with the new input."
        )


def check_run_id(run_id: object) -> None:
    if not isinstance(run_id, str) or not run_id.strip():
        raise RunIdError(
            f"a run id must be a non-empty string, such as 'campaign-001'; got "
            f"{run_id!r} ({type(run_id).__name__})."
        )
    if len(run_id) > 200:
        raise RunIdError(
            f"run id {run_id[:40]!r}... is {len(run_id)} characters long; keep run "
            "ids to 200 characters."
        )
    if "\x00" in run_id:
        raise RunIdError(
            f"run id {run_id!r} contains a NUL character, which no store keeps; "
            "remove it."
        )
    try:
        run_id.encode("utf-8")
    except UnicodeEncodeError:
        raise RunIdError(
            f"run id {run_id!r} is not valid Unicode text (it holds a lone "
            "surrogate); use plain text."
        ) from None


def encode_value(codec: Codec, value: Any, what: str, root: str) -> str:
    """Encode a value given by the user; a refusal names ``what``."""
    try:
        return codec.encode(value)
    except CodecError as error:
        raise CodecError(
            f"{what} cannot be stored: {root}{error.path} is of type "
            f"{error.type_name}; {error.reason}",
            path=error.path,
            type_name=error.type_name,
            reason=error.reason,
        ) from None


def input_digest(input_json: str) -> str:
    """A digest of the input that equal values share, whatever the order of
    their dict keys or set items."""
    canonical = json.dumps(
        _canonical(json.loads(input_json)), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(tree: Any) -> Any:
    if isinstance(tree, list):
        return [_canonical(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if tree.get("$") == "dict":
        pairs = [[_canonical(k), _canonical(v)] for k, v in tree["v"]]
        pairs.sort(key=lambda pair: json.dumps(pair[0], sort_keys=True))
        return {"$": "dict", "v": pairs}
    return {key: _canonical(item) for key, item in tree.items()}


def _preview(encoded: str, limit: int = 80) -> str:
    return encoded if len(encoded) <= limit else encoded[: limit - 3] + "..."
