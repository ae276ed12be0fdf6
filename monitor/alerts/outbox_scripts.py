"""Lua scripts of the outbox: queueing, claiming, recording a result, releasing, and giving up.

Every outbox script takes OUTBOX_KEYS first, then the ready zsets of the receivers it touches.
Only the first notification of a lane (one alert, one receiver) waits in its receiver's ready zset,
scored by when it may be tried; the rest of the lane follows it through NEXT. So a claim reads
only what is due now, for the receivers this process sends to: what waits for a receiver that is
down sits in the future of that receiver's own zset, and costs the others nothing.
"""

from __future__ import annotations

from rqscope.monitor.alerts.keys import (
    CLAIMS_KEY,
    COUNTS_KEY,
    DEAD_KEY,
    ENTRIES_KEY,
    FINISHED_KEY,
    LEASE_KEY,
    META_KEY,
    NEXT_KEY,
    OUTBOX_KEY,
    TAILS_KEY,
)

OUTBOX_KEYS = [
    LEASE_KEY,
    OUTBOX_KEY,
    ENTRIES_KEY,
    META_KEY,
    CLAIMS_KEY,
    NEXT_KEY,
    TAILS_KEY,
    FINISHED_KEY,
    DEAD_KEY,
    COUNTS_KEY,
]
FIRST_READY = len(OUTBOX_KEYS) + 1  # Lua index of the first ready zset in KEYS

# shared by every script that queues or removes entries
PRELUDE = """
local K = {lease = KEYS[1], outbox = KEYS[2], entries = KEYS[3], meta = KEYS[4], claims = KEYS[5],
  next = KEYS[6], tails = KEYS[7], finished = KEYS[8], dead = KEYS[9], counts = KEYS[10]}
local function parse(meta)
  if not meta then return nil end
  local queued, fingerprint, receiver = string.match(meta, '^(%d+)|([^|]*)|(.*)$')
  if not receiver then return nil end
  return tonumber(queued), receiver .. '\\n' .. fingerprint, receiver
end
-- queue one entry, unless it is queued already or was finished: a transition is queued once
local function enqueue(id, meta, entry, ready)
  if redis.call('HEXISTS', K.entries, id) == 1 or redis.call('ZSCORE', K.finished, id) then return end
  local queued, lane = parse(meta)
  if not lane then return end
  redis.call('HSET', K.entries, id, entry)
  redis.call('HSET', K.meta, id, meta)
  redis.call('ZADD', K.outbox, queued, id)
  local tail = redis.call('HGET', K.tails, lane)
  if tail and redis.call('HEXISTS', K.entries, tail) == 1 then
    redis.call('HSET', K.next, tail, id)
  else
    redis.call('ZADD', ready, queued, id)
  end
  redis.call('HSET', K.tails, lane, id)
end
-- forget one entry; the next of its lane becomes ready (ready is nil when the receiver is unknown)
local function remove(id, ready, now)
  local _, lane = parse(redis.call('HGET', K.meta, id))
  local following = redis.call('HGET', K.next, id)
  redis.call('ZREM', K.outbox, id)
  redis.call('HDEL', K.entries, id)
  redis.call('HDEL', K.meta, id)
  redis.call('HDEL', K.claims, id)
  redis.call('HDEL', K.next, id)
  if ready then
    redis.call('ZREM', ready, id)
    if following and redis.call('HEXISTS', K.entries, following) == 1 then redis.call('ZADD', ready, now, following) end
  end
  if lane and redis.call('HGET', K.tails, lane) == id then redis.call('HDEL', K.tails, lane) end
end
local function finished(id, now, keep)
  redis.call('ZADD', K.finished, now, id)
  redis.call('ZREMRANGEBYSCORE', K.finished, '-inf', now - keep)
end
"""

# ARGV: token, now ms, claim ms, give up ms, sweep, then (receiver, limit) per ready zset from KEYS[11].
# Claims the due entries of each receiver, oldest first, and names the receivers no process here sends
# to whose entries have waited longer than the give-up time (among the `sweep` oldest entries).
CLAIM = (
    PRELUDE
    + """
if redis.call('GET', K.lease) ~= ARGV[1] then return {{}, {}} end
local now, claim = tonumber(ARGV[2]), tonumber(ARGV[3])
local claimed, known = {}, {}
for r = 6, #ARGV, 2 do
  known[ARGV[r]] = true
  local ready = KEYS[11 + (r - 6) / 2]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, tonumber(ARGV[r + 1]))) do
    local entry = redis.call('HGET', K.entries, id)
    if entry then
      redis.call('ZADD', ready, now + claim, id)
      redis.call('HSET', K.claims, id, ARGV[1])
      claimed[#claimed + 1] = entry
    else
      remove(id, ready, now)
    end
  end
end
local unknown, seen = {}, {}
local old = redis.call('ZRANGEBYSCORE', K.outbox, '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(old) do
  local _, _, receiver = parse(redis.call('HGET', K.meta, id))
  if not receiver then
    remove(id, nil, now)
  elseif not known[receiver] and not seen[receiver] then
    seen[receiver] = true
    unknown[#unknown + 1] = receiver
  end
end
return {claimed, unknown}
"""
)

