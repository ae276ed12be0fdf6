"""The rqscope exception hierarchy, rooted at RqscopeError."""

from __future__ import annotations

from redis.exceptions import WatchError


class RqscopeError(Exception):
    """Base of every error rqscope raises on purpose."""


class SettingsError(RqscopeError):
    """A setting has an invalid value; the message names the variable."""


class TaskError(RqscopeError):
    """A request to run a task cannot be honoured."""


class UnknownTaskError(TaskError):
    """The task name is not in the registry."""


class QueueNotAllowedError(TaskError):
    """The task may not be enqueued on the requested queue."""


class TaskArgumentsError(TaskError):
    """The arguments do not fit the task's signature or cannot be serialised."""


class JobIdConflictError(TaskError):
    """A job_id names a job that is not a run of the requested task, or keeps changing under the request."""


class DuplicateTaskError(RqscopeError):
    """Two different functions were registered under one task name."""


class SlotMigratingError(WatchError):
    """A WATCH met a Redis Cluster slot migration (ASK): no key changed; the transaction may run once it ends.

    A WatchError, so that RQ's own loops retry it; rqscope's bounded loops (tasks.watching) do not count it
    as a conflict.
    """
