"""Fold each finished hour of per-minute run rollups into one hourly hash, kept 8 days.

The fold is one Lua script: it checks the alert lease token first (a leader whose lease ran out while
its command waited changes nothing), and it skips an hour whose hourly hash exists, so a replay or a
second leader never counts an hour twice. An hour is folded once its last minute is GRACE_SECONDS
old, so that a run recorded a moment after its minute ended still lands in the minute it is counted in.
"""

from __future__ import annotations

from redis.client import Pipeline
from rqscope.monitor.alerts.keys import LEASE_KEY
from rqscope.monitor.rollups import HOURLY_KEY_TEMPLATE, HOURLY_TTL_SECONDS
from rqscope.tasks.metrics import ROLLUP_KEY_TEMPLATE, ROLLUP_TTL_SECONDS

GRACE_SECONDS = 120
DONE_FIELD = "compacted"  # always written, so an hour without runs is not folded again; not a rollup field
# the minute hashes live ROLLUP_TTL_SECONDS, so only the hours they still fully cover can be folded
FOLDABLE_HOURS = (ROLLUP_TTL_SECONDS - GRACE_SECONDS) // 3600 - 1

# KEYS[1]: the alert lease; then per hour its hourly hash followed by its 60 minute hashes.
# ARGV[1]: the lease token, ARGV[2]: the hourly TTL. Returns -1 when another process leads, else the
# number of hours it folded; an hour whose hourly hash exists is left alone.
FOLD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local folded = 0
for h = 2, #KEYS, 61 do
  if redis.call('EXISTS', KEYS[h]) == 0 then
    local sums, order = {}, {}
    for m = h + 1, h + 60 do
      local raw = redis.call('HGETALL', KEYS[m])
      for j = 1, #raw, 2 do
        local n = tonumber(raw[j + 1])
        if n then
          if sums[raw[j]] == nil then
            order[#order + 1] = raw[j]
            sums[raw[j]] = 0
          end
          sums[raw[j]] = sums[raw[j]] + n
        end
      end
    end
    redis.call('HSET', KEYS[h], 'compacted', '1')
    local args = {}
    for _, name in ipairs(order) do
      args[#args + 1] = name
      args[#args + 1] = string.format('%.17g', sums[name])
      if #args >= 400 then
        redis.call('HSET', KEYS[h], unpack(args))
        args = {}
      end
    end
    if #args > 0 then redis.call('HSET', KEYS[h], unpack(args)) end
    redis.call('EXPIRE', KEYS[h], ARGV[2])
    folded = folded + 1
  end
end
return folded
"""


def due_hours(now: float) -> list[int]:
    """The finished hours whose minutes are all still kept, oldest first."""
    last = int((now - GRACE_SECONDS) // 3600) - 1
    return list(range(last - FOLDABLE_HOURS + 1, last + 1))


def fold(pipe: Pipeline, token: str, hours: list[int]) -> None:
    """Queue the fold of these hours on `pipe`; its answer is -1 (not the leader) or how many it folded."""
    keys = [LEASE_KEY]
    for hour in hours:
        keys.append(HOURLY_KEY_TEMPLATE.format(hour=hour))
        keys += [ROLLUP_KEY_TEMPLATE.format(minute=hour * 60 + m) for m in range(60)]
    # EVAL, not a registered script: in a pipeline redis-py would first ask SCRIPT EXISTS, one more round trip
    pipe.eval(FOLD, len(keys), *keys, token, HOURLY_TTL_SECONDS)
