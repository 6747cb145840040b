import pytest

from sayiir_nb import DefinitionError, Flow, WorkflowRegistry, task


@task
def load(x):
    return x


@task(retries=3)
def send(x):
    return x


def test_build_exposes_name_steps_and_hash():
    wf = Flow("email-pipeline").then(load).then(send).build()
    assert wf.name == "email-pipeline"
    assert wf.step_ids == ("load", "send")
    assert len(wf.definition_hash) == 64


def test_hash_is_stable_and_covers_options():
    first = Flow("p").then(load).then(send).build()
    again = Flow("p").then(load).then(send).build()
    changed = Flow("p").then(load).then(send.with_options(retries=4)).build()
    reordered = Flow("p").then(send).then(load).build()
    assert first.definition_hash == again.definition_hash
    assert (
        len({first.definition_hash, changed.definition_hash, reordered.definition_hash})
        == 3
    )


def test_same_task_twice_needs_a_name():
    with pytest.raises(DefinitionError, match="name='...'"):
        Flow("p").then(send).then(send)
    wf = Flow("p").then(send).then(send, name="send_again").build()
    assert wf.step_ids == ("send", "send_again")


def test_plain_functions_become_tasks():
    def shout(x):
        return x.upper()

    wf = Flow("p").then(shout).build()
    assert wf.steps[0].task.name == "shout"


@pytest.mark.parametrize("name", ["", "has space", None])
def test_bad_workflow_names(name):
    with pytest.raises(DefinitionError):
        Flow(name)


def test_empty_workflow_is_refused():
    with pytest.raises(DefinitionError, match="no steps"):
        Flow("empty").build()


def test_registry_replaces_by_name():
    registry = WorkflowRegistry()
    registry.register(Flow("p").then(load).build())
    registry.register(Flow("p").then(load).then(send).build())
    assert registry.get("p").step_ids == ("load", "send")
    assert "send" in registry.tasks
    with pytest.raises(KeyError, match="no workflow named 'missing'"):
        registry.get("missing")
