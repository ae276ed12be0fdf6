"""Start-up checks that RQ's methods still have the signatures rqscope's hooks were written for."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import rq
from rq import Queue, Worker
from rq.executions import Execution
from rq.registry import FailedJobRegistry
from rq.results import Result
from rqscope.tasks.errors import RqscopeError


def _supported() -> str:
    """The rq range rqscope declares (pyproject.toml), as installed."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("rqscope") or []
    except PackageNotFoundError:
        return "(see pyproject.toml)"
    return next((r.removeprefix("rq").strip() for r in declared if r.startswith("rq") and r[2:3] in "<>=!~ "), "")


SUPPORTED = _supported()


# (class, method) -> the parameter lists rqscope's overrides accept; anything else stops the worker
SIGNATURES: dict[tuple[type, str], tuple[tuple[str, ...], ...]] = {
    (Worker, "_shutdown"): (("self",),),
    (Worker, "dequeue_job_and_maintain_ttl"): (("self", "timeout", "max_idle_time"),),
    (Worker, "reorder_queues"): (("self", "reference_queue"),),
    (Worker, "execute_job"): (("self", "job", "queue"),),
    (Worker, "fork_work_horse"): (("self", "job", "queue"),),
    (Worker, "main_work_horse"): (("self", "job", "queue"),),
    (Worker, "check_for_suspension"): (("self", "burst"),),
    (Worker, "run_maintenance_tasks"): (("self",),),
    (Worker, "heartbeat"): (("self", "timeout", "pipeline"),),
    (Worker, "set_state"): (("self", "state", "pipeline"),),
    (Worker, "prepare_execution"): (("self", "job"),),
    (Worker, "get_heartbeat_ttl"): (("self", "job"), ("self", "job", "working_time")),
    (Worker, "maintain_heartbeats"): (("self", "job"), ("self", "job", "execution")),
    (Worker, "monitor_work_horse"): (("self", "job", "queue"), ("self", "job", "queue", "execution")),
    (Worker, "handle_job_failure"): (
        ("self", "job", "queue", "started_job_registry", "exc_string"),
        ("self", "job", "queue", "started_job_registry", "exc_string", "execution"),
    ),
    (Worker, "cleanup_execution"): (("self", "job", "pipeline"), ("self", "job", "pipeline", "execution")),
    (Worker, "increment_successful_job_count"): (("self", "pipeline"),),
    (Worker, "increment_failed_job_count"): (("self", "pipeline"),),
    (Queue, "dequeue_any"): (("queues", "timeout", "connection", "job_class", "serializer", "death_penalty_class"),),
    (Worker, "teardown"): (("self",),),
    (Worker, "serialize"): (("self",),),
    (Execution, "create"): (("job", "ttl", "pipeline", "worker_name"),),
    (Execution, "delete"): (("self", "job", "pipeline"),),
    (FailedJobRegistry, "add"): (("self", "job", "ttl", "exc_string", "pipeline"),),
    (Result, "create_failure"): (
        (
            "job",
            "ttl",
            "exc_string",
            "worker_name",
            "pipeline",
            "execution_id",
            "execution_started_at",
            "execution_ended_at",
        ),
    ),
}
# hooks on methods that only some supported RQ releases have: checked where they exist
OPTIONAL_SIGNATURES: dict[tuple[type, str], tuple[tuple[str, ...], ...]] = {
    (Worker, "set_current_job_working_time"): (("self", "current_job_working_time", "pipeline"),),  # rq 2.x
}
# attributes of a constructed Worker that the hooks read or set
WORKER_ATTRIBUTES = ("_stop_requested", "_shutdown_requested_date", "_horse_pid", "scheduler")


def parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def verify_rq(signatures: dict[tuple[type, str], tuple[tuple[str, ...], ...]] = SIGNATURES) -> None:
    """Stop at start-up, naming the method, when RQ's methods differ from what the hooks expect."""
    optional = {key: value for key, value in OPTIONAL_SIGNATURES.items() if hasattr(*key)}
    for (cls, name), accepted in {**signatures, **optional}.items():
        function = getattr(cls, name, None)
        found = parameters(function) if callable(function) else None
        if found not in accepted:
            raise RqscopeError(
                f"rq {rq.__version__} changed {cls.__name__}.{name}{found or ' (missing)'}; "
                f"rqscope supports rq {SUPPORTED}"
            )


def verify_worker(worker: Worker) -> None:
    missing = [name for name in WORKER_ATTRIBUTES if not hasattr(worker, name)]
    if missing:
        raise RqscopeError(f"rq {rq.__version__} workers lack {', '.join(missing)}; rqscope supports rq {SUPPORTED}")
