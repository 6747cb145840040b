"""Timing and retries as pictures (matplotlib), read from the run history.

Both functions draw on the axes given (or on a new figure) and return the
figure, as matplotlib users expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .history import History

OUTCOME_COLOURS = {
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "timed_out": "#f97316",
    "interrupted": "#6b7280",
    "running": "#2563eb",
    "scheduled": "#eab308",
}
BACKOFF_COLOUR = "#fde68a"


def plot_timeline(history: History, run_id: str, ax: Axes | None = None) -> Figure:
    """One bar per attempt of ``run_id``, coloured by outcome, with the
    backoff wait before each retry drawn as a pale bar; time runs from the
    run's first attempt."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.patches import Patch

    attempts = history.attempts(run_id)
    if ax is None:
        height = max(2.0, 0.35 * attempts["step_id"].nunique() + 1)
        _, ax = plt.subplots(figsize=(8, height))
    figure = ax.figure
    if attempts.empty:
        ax.set_title(f"run {run_id}: no attempts recorded")
        return figure

    started = attempts["started_at"].dropna()
    origin = started.min() if len(started) else attempts["scheduled_at"].min()
    steps = list(dict.fromkeys(attempts["step_id"]))
    for row in attempts.itertuples(index=False):
        if pd.isna(row.started_at):
            continue  # a retry still waiting for its backoff
        lane = steps.index(row.step_id)
        begin = (row.started_at - origin).total_seconds()
        if row.wait_before_s:
            ax.barh(
                lane,
                row.wait_before_s,
                left=begin - row.wait_before_s,
                color=BACKOFF_COLOUR,
                height=0.5,
                hatch="//",
            )
        length = 0.0 if pd.isna(row.duration_s) else row.duration_s
        colour = OUTCOME_COLOURS.get(row.state, "#9ca3af")
        ax.barh(lane, max(length, 0.002), left=begin, color=colour, height=0.6)
        ax.text(begin, lane + 0.38, f"#{row.attempt}", fontsize=7, va="bottom")
    ax.set_yticks(range(len(steps)), labels=steps)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run's first attempt")
    ax.set_title(f"run {run_id}")
    legend = [
        Patch(color=c, label=s)
        for s, c in OUTCOME_COLOURS.items()
        if s in set(attempts["state"])
    ]
    legend.append(Patch(facecolor=BACKOFF_COLOUR, hatch="//", label="backoff wait"))
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.tight_layout()
    return figure


def plot_task_stats(history: History, ax: Axes | None = None, **filters: Any) -> Figure:
    """Per task, across runs: median and 95th-percentile attempt durations
    as bars, and the retry rate as a line on a second axis. ``filters`` go
    to :meth:`History.task_summary` (``workflow=``, ``since=``)."""
    import matplotlib.pyplot as plt

    summary = history.task_summary(**filters)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(summary) + 2), 3.5))
    figure = ax.figure
    if summary.empty:
        ax.set_title("no attempts recorded")
        return figure
    positions = range(len(summary))
    ax.bar(
        [p - 0.2 for p in positions],
        summary["p50_s"],
        width=0.4,
        label="median",
        color="#60a5fa",
    )
    ax.bar(
        [p + 0.2 for p in positions],
        summary["p95_s"],
        width=0.4,
        label="95th percentile",
        color="#1d4ed8",
    )
    ax.set_xticks(
        list(positions), labels=list(summary["task_name"]), rotation=30, ha="right"
    )
    ax.set_ylabel("attempt duration (s)")
    rates = ax.twinx()
    rates.plot(
        list(positions),
        summary["retry_rate"],
        "o-",
        color="#dc2626",
        label="retry rate",
    )
    rates.set_ylim(0, 1.05)
    rates.set_ylabel("retry rate")
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = rates.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8)
    ax.set_title("durations and retries per task")
    return figure
