"""Where jobs ended: every place RQ can hold a job id, and the run counters rqscope exported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from bench.stack import QUEUES, TASK, request, samples


def settled(redis: Redis) -> bool:
    """No job queued, being dequeued or running on any load queue."""
    with redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.llen(f"rq:queue:{queue}")
            pipe.llen(f"rq:queue:{queue}:intermediate")
            pipe.zcard(f"rq:wip:{queue}")
        return not any(pipe.execute())


def places(redis: Redis, queues: Sequence[str] = QUEUES) -> dict[str, list[str]]:
    """Every job id RQ holds for the queues, by "queue:place", read in one round trip."""
    registries = ("finished", "failed", "scheduled", "deferred", "canceled")
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.lrange(f"rq:queue:{queue}", 0, -1)
            pipe.lrange(f"rq:queue:{queue}:intermediate", 0, -1)
            pipe.zrange(f"rq:wip:{queue}", 0, -1)  # execution entries: "<job id>:<execution id>"
            for registry in registries:
                pipe.zrange(f"rq:{registry}:{queue}", 0, -1)
        replies = iter(pipe.execute())
    found: dict[str, list[str]] = {}
    for queue in queues:
        for place in ("queued", "dequeuing", "started", *registries):
            ids = [i.decode() for i in next(replies)]
            found[f"{queue}:{place}"] = [i.split(":")[0] for i in ids] if place == "started" else ids
    return found


@dataclass
class Reconciliation:
    finished: int
    failed: int
    missing: list[str]
    duplicated: list[str]
    not_terminal: list[str]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.not_terminal)


def whereabouts(redis: Redis, queues: Sequence[str] = QUEUES) -> dict[str, list[str]]:
    """Every place each job id is held in, by id."""
    seen: dict[str, list[str]] = {}
    for place, members in places(redis, queues).items():
        for job_id in members:
            seen.setdefault(job_id, []).append(place)
    return seen


def misplaced(redis: Redis, ids: Sequence[str], queues: Sequence[str] = QUEUES) -> dict[str, list[str]]:
    """The ids that are not in exactly one place, with the places they are in."""
    seen = whereabouts(redis, queues)
    return {i: seen.get(i, []) for i in ids if len(seen.get(i, ())) != 1}


def reconcile(redis: Redis, ids: Sequence[str]) -> Reconciliation:
    """Where each id ended: exactly one terminal registry is the only right answer."""
    seen = whereabouts(redis)
    missing = [i for i in ids if i not in seen]
    duplicated = [i for i in ids if len(seen.get(i, ())) > 1]
    not_terminal = [
        i for i in ids if len(seen.get(i, ())) == 1 and seen[i][0].split(":")[1] not in ("finished", "failed")
    ]
    kinds = Counter(seen[i][0].split(":")[1] for i in ids if len(seen.get(i, ())) == 1)
    return Reconciliation(kinds["finished"], kinds["failed"], missing, duplicated, not_terminal)


def exported_runs(url: str, task: str = TASK, queues: Sequence[str] = QUEUES) -> Counter[str]:
    """rqscope_task_runs_total for one task, summed over the queues, by outcome."""
    code, body = request("GET", url + "/metrics")
    if code != 200:
        raise RuntimeError(f"/metrics answered {code}")
    runs: Counter[str] = Counter()
    for labels, value in samples(body.decode(), "rqscope_task_runs_total"):
        if labels["task"] == task and labels["queue"] in queues:
            runs[labels["outcome"]] += int(value)
    return runs
