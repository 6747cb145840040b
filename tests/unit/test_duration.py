from datetime import timedelta

import pytest

from sayiir_nb import DurationError, task
from sayiir_nb.duration import to_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1, 1.0),
        (0.25, 0.25),
        (timedelta(minutes=2), 120.0),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2", 2.0),
        ("1h 2m", 3720.0),
        ("1d", 86400.0),
        (".5s", 0.5),
    ],
)
def test_accepted_forms(value, seconds):
    assert to_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["10 parsecs", "", "m", "5x", "-1s", -2, True, None, [1]]
)
def test_bad_durations_name_the_value(value):
    with pytest.raises(DurationError) as info:
        to_seconds(value, what="timeout of task 'x'")
    assert repr(value) in str(info.value)


def test_bad_duration_rejected_when_task_is_defined():
    with pytest.raises(DurationError, match="'ten seconds'") as info:

        @task(timeout="ten seconds")
        def slow():
            return 1

    assert "timeout of task 'slow'" in str(info.value)
