"""rqscope: observability sidecar and dashboard for RQ job queues.

`from rqscope import task` registers a task; `rqscope.web:create_app()` builds the sidecar.
"""

from rqscope.tasks import REGISTRY, TaskRegistry, TaskSpec, enqueue, enqueue_task, task

__all__ = ["REGISTRY", "TaskRegistry", "TaskSpec", "enqueue", "enqueue_task", "task"]
