"""The @task registry: the whitelist of what may be enqueued, and the wrapper that records every run."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue, Retry, get_current_job
from rq.exceptions import DuplicateJobError
from rq.job import Job, validate_job_id
from rq.timeouts import JobTimeoutException
from rqscope.tasks.errors import (
    DuplicateTaskError,
    QueueNotAllowedError,
    TaskArgumentsError,
    TaskError,
    UnknownTaskError,
)
from rqscope.tasks.metrics import record_enqueued
from rqscope.tasks.runs import Run, finish

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class TaskSpec:
    """One registered task and its enqueue options."""

    name: str
    func: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    queues: tuple[str, ...] = ()
    timeout: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    retry: Retry | None = None
    signature: inspect.Signature | None = field(default=None, compare=False)

    @property
    def allowed_queues(self) -> tuple[str, ...]:
        return (self.queue, *(q for q in self.queues if q != self.queue))

    @property
    def func_path(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentsError(f"{self.name}: {exc}") from None


class TaskRegistry:
    """Maps task names to TaskSpecs; the enqueue API accepts nothing else."""

    def __init__(self) -> None:
        self._by_name: dict[str, TaskSpec] = {}
        self._by_path: dict[str, TaskSpec] = {}

    def add(self, spec: TaskSpec) -> None:
        existing = self._by_name.get(spec.name)
        if existing is not None and existing.func_path != spec.func_path:
            raise DuplicateTaskError(f"task {spec.name!r} is already registered by {existing.func_path}")
        self._by_name[spec.name] = spec
        self._by_path[spec.func_path] = spec

    def get(self, name: str) -> TaskSpec:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise UnknownTaskError(f"unknown task {name!r}; registered tasks: {', '.join(self.names())}") from None

    def by_func_path(self, path: str | None) -> TaskSpec | None:
        return self._by_path.get(path or "")

    def task_name(self, path: str | None) -> str | None:
        """The registered name of the task at a function path, if there is one."""
        spec = self.by_func_path(path)
        return spec.name if spec is not None else None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self):
        return iter(sorted(self._by_name.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._by_name)


REGISTRY = TaskRegistry()


def _record(job: Job, name: str, outcome: str, started: float) -> None:
    finish(job.connection, Run(name, job.origin, outcome, time.monotonic() - started))


def _instrument(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        job = get_current_job()
        if job is None:
            return func(*args, **kwargs)
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except JobTimeoutException:
            _record(job, name, "timeout", started)
            raise
        except BaseException:
            _record(job, name, "retried" if job.retries_left else "failure", started)
            raise
        _record(job, name, "retried" if isinstance(result, Retry) else "success", started)
        return result

    run.__rqscope_task__ = name  # type: ignore[attr-defined]
    return run


def task(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    queues: Iterable[str] = (),
    timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    retry: Retry | None = None,
    registry: TaskRegistry = REGISTRY,
) -> Any:
    """Register a module-level function as a task and wrap it in run metrics."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if "<locals>" in fn.__qualname__:
            raise TaskArgumentsError(f"{fn.__qualname__}: tasks must be module-level functions")
        wrapped = _instrument(name or fn.__name__, fn)
        registry.add(
            TaskSpec(
                name=name or fn.__name__,
                func=wrapped,
                queue=queue,
                queues=tuple(queues),
                timeout=timeout,
                result_ttl=result_ttl,
                failure_ttl=failure_ttl,
                retry=retry,
                signature=inspect.signature(fn),
            )
        )
        return wrapped

    return decorate(func) if func is not None else decorate


def enqueue_task(
    spec: TaskSpec,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    connection: Redis,
    queue: str | None = None,
    job_id: str | None = None,
    serializer: Any = None,
) -> tuple[Job, bool]:
    """Enqueue one run of `spec`; return (job, created). An existing `job_id` is not enqueued again: that
    job is returned, read with `serializer` (a process that must not run code from Redis passes its own)."""
    queue_name = queue or spec.queue
    if queue_name not in spec.allowed_queues:
        raise QueueNotAllowedError(
            f"task {spec.name!r} may run on {', '.join(spec.allowed_queues)}, not {queue_name!r}"
        )
    spec.check_arguments(args, kwargs)
    if job_id is not None:
        try:
            validate_job_id(job_id)
        except (TypeError, ValueError) as exc:
            raise TaskArgumentsError(f"job_id: {exc}") from None
    rq_queue = Queue(queue_name, connection=connection)
    options: dict[str, Any] = {
        "args": tuple(args),
        "kwargs": dict(kwargs),
        "timeout": spec.timeout,
        "result_ttl": spec.result_ttl,
        "failure_ttl": spec.failure_ttl,
        "retry": spec.retry,
    }
    try:
        if job_id is not None:
            try:
                job = rq_queue.enqueue_call(spec.func, job_id=job_id, unique=True, **options)
            except DuplicateJobError:
                return Job.fetch(job_id, connection=connection, serializer=serializer), False
            pipe = connection.pipeline(transaction=False)
            record_enqueued(pipe, spec.name, queue_name)
            pipe.execute()
            return job, True
        with connection.pipeline() as pipe:
            job = rq_queue.enqueue_call(spec.func, pipeline=pipe, **options)
            record_enqueued(pipe, spec.name, queue_name)
            pipe.execute()
        return job, True
    except (TypeError, ValueError, AttributeError, pickle.PicklingError) as exc:
        # pickling happens before anything is sent, so nothing was enqueued
        raise TaskArgumentsError(f"{spec.name}: arguments cannot be serialised: {exc}") from None


def enqueue(name: str, *args: Any, connection: Redis, registry: TaskRegistry = REGISTRY, **kwargs: Any) -> Job:
    """Enqueue a registered task by name from Python; unknown names raise UnknownTaskError."""
    job, _ = enqueue_task(registry.get(name), args, kwargs, connection=connection)
    return job


def import_task_modules(modules: Iterable[str]) -> None:
    """Import the modules whose @task decorators fill the registry."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TaskError(f"cannot import task module {module!r}: {exc}") from None
