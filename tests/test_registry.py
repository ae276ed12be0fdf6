from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue
from rqscope.tasks import examples  # noqa: F401 - registers the example tasks
from rqscope.tasks.errors import DuplicateTaskError, QueueNotAllowedError, TaskArgumentsError, UnknownTaskError
from rqscope.tasks.metrics import METRICS_KEY, field_name
from rqscope.tasks.registry import REGISTRY, TaskRegistry, enqueue, enqueue_task, task

from tests import sample_tasks


def test_decorator_registers_and_keeps_the_function_callable() -> None:
    spec = REGISTRY.get("t_ok")
    assert spec.func is sample_tasks.t_ok
    assert spec.func_path == "tests.sample_tasks.t_ok"
    assert REGISTRY.by_func_path("tests.sample_tasks.t_ok") is spec
    assert sample_tasks.t_ok(21) == 42  # outside a job it is a plain call and records nothing


def test_examples_are_registered() -> None:
    assert {"generate_report", "send_email", "process_upload"} <= set(REGISTRY.names())


def test_unknown_name_raises_a_clear_error(redis: Redis) -> None:
    with pytest.raises(UnknownTaskError, match="unknown task 'os.system'"):
        enqueue("os.system", "rm -rf /", connection=redis)
    assert redis.keys("*") == []


def test_enqueue_from_python_records_enqueued(redis: Redis) -> None:
    job = enqueue("t_ok", 3, connection=redis)
    assert job.func_name == "tests.sample_tasks.t_ok" and job.args == (3,)
    assert Queue("default", connection=redis).job_ids == [job.id]
    assert redis.hget(METRICS_KEY, field_name("t_ok", "default", "enqueued")) == b"1"


def test_queue_must_be_allowed(redis: Redis) -> None:
    with pytest.raises(QueueNotAllowedError, match="may run on default, q1, q2, other"):
        enqueue_task(REGISTRY.get("t_ok"), [], {}, connection=redis, queue="high")
    assert redis.keys("*") == []


def test_arguments_are_checked_against_the_signature(redis: Redis) -> None:
    with pytest.raises(TaskArgumentsError, match="unexpected keyword"):
        enqueue_task(REGISTRY.get("t_ok"), [], {"nope": 1}, connection=redis)
    with pytest.raises(TaskArgumentsError, match="too many positional"):
        enqueue_task(REGISTRY.get("t_ok"), [1, 2], {}, connection=redis)
    assert redis.keys("*") == []


def test_job_id_is_validated(redis: Redis) -> None:
    with pytest.raises(TaskArgumentsError, match="job_id"):
        enqueue_task(REGISTRY.get("t_ok"), [], {}, connection=redis, job_id="has space")


def test_same_name_for_another_function_is_refused() -> None:
    registry = TaskRegistry()

    def first() -> None: ...

    first.__qualname__ = "first"
    task(first, name="dup", registry=registry)

    def second() -> None: ...

    second.__qualname__ = "second"
    with pytest.raises(DuplicateTaskError):
        task(second, name="dup", registry=registry)


def test_nested_functions_cannot_be_tasks() -> None:
    def inner() -> None: ...

    with pytest.raises(TaskArgumentsError, match="module-level"):
        task(inner, registry=TaskRegistry())
