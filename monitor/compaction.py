"""Fold each finished hour of per-minute run rollups into one hourly hash, kept 8 days.

Each script folds one minute into a staging hash, so that none holds Redis for longer than one minute
hash takes (about 0.5 ms at 50 task/queue pairs): a backlog of hours after a long outage is drained a
few hours a step, with other clients' commands running between the scripts. The staging hash counts the
minutes folded so far and only the next minute is added, so a replay adds nothing; the last minute
renames it into the hourly hash, which readers therefore only ever see whole. Every script checks the
alert lease token first: a leader whose lease ran out while its command waited changes nothing. An hour
is folded once its last minute is GRACE_SECONDS old, so a run recorded a moment after its minute ended
still lands in the minute it is counted in.
"""

from __future__ import annotations

from redis.client import Pipeline
from rqscope.monitor.alerts.keys import LEASE_KEY
from rqscope.monitor.rollups import HOURLY_KEY_TEMPLATE, HOURLY_TTL_SECONDS
from rqscope.tasks.metrics import ROLLUP_KEY_TEMPLATE, ROLLUP_TTL_SECONDS

GRACE_SECONDS = 120
DONE_FIELD = "compacted"  # minutes folded so far; 60 in a finished hour (an hour without runs has only this)
# the minute hashes live ROLLUP_TTL_SECONDS, so only the hours they still fully cover can be folded
FOLDABLE_HOURS = (ROLLUP_TTL_SECONDS - GRACE_SECONDS) // 3600 - 1
HOURS_PER_STEP = 2  # a backlog drains this many hours a minute
NOT_LEADER, SKIPPED, FOLDED, FINISHED = -1, 0, 1, 2

# KEYS: the alert lease, the hourly hash, its staging hash, the minute's hash. ARGV: the lease token, the
# hourly TTL, the minute's place in its hour (0-59). Returns NOT_LEADER, SKIPPED (the hour is finished,
# or this minute is not the next one), FOLDED, or FINISHED (this minute was the hour's last).
FOLD_MINUTE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local place = tonumber(ARGV[3])
if tonumber(redis.call('HGET', KEYS[3], 'compacted') or '0') ~= place then return 0 end
local raw = redis.call('HGETALL', KEYS[4])
for j = 1, #raw, 2 do
  -- a value HINCRBYFLOAT would refuse (" 2", "nan", "inf") must not stop the script half-way: Redis
  -- keeps what a failed script wrote, and the retry would add it again
  local n = tonumber(raw[j + 1])
  if n and n == n and n ~= math.huge and n ~= -math.huge then
    redis.call('HINCRBYFLOAT', KEYS[3], raw[j], string.format('%.17g', n))
  end
end
redis.call('HSET', KEYS[3], 'compacted', place + 1)
redis.call('EXPIRE', KEYS[3], ARGV[2])
if place < 59 then return 1 end
redis.call('RENAME', KEYS[3], KEYS[2])
return 2
"""


def due_hours(now: float) -> list[int]:
    """The finished hours whose minutes are all still kept, oldest first."""
    last = int((now - GRACE_SECONDS) // 3600) - 1
    return list(range(last - FOLDABLE_HOURS + 1, last + 1))


def fold(pipe: Pipeline, token: str, hours: list[int]) -> None:
    """Queue one script per minute of these hours on `pipe`, in order; each answers as FOLD_MINUTE says."""
    for hour in hours:
        final = HOURLY_KEY_TEMPLATE.format(hour=hour)
        for place in range(60):
            keys = (LEASE_KEY, final, final + ":staging", ROLLUP_KEY_TEMPLATE.format(minute=hour * 60 + place))
            # EVAL, not a registered script: in a pipeline redis-py would first ask SCRIPT EXISTS
            pipe.eval(FOLD_MINUTE, len(keys), *keys, token, HOURLY_TTL_SECONDS, place)
