"""Deleting jobs in bounded steps, with the clean-up RQ's Job.delete does for each job.

Emptying a queue or registry first renames it to a detached key in one O(1) step (new jobs then land
in a fresh list or set), then deletes its jobs one batch per Lua script: no step holds Redis for more
than one batch, and the whole is O(N). A detached key is recorded in PENDING_KEY in the same step, so
an empty cut short by a crash is finished by the next empty of the same queue and state; batches are
atomic, so two processes draining one key never lose or double-count an entry.

For each job, what RQ's Job.delete (rq 2.12) removes: its hash, dependents and dependencies sets,
results stream, executions and their "id:execution" entries in the started registry, its id in the
queue's registries and in its group. Unlike RQ it also takes the id out of the dependents sets of the
jobs it waited on. It never runs LREM over a whole list: ids chosen from a queue are removed with LREM
from the tail, where the newest jobs (what a filter selects) are.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, cast

from redis import Redis
from rqscope.monitor.jobs import entry_key
from rqscope.monitor.names import exact
from rqscope.monitor.snapshot import REGISTRY_KEY_TEMPLATES, as_text
from rqscope.tasks.rq_internals import KEYS, release_limit
from rqscope.tasks.rq_internals.keys import OWN

SHORT_LIST = 20_000  # a list this long is scanned by a whole batch of LREMs in well under 50 ms
BATCH_SIZE = 200  # jobs per script: about 3 ms of Redis time on an idle 2-core machine, 7 ms on a busy one
PENDING_KEY = OWN + "emptying"  # hash: detached key -> {"queue", "state"} of an empty in progress
DETACHED_KEY_PREFIX = OWN + "emptying:"
# RQ's key layout as the script needs it (rq 2.12: Job.delete, ExecutionRegistry, Group), passed as ARGV.
# The started registry holds "id:execution" and is cleaned per execution; the others hold plain ids.
LAYOUT = [
    KEYS.job_prefix,
    KEYS.results(""),
    KEYS.execution(""),
    KEYS.executions_prefix,
    KEYS.group_prefix,
    KEYS.groups,
    REGISTRY_KEY_TEMPLATES["started"].format(queue=""),
    *[template.format(queue="") for state, template in REGISTRY_KEY_TEMPLATES.items() if state != "started"],
]

# KEYS[1]: source, KEYS[2]: PENDING_KEY. ARGV: mode ("drain" | "zrem" | "purge"), queue, batch size,
# the number of LAYOUT entries, LAYOUT..., then the ids (zrem, purge). Returns {deleted, then a
# (concurrency limit key, id) pair per deleted job under an rq 3 limit}.
DELETE_SCRIPT = """
local mode, queue, size, layout = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local job_prefix, results, execution, executions_prefix, group_prefix, groups, started =
  ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local registries = {}
