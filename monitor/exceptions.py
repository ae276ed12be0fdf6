"""Exception types among a queue's newest failed jobs, counted incrementally so a view stays cheap.

A failed registry entry (id, score) stands for one failure: RQ scores it by when the failure expires,
so a job that fails again comes back with a new score. Each process remembers the exception type of
the entries it has read, and a view reads only the entries it has not seen, at most `step` of them,
newest first. It counts the longest run of newest entries whose types are known and says how many
that was: a cold start at a million failed jobs shows the newest 1,500, and each later view extends
the count by up to 1,500 more until it covers the newest `limit` (10,000). A view costs three
O(log N) reads while the registry's size, newest entry and window's last entry stay the same, else
one ZREVRANGE of at most `limit` entries plus at most `step` result reads, whatever the registry's size.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from redis import Redis
from rqscope.monitor.jobs import FAILED_RESULT_TYPE, RESULTS_KEY_TEMPLATE, decode_exc, entry_key, split_exception
from rqscope.monitor.snapshot import JOB_KEY_TEMPLATE

SUMMARY_LIMIT = 10_000  # newest failed jobs a summary covers
SUMMARY_STEP = 1_500  # entries one view reads at most: about 6 ms of Redis time, beside the window's 10 ms
REREAD_SECONDS = 30.0  # an unchanged-looking registry's window is read again after this long
MAX_QUEUES = 16  # queues whose entries a process remembers, least recently viewed forgotten first
EXTENSION = "rqscope.exception_summaries"
UNKNOWN = "unknown"
RESULTS_PREFIX = RESULTS_KEY_TEMPLATE.format(id="").encode()  # ids stay bytes: any id keys its exact bytes
JOB_PREFIX = JOB_KEY_TEMPLATE.format(id="").encode()


class ExceptionSummary(NamedTuple):
    counts: Counter[str]
    scanned: int  # the newest failed jobs counted
    total: int  # the failed registry's size


def exception_type(result: Any, exc_info: Any) -> str:
    """The type from the latest result when it is a failure, else from the job hash's legacy exc_info."""
    text = ""
    if isinstance(result, list) and result:
        fields = result[0][1]
        if fields.get(b"type") == FAILED_RESULT_TYPE and fields.get(b"exc_string"):
            text = decode_exc(fields[b"exc_string"])
    if not text and exc_info:
        text = decode_exc(exc_info)
    return (split_exception(text)[0] if text else None) or UNKNOWN


@dataclass
class _Memory:
    """What a process knows of one queue's failed registry."""

    known: dict[bytes, tuple[float, str]] = field(default_factory=dict)  # id -> (score, exception type)
    fingerprint: tuple[Any, ...] = ()
    summary: ExceptionSummary | None = None  # set once it covered the whole window
    read_at: float = 0.0


class ExceptionSummaries:
    """Per-process memory of failed entries' exception types, for one Redis."""

    def __init__(
        self,
        redis: Redis,
        limit: int = SUMMARY_LIMIT,
        step: int = SUMMARY_STEP,
        max_queues: int = MAX_QUEUES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.step = step
        self.max_queues = max_queues
        self.clock = clock
        self._memory: OrderedDict[str, _Memory] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, queue: str) -> ExceptionSummary:
        """Counts per exception type over the newest failed jobs this view could cover."""
        key = entry_key(queue, "failed")
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, 0, 0, withscores=True)
        pipe.zrevrange(key, self.limit - 1, self.limit - 1, withscores=True)
        fingerprint = tuple(cast(list[Any], pipe.execute()))
        with self._lock:
            memory = self._memory.get(queue) or _Memory()  # never changed in place: a new one replaces it
        # Same size, newest and last entry of the window: the window is unchanged, short of a removal and
        # an insertion inside it between two views, which a re-read every REREAD_SECONDS catches
        if memory.summary and memory.fingerprint == fingerprint and self.clock() - memory.read_at < REREAD_SECONDS:
            return memory.summary
        window = cast(list[tuple[bytes, float]], self.redis.zrevrange(key, 0, self.limit - 1, withscores=True))
        known = memory.known
        unseen = [job_id for job_id, score in window if known.get(job_id, (None,))[0] != score][: self.step]
        types = self._read(unseen)
        scores = dict(window)
        known = {job_id: known[job_id] for job_id in scores if job_id in known}  # forget what left the window
        known.update((job_id, (scores[job_id], kind)) for job_id, kind in types.items())
        counts: Counter[str] = Counter()
        scanned = 0
        for job_id, score in window:
            entry = known.get(job_id)
            if entry is None or entry[0] != score:
                break  # not read yet: a later view continues from here
            counts[entry[1]] += 1
            scanned += 1
        summary = ExceptionSummary(counts, scanned, int(fingerprint[0]))
        complete = summary if scanned == len(window) else None
        with self._lock:
            self._memory[queue] = _Memory(known, fingerprint, complete, self.clock())
            self._memory.move_to_end(queue)
            while len(self._memory) > self.max_queues:
                self._memory.popitem(last=False)
        return summary

    def _read(self, ids: list[bytes]) -> dict[bytes, str]:
        """Exception types of these jobs: their latest results in one round trip, exc_info where there is none."""
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.xrevrange(RESULTS_PREFIX + job_id, count=1)
        results = dict(zip(ids, pipe.execute(raise_on_error=False), strict=True))
        types = {job_id: exception_type(result, None) for job_id, result in results.items()}
        legacy = [job_id for job_id, kind in types.items() if kind == UNKNOWN]
        if legacy:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in legacy:
                pipe.hget(JOB_PREFIX + job_id, "exc_info")
            for job_id, exc_info in zip(legacy, pipe.execute(raise_on_error=False), strict=True):
                types[job_id] = exception_type(None, exc_info if isinstance(exc_info, bytes) else None)
        return types


def summaries(extensions: MutableMapping[str, Any], redis: Redis) -> ExceptionSummaries:
    """The app's summaries, created on first use; `extensions` is the app's per-app state (app.extensions)."""
    found = extensions.get(EXTENSION)
    if found is None:
        found = extensions.setdefault(EXTENSION, ExceptionSummaries(redis))
    return cast(ExceptionSummaries, found)
