import random

import pytest

from sayiir_nb import DefinitionError, RunContext, task
from sayiir_nb.tasks import RetryPolicy


def test_decorated_function_stays_callable():
    @task(retries=2)
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert double.name == "double"
    assert double.options.retry.retries == 2
    assert double.__name__ == "double"


def test_bare_decorator_and_name():
    @task
    def plain(x):
        return x

    @task(name="renamed")
    def other(x):
        return x

    assert plain.name == "plain"
    assert other.name == "renamed"


def test_waits_follow_the_policy():
    policy = RetryPolicy(
        retries=5, backoff_s=0.5, backoff_multiplier=2, max_backoff_s=3
    )
    waits = [policy.wait_before_retry_s(k) for k in range(1, 6)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_in_documented_range():
    policy = RetryPolicy(retries=3, backoff_s=1.0, jitter=0.2)
    rng = random.Random(7)
    waits = [policy.wait_before_retry_s(2, rng) for _ in range(500)]
    assert min(waits) >= 1.6
    assert max(waits) <= 2.4
    assert max(waits) - min(waits) > 0.5


def test_jitter_never_exceeds_the_cap():
    policy = RetryPolicy(retries=3, backoff_s=10, jitter=0.5, max_backoff_s=12)
    rng = random.Random(1)
    assert max(policy.wait_before_retry_s(1, rng) for _ in range(200)) <= 12


def test_retry_decision():
    policy = RetryPolicy(retries=2, retry_on=(ConnectionError,))
    assert policy.should_retry(ConnectionError(), 1)
    assert policy.should_retry(ConnectionResetError(), 2)
    assert not policy.should_retry(ConnectionError(), 3)
    assert not policy.should_retry(ValueError(), 1)
    assert not RetryPolicy(retries=5).should_retry(KeyboardInterrupt(), 1)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries of task 'f'"),
        ({"retries": 1.5}, "retries of task 'f'"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"jitter": 2}, "jitter"),
        ({"retry_on": KeyboardInterrupt}, "retry_on"),
        ({"retry_on": "ValueError"}, "retry_on"),
        ({"timeout": 0}, "timeout of task 'f'"),
    ],
)
def test_bad_options_are_refused_at_definition(options, fragment):
    with pytest.raises(DefinitionError, match=fragment):

        @task(**options)
        def f(x):
            return x


def test_too_many_arguments_is_a_clear_error():
    with pytest.raises(DefinitionError, match="ctx.output"):

        @task
        def render(campaign, recipients):
            return None


def test_context_parameter_detected_by_name_or_annotation():
    @task
    def by_name(x, ctx):
        return x

    @task
    def by_annotation(x, context: RunContext):
        return x

    @task
    def no_input():
        return 1

    assert by_name.context_param == "ctx"
    assert by_annotation.context_param == "context"
    assert not no_input.takes_value


def test_with_options_copies():
    @task(retries=1)
    def f(x):
        return x

    g = f.with_options(retries=4, name="g")
    assert (g.name, g.options.retry.retries) == ("g", 4)
    assert (f.name, f.options.retry.retries) == ("f", 1)


def test_unknown_options_and_bad_names_are_definition_errors():
    with pytest.raises(DefinitionError, match="unknown option"):
        task(bogus=1)
    with pytest.raises(DefinitionError, match="non-empty string"):

        @task(name=5)
        def f(x):
            return x


@pytest.mark.parametrize("multiplier", [float("nan"), float("inf")])
def test_multiplier_must_be_finite(multiplier):
    with pytest.raises(DefinitionError, match="finite"):

        @task(backoff_multiplier=multiplier)
        def f(x):
            return x


def test_waits_never_overflow():
    from sayiir_nb.tasks import LONGEST_WAIT_S

    policy = RetryPolicy(retries=5000, backoff_s=0.001, max_backoff_s=0.001)
    assert policy.wait_before_retry_s(2000) == 0.001
    unbounded = RetryPolicy(retries=5000, backoff_s=1.0)
    assert unbounded.wait_before_retry_s(2000) == LONGEST_WAIT_S