for i = 12, 4 + layout do registries[#registries + 1] = ARGV[i] end

local function unregister(registry_queue, id)
  for _, prefix in ipairs(registries) do redis.call('ZREM', prefix .. registry_queue, id) end
end

local limited = {}
local function purge(id)
  local job = job_prefix .. id
  local fields = redis.call('HMGET', job, 'origin', 'group_id', 'rate_limit_key')
  local origin, group = fields[1], fields[2]
  if fields[3] then limited[#limited + 1] = fields[3]; limited[#limited + 1] = id end
  unregister(queue, id)
  if origin and origin ~= queue then unregister(origin, id) end
  local executions = executions_prefix .. id
  for _, execution_id in ipairs(redis.call('ZRANGE', executions, 0, -1)) do
    redis.call('UNLINK', execution .. id .. ':' .. execution_id)
    redis.call('ZREM', started .. queue, id .. ':' .. execution_id)
    if origin and origin ~= queue then redis.call('ZREM', started .. origin, id .. ':' .. execution_id) end
  end
  -- RQ 2.x names it "<job prefix>:<id>:dependencies" (a doubled colon); the plain spelling goes too
  local dependencies = job_prefix .. ':' .. id .. ':dependencies'
  for _, parent in ipairs(redis.call('SMEMBERS', dependencies)) do
    redis.call('SREM', job_prefix .. parent .. ':dependents', id)
  end
  if group and group ~= '' then
    redis.call('SREM', group_prefix .. group, id)
    if redis.call('EXISTS', group_prefix .. group) == 0 then redis.call('SREM', groups, group) end
  end
  redis.call('UNLINK', job, job .. ':dependents', dependencies, job .. ':dependencies', results .. id, executions)
end

local ids = {}
if mode == 'drain' then
  if redis.call('TYPE', KEYS[1]).ok == 'list' then
    ids = redis.call('LRANGE', KEYS[1], 0, size - 1)
    redis.call('LTRIM', KEYS[1], size, -1)
  else
    ids = redis.call('ZRANGE', KEYS[1], 0, size - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - 1)
  end
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HDEL', KEYS[2], KEYS[1]) end
else
  for i = 5 + layout, #ARGV do
    if mode == 'purge' or redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then ids[#ids + 1] = ARGV[i] end
  end
end
for _, id in ipairs(ids) do purge(id) end
table.insert(limited, 1, #ids)
return limited
"""

# KEYS: source, detached key, PENDING_KEY. ARGV: what the detached key held, as JSON
DETACH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[3], KEYS[2], ARGV[1])
return 1
"""


def _run(redis: Redis, source: str | bytes, mode: str, queue: str, size: int, ids: Sequence[str] = ()) -> int:
    """One atomic batch of the delete script; return how many jobs it deleted."""
    args = [mode, exact(queue), size, len(LAYOUT), *LAYOUT, *ids]
    reply = redis.register_script(DELETE_SCRIPT)(keys=[source, PENDING_KEY], args=args)  # type: ignore[arg-type]
    for limit, job_id in zip(reply[1::2], reply[2::2], strict=True):
        release_limit(redis, as_text(limit), as_text(job_id))  # as RQ 3's Job.delete does, after the delete
    return int(reply[0])


def _check(state: str) -> None:
    if state == "started":
        raise ValueError("running jobs are stopped, not deleted")


def _batches(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def delete_jobs(redis: Redis, queue: str, state: str, ids: Sequence[str], batch: int = BATCH_SIZE) -> int:
    """Delete these jobs if they are still in the queue or registry; return how many were."""
    _check(state)
    key = entry_key(queue, state)
    removed = 0
    for chunk in _batches(ids, batch):
        if state != "queued":
            removed += _run(redis, key, "zrem", queue, batch, chunk)
            continue
        gone = [job_id for job_id, count in zip(chunk, _lrem_each(redis, key, chunk), strict=True) if count]
        if gone:
            removed += _run(redis, key, "purge", queue, batch, gone)
    return removed


def _lrem_each(redis: Redis, key: bytes, ids: list[str]) -> list[int]:
    """LREM each id from the tail, where the newest jobs (what a filter selects) are.

    Redis runs a pipeline's commands back to back, so on a long list each LREM (O(N) when the id is
    not near the tail) is its own round trip, and other clients run in between.
    """
    if int(cast(int, redis.llen(key))) <= SHORT_LIST:
        pipe = redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.lrem(key, -1, job_id)
        return [int(count) for count in pipe.execute()]
    return [int(cast(int, redis.lrem(key, -1, job_id))) for job_id in ids]


def entry_count(redis: Redis, queue: str, state: str) -> int:
    """How many entries the queue or registry holds: LLEN or ZCARD, never a read of the entries."""
    key = entry_key(queue, state)
    return int(cast(int, redis.llen(key) if state == "queued" else redis.zcard(key)))


def detach(redis: Redis, queue: str, state: str) -> str | None:
    """Rename the queue or registry to a fresh key recorded in PENDING_KEY; None when it was empty."""
    _check(state)
    detached = f"{DETACHED_KEY_PREFIX}{uuid.uuid4().hex}"
    meta = json.dumps({"queue": queue, "state": state})
    moved = redis.register_script(DETACH_SCRIPT)(keys=[entry_key(queue, state), detached, PENDING_KEY], args=[meta])
    return detached if moved else None


def drain(redis: Redis, detached: str, queue: str, batch: int = BATCH_SIZE, limit: int | None = None) -> int:
    """Delete the jobs of a detached key one atomic batch at a time (at most `limit` entries); return how many."""
    deleted = 0
    while limit is None or deleted < limit:
        size = batch if limit is None else min(batch, limit - deleted)
        done = _run(redis, detached, "drain", queue, size)
        if not done:
            break
        deleted += done
    return deleted


def pending(redis: Redis, queue: str, state: str) -> list[str]:
    """Detached keys of this queue and state that an earlier empty left unfinished."""
    found = []
    for key, raw in cast(dict[Any, Any], redis.hgetall(PENDING_KEY)).items():
        try:
            meta = json.loads(raw)
        except ValueError:
            continue
        if meta == {"queue": queue, "state": state}:
            found.append(as_text(key))
    return found


def empty(redis: Redis, queue: str, state: str, batch: int = BATCH_SIZE) -> int:
    """Delete every job the queue or registry holds now (and any an interrupted empty left); return how many."""
    detach(redis, queue, state)
    return sum(drain(redis, key, queue, batch) for key in pending(redis, queue, state))
