"""The @task registry: the whitelist of what may be enqueued, and the wrapper that records every run."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis
from rq import Retry, get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rqscope.tasks.enqueue import enqueue_all, place
from rqscope.tasks.errors import DuplicateTaskError, TaskArgumentsError, TaskError, UnknownTaskError
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
    at: datetime | None = None,
    serializer: Any = None,
) -> tuple[Job, bool]:
    """Enqueue one run of `spec`, now or at `at`; return (job, created). An existing `job_id` is not enqueued
    again: that job is returned, read with `serializer` (a process that must not run code from Redis passes its
    own)."""
    placed = enqueue_all([place(spec, args, kwargs, queue=queue, job_id=job_id, at=at)], connection=connection)[0]
    if placed.job is not None:
        return placed.job, True
    return Job.fetch(placed.job_id, connection=connection, serializer=serializer), False


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
