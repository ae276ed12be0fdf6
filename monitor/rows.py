"""The snapshot's second round trip: every queue, worker, process and concurrency limit at once.

One read-only Lua script per chunk of queues and workers, sent together with the limits' reads,
avoids redis-py's per-command cost on hundreds of replies. Where scripting is not allowed (an ACL
user without @scripting, a proxy that refuses EVAL) the same reads go through pipelines instead:
one more round trip for the queue heads and running executions. Names go to Redis as their exact
bytes (monitor.names). Nothing here writes.
"""

from __future__ import annotations

import hashlib
from string import Template
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from rqscope.monitor.names import as_name, exact, kept_for_short_names
from rqscope.monitor.snapshot import (
    EXECUTION_VALUES,
    JOB_KEY_TEMPLATE,
    QUEUE_KEY_PREFIX,
    REGISTRY_KEY_TEMPLATES,
    SCHEDULER_LOCK_TEMPLATE,
    WORKER_FIELDS,
    WORKER_KEY_PREFIX,
    as_text,
)
from rqscope.tasks.procstats import PROC_KEY_TEMPLATE
from rqscope.tasks.rq_internals.keys import KEYS

REGISTRY_PREFIXES = tuple(t.format(queue="") for t in REGISTRY_KEY_TEMPLATES.values())

# KEYS: per queue its list, its scheduler lock and its registries; per worker its hash and its RQ 3 executions;
# per process its published stats. ARGV: queue count, worker count, the job and execution key prefixes.
# Every key the script can know before it runs is declared; the queue's head job and the worker's running
# execution are found by reading, and their hashes share the installation's prefix, so its cluster slot.
# The reply is flat: per queue LLEN, head id, head's enqueued_at, scheduler lock and one ZCARD per
# registry; then per worker its WORKER_FIELDS, its execution and when it began (read for a busy worker only: RQ 3
# creates the execution and sets `busy` in one transaction); then one HGETALL list per process.
# pcall, so that a key of the wrong type reads as empty instead of failing the whole read.
READ_SCRIPT = Template("""
local function num(reply) if type(reply) == 'number' then return reply end return 0 end
local nq, nw = tonumber(ARGV[1]), tonumber(ARGV[2])
local job_prefix, execution_prefix = ARGV[3], ARGV[4]
local registries = $registries
local worker_fields = {$fields}
local out, n, k = {}, 0, 0
for i = 1, nq do
  local qkey = KEYS[k + 1]
  local head = redis.pcall('LINDEX', qkey, 0)
  if type(head) ~= 'string' then head = false end
  local enqueued = false
  if head then enqueued = redis.pcall('HGET', job_prefix .. head, 'enqueued_at') end
  if type(enqueued) ~= 'string' then enqueued = '' end
  out[n + 1] = num(redis.pcall('LLEN', qkey))
  out[n + 2] = head or ''
  out[n + 3] = enqueued
  out[n + 4] = num(redis.pcall('EXISTS', KEYS[k + 2]))
  n = n + 4
  for r = 1, registries do
    n = n + 1
    out[n] = num(redis.pcall('ZCARD', KEYS[k + 2 + r]))
  end
  k = k + 2 + registries
end
local width = #worker_fields
for i = 1, nw do
  local reply = redis.pcall('HMGET', KEYS[k + 1], unpack(worker_fields))
  local ok = type(reply) == 'table' and not reply.err
  for j = 1, width do out[n + j] = ok and reply[j] or false end
  local execution = false
  if ok and reply[$state] == 'busy' then execution = redis.pcall('SRANDMEMBER', KEYS[k + 2]) end
  if type(execution) ~= 'string' then execution = false end
  local created = false
  if execution then created = redis.pcall('HGET', execution_prefix .. execution, 'created_at') end
  if type(created) ~= 'string' then created = false end
  out[n + width + 1] = execution
  out[n + width + 2] = created
  n = n + width + 2
  k = k + 2
end
for i = k + 1, #KEYS do
  local reply = redis.pcall('HGETALL', KEYS[i])
  if type(reply) ~= 'table' or reply.err then reply = {} end
  n = n + 1
  out[n] = reply
end
return out
""").substitute(
    registries=len(REGISTRY_PREFIXES),
    fields=", ".join(f"'{f}'" for f in WORKER_FIELDS),
    state=WORKER_FIELDS.index("state") + 1,
)
# what the script is told besides its keys: where job hashes and RQ 3's execution hashes start
KEY_PREFIXES = (JOB_KEY_TEMPLATE.format(id=""), KEYS.execution(""))


