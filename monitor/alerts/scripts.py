"""Lua scripts of the alert engine: the lease, the fenced state write, and the outbox's claims.

A write that only the leader may make checks the lease token in the same script: a process whose
lease ran out while its command waited in a stalled link changes nothing when that command lands.
"""

from __future__ import annotations

# renew when we hold the lease, take it when nobody does
LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: lease, state, history, outbox, entries, meta, due, sequence, finished, counts, handover, handover deliveries
# ARGV: token, history max, handovers taken, handed deliveries taken, then counted groups:
#   n, (fingerprint, alert)*n; n, (at, status, alert)*n; n, (id, meta, delivery)*n; n, (count field)*n
COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 5
local function group(width, each)
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    each(i)
    i = i + width
  end
end
redis.call('DEL', KEYS[2])
group(2, function(at) redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1]) end)
group(3, function(at)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
    'at', ARGV[at], 'status', ARGV[at + 1], 'alert', ARGV[at + 2])
end)
group(3, function(at)
  local id = ARGV[at]
  -- queued twice (a write replayed after a lost reply) or already finished: nothing to do
  if redis.call('HEXISTS', KEYS[5], id) == 0 and not redis.call('ZSCORE', KEYS[9], id) then
    redis.call('HSET', KEYS[5], id, ARGV[at + 2])
    redis.call('HSET', KEYS[6], id, ARGV[at + 1])
    redis.call('HSET', KEYS[7], id, 0)
    redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[8]), id)
  end
end)
group(1, function(at) redis.call('HINCRBY', KEYS[10], ARGV[at], 0) end)
redis.call('LTRIM', KEYS[11], tonumber(ARGV[3]), -1)
redis.call('LTRIM', KEYS[12], tonumber(ARGV[4]), -1)
return 1
"""

# KEYS: lease, outbox, entries, meta, due, claims, finished, dead, counts
# ARGV: token, now ms, claim ms, limit, scan, give up ms, dead max, receivers this process can send to...
# The oldest due entries first. An entry that waits (backoff, or another process's claim) holds the
# later ones for the same alert and receiver, so a resolved note never overtakes its firing one.
CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {} end
local now, claim, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local known = {}
for k = 8, #ARGV do known[ARGV[k]] = true end
local held, claimed = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[5]) - 1)) do
  if #claimed >= limit then break end
  local entry, meta = redis.call('HGET', KEYS[3], id), redis.call('HGET', KEYS[4], id)
  local queued, fingerprint, receiver
  if meta then queued, fingerprint, receiver = string.match(meta, '^(%d+)|([^|]*)|(.*)$') end
  if not entry or not receiver then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
  else
    local lane = receiver .. '\\n' .. fingerprint
    local due = tonumber(redis.call('HGET', KEYS[5], id) or '0')
    if held[lane] then
    elseif not known[receiver] and now - tonumber(queued) > tonumber(ARGV[6]) then
      -- no process has been configured to send to this receiver for that long
      redis.call('LPUSH', KEYS[8], cjson.encode({receiver = receiver, reason = 'no process sends to this receiver',
        at = now / 1000, entry = entry}))
      redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[7]) - 1)
      redis.call('HINCRBY', KEYS[9], receiver .. '\\n' .. 'dropped', 1)
      redis.call('ZADD', KEYS[7], now, id)
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[5], id)
      redis.call('HDEL', KEYS[6], id)
    elseif not known[receiver] or (due > now and redis.call('HGET', KEYS[6], id) ~= ARGV[1]) then
      -- (a claim of this process's own is stale: it sends nothing while it claims)
      held[lane] = true
    else
      redis.call('HSET', KEYS[5], id, now + claim)
      redis.call('HSET', KEYS[6], id, ARGV[1])
      claimed[#claimed + 1] = entry
    end
  end
end
return claimed
"""

# KEYS: outbox, entries, meta, due, claims, finished, dead, counts
# ARGV: token, id, result, now ms, count field, keep finished ms, dead max, next due ms, entry, dead letter
# Counted whatever happens: the attempt was made. Applied only while this process still holds the claim.
FINISH = """
redis.call('HINCRBY', KEYS[8], ARGV[5], 1)
local id = ARGV[2]
if redis.call('HGET', KEYS[5], id) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[5], id)
if ARGV[3] == 'retried' then
  redis.call('HSET', KEYS[2], id, ARGV[9])
  redis.call('HSET', KEYS[4], id, ARGV[8])
  return 1
end
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('ZADD', KEYS[6], ARGV[4], id)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[6]))
if ARGV[3] == 'dropped' then
  redis.call('LPUSH', KEYS[7], ARGV[10])
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[7]) - 1)
end
return 1
"""

# KEYS: due, claims. ARGV: token, now ms, ids... Claims this process will not use, free for the next leader now.
RELEASE = """
for k = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[k]) == ARGV[1] then
    redis.call('HDEL', KEYS[2], ARGV[k])
    redis.call('HSET', KEYS[1], ARGV[k], ARGV[2])
  end
end
return 1
"""
