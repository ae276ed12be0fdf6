"""No-op jobs for the instrumentation benchmark: one bare function and one registered task."""

from __future__ import annotations

from rqscope.tasks.registry import task


def bare_noop() -> None:
    """Run by a bare `rq worker`: no rqscope code on the path."""


@task(queue="default")
def noop() -> None:
    """The same work, wrapped by @task and run by `rqscope worker`."""
