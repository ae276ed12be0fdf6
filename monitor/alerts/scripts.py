"""Lua scripts of the alert engine: the lease and the fenced state write (the outbox's are in outbox_scripts).

A write that only the leader may make checks the lease token in the same script: a process whose
lease ran out while its command waited in a stalled link changes nothing when that command lands.
"""

from __future__ import annotations

from rqscope.monitor.alerts.outbox_scripts import PRELUDE

# renew when we hold the lease, take it when nobody does
LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: OUTBOX_KEYS, then state, version, history, handover, handover deliveries, then ready zsets.
# ARGV: token, the state version this write follows, history max, handovers taken, handed deliveries
# taken, then counted groups: n, (fingerprint, alert)*n; n, (at, status, alert)*n;
# n, (id, meta, delivery, index of its receiver's ready zset in KEYS)*n; n, (count field)*n.
# Returns the new version; 0 when another process holds the lease, -1 when another write came first
# (a process that took the lease back, or this process's own write that was stuck in the link).
COMMIT = (
    PRELUDE
    + """
if redis.call('GET', K.lease) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[12]) or '0') ~= tonumber(ARGV[2]) then return -1 end
local i = 6
local function group(width, each)
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    each(i)
    i = i + width
  end
end
redis.call('DEL', KEYS[11])
group(2, function(at) redis.call('HSET', KEYS[11], ARGV[at], ARGV[at + 1]) end)
group(3, function(at)
  redis.call('XADD', KEYS[13], 'MAXLEN', '~', ARGV[3], '*',
    'at', ARGV[at], 'status', ARGV[at + 1], 'alert', ARGV[at + 2])
end)
group(4, function(at) enqueue(ARGV[at], ARGV[at + 1], ARGV[at + 2], KEYS[tonumber(ARGV[at + 3])]) end)
group(1, function(at) redis.call('HINCRBY', K.counts, ARGV[at], 0) end)
redis.call('LTRIM', KEYS[14], tonumber(ARGV[4]), -1)
redis.call('LTRIM', KEYS[15], tonumber(ARGV[5]), -1)
return redis.call('INCR', KEYS[12])
"""
)