# Keys are built once per name while it is read (names.kept_for_short_names): 4,096 names are 1,000 workers and
# 300 queues of four instances (a queue's keys are about 0.5 kB).
NAMES_KEPT = 4096


def _queue_keys(name: str) -> tuple[bytes, ...]:
    """A queue's list, scheduler lock and registries, in the script's order, as the name's exact bytes."""
    return (
        exact(QUEUE_KEY_PREFIX + name),
        exact(SCHEDULER_LOCK_TEMPLATE.format(queue=name)),
        *(exact(prefix + name) for prefix in REGISTRY_PREFIXES),
    )


def _worker_keys(name: str) -> tuple[bytes, bytes]:
    """A worker's hash and its RQ 3 executions set."""
    return exact(WORKER_KEY_PREFIX + name), exact(KEYS.worker_executions(name))


queue_keys = kept_for_short_names(_queue_keys, NAMES_KEPT)
worker_keys = kept_for_short_names(_worker_keys, NAMES_KEPT)


READ_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest()  # Redis names a loaded script by this

# A script blocks Redis while it runs. A queue costs Redis about 18 µs in the script (11 commands) and
# a worker about 11 µs (its HMGET's reply is converted into Lua and back), so a chunk of 16 queues
# and 32 workers holds Redis for about 0.6 ms (measured on 2 cores); chunks are sent together, and
# other clients' commands run between them at no extra round trip.
SCRIPT_QUEUES = 16
SCRIPT_WORKERS = 32


def or_empty(reply: Any, default: Any) -> Any:
    return default if isinstance(reply, Exception) else reply


def count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def name_from_key(prefix: str, key: Any) -> str:
    """A queue or worker name from its key, exact (names need not be UTF-8: see monitor.names)."""
    name = as_name(key)
    return name[len(prefix) :] if name.startswith(prefix) else name


def busy(row: list[Any]) -> bool:
    """Whether a worker row (WORKER_FIELDS, then its execution) is a busy worker's with an execution: only such an
    execution names the worker's running job (shaping.worker_facts)."""
    return bool(row[-2]) and row[WORKER_FIELDS.index("state")] in (b"busy", "busy")


