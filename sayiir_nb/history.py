"""Run history as pandas DataFrames and SQL.

Every backend offers the same four views, queried with DuckDB SQL:

``runs``
    one row per run;
``steps``
    one row per step of a run that has at least one attempt;
``attempts``
    one row per attempt (a retry waiting for its backoff included, with state
    ``scheduled``);
``signals``
    one row per signal sent to a run.

The columns are listed in ``docs/history.md``. Times are time-zone aware (UTC);
durations are seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.views import VIEW_NAMES
from .codec import Codec, JsonCodec
from .duration import Duration, to_seconds
from .errors import RunNotFoundError, SayiirError
from .status import RunState

if TYPE_CHECKING:
    import pandas as pd

    from .backends.base import Backend

FINISHED_STATES = (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)
RunIds = str | Iterable[str] | None
Moment = datetime | str | Duration | None


class History:
    """Read what the backend recorded: runs, steps, attempts, signals.

    Reading works while runs are going, from any thread of the process that
    holds the store. To analyse a DuckDB store from another process, export it
    with :meth:`export_parquet` (or copy the file while no run writes to it).

    Parameters
    ----------
    backend
        The backend to read; ``runner.history`` passes the runner's.
    codec
        Decodes outputs for :meth:`outputs` and ``steps(outputs=True)``.
    """

    def __init__(self, backend: Backend, codec: Codec | None = None) -> None:
        self.backend = backend
        self.codec = codec or JsonCodec()

    def __repr__(self) -> str:
        return f"History({self.backend!r})"

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a DuckDB SQL query over the views ``runs``, ``steps``,
        ``attempts`` and ``signals``; return the result as a DataFrame.

        Meant for reading. On a DuckDB store the query runs on the store's own
        connection, so a statement that writes changes the store directly,
        around the runner's leases: leave the ``sayiir_*`` tables to the
        runner."""
        with self.backend.reading() as conn:
            relation = conn.sql(query, params=list(params or ()) or None)
            return _frame(relation)

    def runs(
        self,
        *,
        workflow: str | None = None,
        state: str | RunState | Iterable[str | RunState] | None = None,
        since: Moment = None,
        until: Moment = None,
    ) -> pd.DataFrame:
        """All runs, newest first, filtered by workflow name, state(s) and
        creation time (``since``/``until`` take a datetime, an ISO string, or a
        duration meaning "that long ago": ``since="24h"``)."""
        where, params = [], []
        if workflow is not None:
            where.append("workflow_name = ?")
            params.append(workflow)
        states = _states(state)
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        for bound, op in ((since, ">="), (until, "<")):
            if bound is not None:
                where.append(f"created_at {op} to_timestamp(?)")
                params.append(_epoch(bound))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.sql(f"SELECT * FROM runs{clause} ORDER BY created_at DESC", params)

    def steps(self, run_id: RunIds = None, *, outputs: bool = False) -> pd.DataFrame:
        """The steps of one run, of several, or of all; with ``outputs=True``
        a column ``output`` holds each completed step's decoded output."""
        clause, params = _run_filter(run_id)
        frame = self.sql(
            f"SELECT * FROM steps{clause} "
            "ORDER BY run_id, started_at NULLS LAST, step_id",
            params,
        )
        if outputs:
            stored: dict[str, dict[str, str]] = {}
            for run in set(frame["run_id"]):
                snapshot = self.backend.load(run)
                stored[run] = snapshot.checkpoints if snapshot else {}
            frame["output"] = [
                self.codec.decode(stored[run][step]) if step in stored[run] else None
                for run, step in zip(frame["run_id"], frame["step_id"], strict=True)
            ]
        return frame

    def attempts(
        self, run_id: RunIds = None, *, task: str | None = None
    ) -> pd.DataFrame:
        """Every attempt of one run, of several, or of all; optionally of one
        task only."""
        clause, params = _run_filter(run_id)
        if task is not None:
            clause += (" AND " if clause else " WHERE ") + "task_name = ?"
            params.append(task)
        return self.sql(
            f"SELECT * FROM attempts{clause} ORDER BY run_id, started_at NULLS LAST, "
            "step_id, attempt",
            params,
        )

    def signals(self, run_id: RunIds = None) -> pd.DataFrame:
        """Signals sent to runs."""
        clause, params = _run_filter(run_id)
        return self.sql(f"SELECT * FROM signals{clause} ORDER BY sent_at", params)

    def task_summary(
        self, *, workflow: str | None = None, since: Moment = None
    ) -> pd.DataFrame:
        """Per task: runs, steps, attempts, success rate, retry rate, mean,
        median and 95th percentile of attempt durations, and the time lost to
        failed attempts and backoff waits. Routes, delays and signal waits
        (task names ``(route)``, ``(delay)``, ``(signal)``) are left out."""
        where, params = (
            [
                "state <> 'scheduled'",
                "task_name NOT IN ('(route)', '(delay)', '(signal)')",
            ],
            [],
        )
        if workflow is not None:
            where.append("workflow_name = ?")
            params.append(workflow)
        if since is not None:
            where.append("started_at >= to_timestamp(?)")
            params.append(_epoch(since))
        clause = " AND ".join(where)
        return self.sql(_SUMMARY.format(where=clause), params)

    def outputs(self, run_id: str) -> dict[str, Any]:
        """The decoded outputs of a run's completed steps, by step id."""
        snapshot = self.backend.load(run_id)
        if snapshot is None:
            raise RunNotFoundError(f"no run with id {run_id!r} in {self.backend!r}.")
        return {
            step: self.codec.decode(text) for step, text in snapshot.checkpoints.items()
        }

    def export_parquet(self, folder: str | Path) -> dict[str, Path]:
        """Write the four views as Parquet files into ``folder`` (created if
        missing), for analysis in another process; return the paths."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths = {name: (target / f"{name}.parquet").resolve() for name in VIEW_NAMES}
        with self.backend.reading() as conn:
            for name, path in paths.items():
                conn.sql(f"SELECT * FROM {name}").write_parquet(str(path))
        return paths

    def delete_runs(
        self,
        *,
        older_than: Duration | None = None,
        states: Iterable[str | RunState] = FINISHED_STATES,
    ) -> int:
        """Delete finished runs (and their steps, attempts and signals) that
        were last updated more than ``older_than`` ago; return how many.

        Only completed, failed and cancelled runs are deleted: a run that is
        pending, running, waiting, paused or interrupted is always kept.
        """
        chosen = _states(states) or []
        unfinished = [s for s in chosen if RunState(s) not in FINISHED_STATES]
        if unfinished:
            raise SayiirError(
                f"delete_runs keeps unfinished runs; remove {', '.join(unfinished)} "
                "from states (allowed: completed, failed, cancelled)."
            )
        if not chosen:
            return 0
        cutoff = time.time() - (
            to_seconds(older_than, what="older_than") if older_than else 0
        )
        frame = self.sql(
            f"SELECT run_id FROM runs WHERE state IN ({', '.join('?' * len(chosen))}) "
            "AND updated_at <= to_timestamp(?)",
            [*chosen, cutoff],
        )
        return self.backend.delete_runs(
            list(frame["run_id"]), updated_before_epoch=cutoff
        )


_SUMMARY = """
WITH a AS (SELECT * FROM attempts WHERE {where}),
s AS (SELECT * FROM steps WHERE (run_id, step_id) IN (SELECT run_id, step_id FROM a)),
by_step AS (
    SELECT
        task_name,
        count(DISTINCT run_id)::INTEGER AS runs,
        count(*)::INTEGER AS steps,
        avg((state = 'succeeded')::INTEGER) AS success_rate,
        avg((retries > 0)::INTEGER) AS retry_rate,
        sum(backoff_s) AS backoff_s,
        sum(failed_attempts_s) AS failed_attempts_s
    FROM s GROUP BY task_name
),
by_attempt AS (
    SELECT
        task_name,
        count(*)::INTEGER AS attempts,
        count(*) FILTER (WHERE state IN ('failed', 'timed_out'))::INTEGER AS failures,
        avg(duration_s) FILTER (WHERE state <> 'interrupted') AS mean_s,
        quantile_cont(duration_s, 0.5) FILTER (WHERE state <> 'interrupted') AS p50_s,
        quantile_cont(duration_s, 0.95) FILTER (WHERE state <> 'interrupted') AS p95_s
    FROM a GROUP BY task_name
)
SELECT
    task_name, runs, steps, attempts, failures, success_rate, retry_rate,
    mean_s, p50_s, p95_s, failed_attempts_s, backoff_s,
    failed_attempts_s + backoff_s AS time_lost_s
