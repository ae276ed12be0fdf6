"""The alert leader's once-a-minute history step: queue points and the hourly fold of run rollups.

Both go in one pipeline, one round trip a minute, and every script checks the lease token, so only
the leader writes; the queue points also carry the minute, so a second leader in that minute adds none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from rqscope.monitor import compaction, queue_history
from rqscope.monitor.alerts.lease import Lease
from rqscope.monitor.snapshot import Snapshot

log = logging.getLogger(__name__)
STEP_SECONDS = 15.0  # how often the scheduler asks; the step acts once per minute


class MinuteRecorder:
    def __init__(
        self, redis: Redis, lease: Lease, snapshot: Callable[[], Snapshot], clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.lease = lease
        self.snapshot = snapshot
        self.clock = clock
        self._last_minute = -1
        self._folded: set[int] = set()  # hours known to have their hourly hash, not sent again

    def step(self) -> bool:
        """Record this minute if this process leads and nobody recorded it yet; True when this call did."""
        now = self.clock()
        minute = int(now // 60)
        if minute == self._last_minute or not self.lease.held():
            return False
        snapshot = self.snapshot()
        if not snapshot.redis.up:
            return False
        due = compaction.due_hours(now)
        hours = [h for h in due if h not in self._folded][-compaction.HOURS_PER_STEP :]  # a backlog: newest first
        with self.redis.pipeline(transaction=False) as pipe:
            queue_history.record(pipe, self.lease.holder, snapshot.queues, minute)
            if hours:
                compaction.fold(pipe, self.lease.holder, hours)
            answers = pipe.execute()
        if any(a == compaction.NOT_LEADER for a in answers):
            log.info("history not recorded: another process leads")
            return False
        self._last_minute = minute
        for index, hour in enumerate(hours):
            minutes = answers[1 + index * 60 : 1 + (index + 1) * 60]
            if minutes[-1] == compaction.FINISHED or all(a == compaction.SKIPPED for a in minutes):
                self._folded.add(hour)  # finished now, or before
        self._folded &= set(due)  # older hours drop out of the set
        return answers[0] == 1  # 0: another leader recorded this minute already