def _pairs(flat: list[Any]) -> dict[bytes | str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _read_rate_limits(pipe: Pipeline, keys: list[str]) -> int:
    """Queue each RQ 3 rate limit's reads on a pipeline; returns how many replies they add."""
    for key in keys:
        pipe.hget(KEYS.rate_limit_config(key), "concurrency")
        pipe.zcard(KEYS.rate_limit(key, "allowed"))
        pipe.zcard(KEYS.rate_limit(key, "rate_limited"))
        pipe.zrange(KEYS.rate_limit(key, "rate_limited"), 0, 0, withscores=True)
    return 4 * len(keys)


def _rate_limit_rows(keys: list[str], replies: list[Any]) -> list[tuple[str, list[Any]]]:
    values = [or_empty(reply, None) for reply in replies]
    rows = []
    for i, key in enumerate(keys):
        concurrency, allowed, held, oldest = values[4 * i : 4 * i + 4]
        rows.append((key, [concurrency, allowed, held, list(oldest[0]) if oldest else None]))
    return rows


class ScriptsRefused(Exception):
    """This Redis will not run the read script; use pipelines."""


class ScriptUnknown(Exception):
    """This Redis lost the read script (a restart, SCRIPT FLUSH): send its text again."""


def _chunks(queues: list[str], workers: list[str], procs: list[str]) -> list[tuple[list[str], ...]]:
    count = max(
        -(-len(queues) // SCRIPT_QUEUES), -(-len(workers) // SCRIPT_WORKERS), -(-len(procs) // SCRIPT_WORKERS), 1
    )
    return [
        (
            queues[i * SCRIPT_QUEUES : (i + 1) * SCRIPT_QUEUES],
            workers[i * SCRIPT_WORKERS : (i + 1) * SCRIPT_WORKERS],
            procs[i * SCRIPT_WORKERS : (i + 1) * SCRIPT_WORKERS],
        )
        for i in range(count)
    ]


Rows = tuple[list[list[Any]], list[list[Any]], list[dict[bytes | str, Any]], list[tuple[str, list[Any]]]]


def read_by_script(
    redis: Redis, queues: list[str], workers: list[str], procs: list[str], limits: list[str], load: bool = True
) -> Rows:
    """The rows, one script call per chunk, named by the script's SHA.

    With `load`, the script's text goes first in the same round trip (SCRIPT LOAD; a pipeline runs in
    order); without, only the SHA is sent, and a Redis that lost the script raises ScriptUnknown.
    """
    chunks = _chunks(queues, workers, procs)
    pipe = redis.pipeline(transaction=False)
    if load:
        pipe.script_load(READ_SCRIPT)
    for chunk_queues, chunk_workers, chunk_procs in chunks:
        keys = [key for name in chunk_queues for key in queue_keys(name)]
        keys += [key for name in chunk_workers for key in worker_keys(name)]
        keys += [PROC_KEY_TEMPLATE.format(id=proc) for proc in chunk_procs]
        pipe.evalsha(READ_SHA, len(keys), *keys, str(len(chunk_queues)), str(len(chunk_workers)), *KEY_PREFIXES)
    _read_rate_limits(pipe, limits)
    replies = pipe.execute(raise_on_error=False)
    if load:
        loaded, replies = replies[0], replies[1:]
        if isinstance(loaded, Exception):
            raise ScriptsRefused(str(loaded))
    queue_rows: list[list[Any]] = []
    worker_rows: list[list[Any]] = []
    proc_rows: list[dict[bytes | str, Any]] = []
    for (chunk_queues, chunk_workers, _), reply in zip(chunks, replies, strict=False):
        if isinstance(reply, NoScriptError):
            raise ScriptUnknown(str(reply))
        if isinstance(reply, (NoPermissionError, ResponseError)):
            raise ScriptsRefused(str(reply))
        queue_width, worker_width = 4 + len(REGISTRY_PREFIXES), len(WORKER_FIELDS) + EXECUTION_VALUES
        queue_end = len(chunk_queues) * queue_width
        worker_end = queue_end + len(chunk_workers) * worker_width
        queue_rows.extend(reply[i : i + queue_width] for i in range(0, queue_end, queue_width))
        worker_rows.extend(reply[i : i + worker_width] for i in range(queue_end, worker_end, worker_width))
        proc_rows.extend(_pairs(r) for r in reply[worker_end:])
    return queue_rows, worker_rows, proc_rows, _rate_limit_rows(limits, replies[len(chunks) :])


def read_by_pipeline(redis: Redis, queues: list[str], workers: list[str], procs: list[str], limits: list[str]) -> Rows:
    pipe = redis.pipeline(transaction=False)
    for name in queues:
        queue, lock, *registries = queue_keys(name)
        pipe.llen(queue)
        pipe.lindex(queue, 0)
        pipe.exists(lock)
        for registry in registries:
            pipe.zcard(registry)
    for name in workers:
        worker, executions = worker_keys(name)
        pipe.hmget(worker, list(WORKER_FIELDS))
        pipe.srandmember(executions)
    for proc in procs:
        pipe.hgetall(PROC_KEY_TEMPLATE.format(id=proc))
    extra = _read_rate_limits(pipe, limits)
    all_replies = pipe.execute(raise_on_error=False)
    limit_rows = _rate_limit_rows(limits, all_replies[len(all_replies) - extra :])
    replies = iter(all_replies)
    queue_rows = []
    for _ in queues:
        queued, head, locked = (or_empty(next(replies), None) for _ in range(3))
        counts = [count(or_empty(next(replies), 0)) for _ in REGISTRY_PREFIXES]
        queue_rows.append([count(queued), head or b"", b"", count(locked), *counts])
    worker_rows = [
        [*(or_empty(next(replies), None) or [None] * len(WORKER_FIELDS)), or_empty(next(replies), None), None]
        for _ in workers
    ]
    proc_rows = [or_empty(next(replies), {}) for _ in procs]
    # second round: each queue head's enqueued_at and each running execution's created_at
    heads = [(row, 2, JOB_KEY_TEMPLATE.format(id=as_text(row[1])), "enqueued_at") for row in queue_rows if row[1]]
    heads += [(row, -1, KEYS.execution(as_text(row[-2])), "created_at") for row in worker_rows if busy(row)]
    if heads:
        pipe = redis.pipeline(transaction=False)
        for _, _, key, field in heads:
            pipe.hget(key, field)
        for (row, index, _, _), value in zip(heads, pipe.execute(raise_on_error=False), strict=True):
            row[index] = or_empty(value, None) or b""
    return queue_rows, worker_rows, proc_rows, limit_rows
