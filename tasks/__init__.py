"""Where metrics are born: the @task registry, run instrumentation and the instrumented worker."""

from rqscope.tasks.registry import REGISTRY, TaskRegistry, TaskSpec, enqueue, enqueue_task, task

__all__ = ["REGISTRY", "TaskRegistry", "TaskSpec", "enqueue", "enqueue_task", "task"]