FROM by_step JOIN by_attempt USING (task_name)
ORDER BY task_name
"""


def _frame(relation: Any) -> pd.DataFrame:
    """The relation as a DataFrame, through Arrow when pyarrow is installed
    (several times faster than DuckDB's own conversion), with the same dtypes:
    integer columns holding NULLs become pandas' nullable integers."""
    import pandas as pd

    if relation is None:
        return pd.DataFrame()
    try:
        import pyarrow as pa
    except ImportError:
        return relation.df()
    table = relation.to_arrow_table()
    nullable = {
        field.name
        for field in table.schema
        if pa.types.is_integer(field.type) and table.column(field.name).null_count
    }
    frame = table.to_pandas()
    for name in nullable:
        frame[name] = table.column(name).to_pandas(types_mapper=_nullable_ints)
    return frame


def _nullable_ints(kind: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return pd.api.types.pandas_dtype(str(kind).capitalize().replace("Uint", "UInt"))
    return None


def _states(state: Any) -> list[str] | None:
    if state is None:
        return None
    items = [state] if isinstance(state, str | RunState) else list(state)
    values = []
    for item in items:
        try:
            values.append(RunState(item).value)
        except ValueError:
            known = ", ".join(s.value for s in RunState)
            raise SayiirError(
                f"unknown run state {item!r}; use one of {known}."
            ) from None
    return values


def _run_filter(run_id: RunIds) -> tuple[str, list[Any]]:
    if run_id is None:
        return "", []
    ids = [run_id] if isinstance(run_id, str) else list(run_id)
    if not ids:
        return " WHERE false", []
    return f" WHERE run_id IN ({', '.join('?' * len(ids))})", ids


def _epoch(moment: Moment) -> float:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise SayiirError(
                f"{moment!r} has no time zone; give an aware datetime "
                "(for example datetime.now(timezone.utc))."
            )
        return moment.timestamp()
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment)
        except ValueError:
            return time.time() - to_seconds(moment, what="a time bound")
        if parsed.tzinfo is None:
            raise SayiirError(f"{moment!r} has no time zone; add one, such as +00:00.")
        return parsed.timestamp()
    if isinstance(moment, timedelta | int | float):
        return time.time() - to_seconds(moment, what="a time bound")
    raise SayiirError(f"cannot use {moment!r} as a time bound.")
