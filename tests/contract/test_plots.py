"""The timeline and per-task charts read what the history holds."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from sayiir_nb import Flow, task
from sayiir_nb.plots import (
    BACKOFF_COLOUR,
    OUTCOME_COLOURS,
    plot_task_stats,
    plot_timeline,
)


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_timeline_has_a_bar_per_attempt_and_the_backoff_waits(runner):
    @task(retries=2, backoff=0.05)
    def flaky(x, ctx):
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return x

    @task
    def slow(x):
        time.sleep(0.02)
        return x

    runner.run(Flow("t").then(slow).then(flaky).build(), "t1", 1)
    figure, ax = plt.subplots()
    returned = plot_timeline(runner.history, "t1", ax=ax)
    assert returned is figure
    bars = _bars(ax)
    colours = [bar.get_facecolor() for bar in bars]
    from matplotlib.colors import to_rgba

    assert colours.count(to_rgba(OUTCOME_COLOURS["failed"])) == 2
    assert colours.count(to_rgba(OUTCOME_COLOURS["succeeded"])) == 2
    waits = [bar for bar in bars if bar.get_facecolor() == to_rgba(BACKOFF_COLOUR)]
    assert [round(bar.get_width(), 2) for bar in waits] == [0.05, 0.1]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["slow", "flaky"]
    plt.close(figure)


def test_task_stats_across_runs(runner):
    @task(retries=1, backoff=0.01)
    def sometimes(x, ctx):
        if x % 2 and ctx.attempt == 1:
            raise ValueError("odd")
        return x

    wf = Flow("s").then(sometimes).build()
    for index in range(4):
        runner.run(wf, f"s{index}", index)
    figure = plot_task_stats(runner.history)
    ax = figure.axes[0]
    assert len(_bars(ax)) == 2  # median and p95 for the one task
    rates = figure.axes[1].lines[0].get_ydata()
    assert list(rates) == [0.5]
    plt.close(figure)


def test_empty_history_draws_a_titled_empty_chart(runner):
    figure = plot_timeline(runner.history, "nothing")
    assert "no attempts" in figure.axes[0].get_title()
    plt.close(figure)
