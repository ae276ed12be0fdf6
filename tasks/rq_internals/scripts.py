"""Lua scripts that write a job's hash and lists as RQ itself would: retry a failed job (RQ's requeue) and
enqueue a scheduled one now (RQ's scheduler). Each copies what RQ writes, so each has a test that compares
the result with RQ's own: test_retry::test_retried_job_has_the_fields_rq_requeue_writes and
test_rq_internals::test_enqueue_now_writes_what_rqs_scheduler_writes."""

from __future__ import annotations

from datetime import UTC, datetime


def rq_timestamp(moment: datetime | None = None) -> str:
    """A timestamp in the format RQ writes (utcformat)."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# KEYS: failed registry, queue list, queue set, rate-limit key set.
# ARGV: job key prefix, queue key, enqueued_at, rate-limit key prefix, timestamp, ids...
# Returns {moved, limit key, concurrency, limit key, concurrency, ...} for the limits that held jobs.
RETRY_SCRIPT = """
local moved, limits, held = 0, {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local job = ARGV[1] .. id
    if redis.call('EXISTS', job) == 1 then
      local limit = redis.call('HMGET', job, 'rate_limit_key', 'rate_limit_concurrency', 'ttl')
      local status = 'queued'
      if limit[1] and limit[2] then status = 'rate_limited' end
      redis.call('HSET', job, 'status', status, 'enqueued_at', ARGV[3],
                 'started_at', '', 'ended_at', '', 'exc_info', '')
      local ttl = tonumber(limit[3] or '')
      if ttl and ttl > 0 then redis.call('EXPIRE', job, ttl) else redis.call('PERSIST', job) end
      if status == 'rate_limited' then
        local base = ARGV[4] .. limit[1]
        redis.call('SADD', KEYS[4], limit[1])
        redis.call('HSET', base, 'concurrency', limit[2])
        redis.call('ZADD', base .. ':rate_limited', ARGV[5], id)
        if not held[limit[1]] then
          held[limit[1]] = true
          table.insert(limits, limit[1])
          table.insert(limits, limit[2])
        end
      else
        redis.call('RPUSH', KEYS[2], id)
      end
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('SADD', KEYS[3], ARGV[2]) end
table.insert(limits, 1, moved)
return limits
"""


# KEYS: scheduled registry, queue list, queue set, rate-limit key set, scheduler lock of the queue.
# ARGV: job key, job id, queue key, enqueued_at, rate-limit key prefix, now, margin.
# Returns {outcome} or {MOVED, limit key, concurrency} when a concurrency limit holds the job back.
ENQUEUE_NOW_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not score then return {0} end
if tonumber(score) <= tonumber(ARGV[6]) + tonumber(ARGV[7]) and redis.call('EXISTS', KEYS[5]) == 1 then
  return {-1}
end
redis.call('ZREM', KEYS[1], ARGV[2])
local job = ARGV[1]
if redis.call('EXISTS', job) == 0 then return {-2} end
local f = redis.call('HMGET', job, 'rate_limit_key', 'rate_limit_concurrency', 'ttl',
                     'enqueue_at_front', 'enqueue_at_front_on_retry', 'ended_at')
local status = 'queued'
if f[1] and f[2] then status = 'rate_limited' end
redis.call('HSET', job, 'status', status, 'enqueued_at', ARGV[4])
local ttl = tonumber(f[3] or '')
if ttl and ttl > 0 then redis.call('EXPIRE', job, ttl) end
redis.call('SADD', KEYS[3], ARGV[3])
if status == 'rate_limited' then
  local base = ARGV[5] .. f[1]
  redis.call('SADD', KEYS[4], f[1])
  redis.call('HSET', base, 'concurrency', f[2])
  redis.call('ZADD', base .. ':rate_limited', ARGV[6], ARGV[2])
  return {1, f[1], f[2]}
end
local front = f[4] == '1' or (f[5] == '1' and f[6] and f[6] ~= '')
if front then redis.call('LPUSH', KEYS[2], ARGV[2]) else redis.call('RPUSH', KEYS[2], ARGV[2]) end
return {1}
"""