# ARGV: token, now ms, give up ms, sweep, dead max, keep finished ms, then one receiver per ready zset.
# Dead-letters those receivers' entries queued longer than the give-up time ago, unless claimed now.
SWEEP = (
    PRELUDE
    + """
if redis.call('GET', K.lease) ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
local targets = {}
for r = 7, #ARGV do targets[ARGV[r]] = KEYS[11 + r - 7] end
local dropped = 0
local old = redis.call('ZRANGEBYSCORE', K.outbox, '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(old) do
  local _, _, receiver = parse(redis.call('HGET', K.meta, id))
  local ready = receiver and targets[receiver]
  local due = ready and tonumber(redis.call('ZSCORE', ready, id) or '0')
  if ready and not (redis.call('HEXISTS', K.claims, id) == 1 and due > now) then
    redis.call('LPUSH', K.dead, cjson.encode({receiver = receiver, reason = 'no process sends to this receiver',
      at = now / 1000, entry = redis.call('HGET', K.entries, id) or ''}))
    redis.call('LTRIM', K.dead, 0, tonumber(ARGV[5]) - 1)
    redis.call('HINCRBY', K.counts, receiver .. '\\n' .. 'dropped', 1)
    remove(id, ready, now)
    finished(id, now, tonumber(ARGV[6]))
    dropped = dropped + 1
  end
end
return dropped
"""
)

# KEYS[11]: the receiver's ready zset.
# ARGV: token, id, result, now ms, count field, keep finished ms, dead max, next due ms, entry, dead letter.
# Applied and counted only while this process still holds the claim: a result resent after a lost
# reply finds the claim gone, and changes nothing.
FINISH = (
    PRELUDE
    + """
local id, now = ARGV[2], tonumber(ARGV[4])
if redis.call('HGET', K.claims, id) ~= ARGV[1] then return 0 end
redis.call('HDEL', K.claims, id)
redis.call('HINCRBY', K.counts, ARGV[5], 1)
if ARGV[3] == 'retried' then
  redis.call('HSET', K.entries, id, ARGV[9])
  redis.call('ZADD', KEYS[11], ARGV[8], id)
  return 1
end
remove(id, KEYS[11], now)
finished(id, now, tonumber(ARGV[6]))
if ARGV[3] == 'dropped' then
  redis.call('LPUSH', K.dead, ARGV[10])
  redis.call('LTRIM', K.dead, 0, tonumber(ARGV[7]) - 1)
end
return 1
"""
)

# ARGV: token, now ms, then (id, index of its receiver's ready zset in KEYS). Claims this process will
# not use, due again at once for the next leader.
RELEASE = (
    PRELUDE
    + """
for k = 3, #ARGV, 2 do
  local id = ARGV[k]
  if redis.call('HGET', K.claims, id) == ARGV[1] then
    redis.call('HDEL', K.claims, id)
    redis.call('ZADD', KEYS[tonumber(ARGV[k + 1])], 'XX', ARGV[2], id)
  end
end
return 1
"""
)

# ARGV: batch id, now ms, keep finished ms, dead max, n, (count field, count)*n, dead letters...
# Results of sends from memory; a batch resent after a lost reply is recognised by its id.
FLUSH = (
    PRELUDE
    + """
local batch, now = ARGV[1], tonumber(ARGV[2])
if redis.call('ZSCORE', K.finished, batch) then return 0 end
local n = tonumber(ARGV[5])
for k = 6, 5 + 2 * n, 2 do redis.call('HINCRBY', K.counts, ARGV[k], ARGV[k + 1]) end
for k = 6 + 2 * n, #ARGV do redis.call('LPUSH', K.dead, ARGV[k]) end
redis.call('LTRIM', K.dead, 0, tonumber(ARGV[4]) - 1)
finished(batch, now, tonumber(ARGV[3]))
return 1
"""
)
