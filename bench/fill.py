"""Fill a Redis with a large, realistic RQ state, written directly with pipelines for speed."""

from __future__ import annotations

import pickle
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta

from redis import Redis

FUNC = "rqscope.tasks.examples.process_upload"


def utc(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/tasks/examples.py", line 27, in _work\n'
    "    raise error\n"
    "rqscope.tasks.examples.CorruptUploadError: upload {id}: bad header at byte 0\n"
)


def job_hash(job_id: str, queue: str, status: str, age: float, failed: bool = False) -> dict[str, bytes | str]:
    data = zlib.compress(pickle.dumps((FUNC, None, (f"up-{job_id[:8]}",), {"size_bytes": 4096})))
    fields: dict[str, bytes | str] = {
        "data": data,
        "origin": queue,
        "status": status,
        "created_at": utc(age + 1),
        "enqueued_at": utc(age),
        "description": f"{FUNC}('up-{job_id[:8]}', size_bytes=4096)",
        "timeout": "120",
        "result_ttl": "500",
        "failure_ttl": "31536000",
    }
    if status in ("finished", "failed", "started"):
        fields["started_at"] = utc(age - 0.5)
    if status in ("finished", "failed"):
        fields["ended_at"] = utc(age - 0.6)
    if failed:
        fields["exc_info"] = zlib.compress(TRACEBACK.format(id=job_id).encode())
    return fields


def fill_state(
    redis: Redis,
    queues: int = 50,
    queued: int = 100_000,
    failed: int = 20_000,
    finished: int = 20_000,
    started: int = 200,
    workers: int = 100,
    failed_queue: str | None = None,
    prefix: str = "rq",
) -> list[str]:
    """Write the state, under RQ key `prefix`; jobs are spread evenly over the queues unless `failed_queue` takes
    all failures."""
    names = [f"queue-{i:03d}" for i in range(queues)]
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    pending = 0

    def flush(force: bool = False) -> None:
        nonlocal pending
        if force or pending >= 5000:
            pipe.execute()
            pending = 0

    for name in names:
        pipe.sadd(f"{prefix}:queues", f"{prefix}:queue:{name}")

    def add_jobs(count: int, status: str, spread: list[str]) -> None:
        nonlocal pending
        for i in range(count):
            queue = spread[i % len(spread)]
            job_id = str(uuid.uuid4())
            age = (count - i) * 0.01
            pipe.hset(f"{prefix}:job:{job_id}", mapping=job_hash(job_id, queue, status, age, failed=status == "failed"))
            if status == "queued":
                pipe.rpush(f"{prefix}:queue:{queue}", job_id)
            else:
                key = f"{prefix}:" + {"started": "wip:", "finished": "finished:", "failed": "failed:"}[status] + queue
                score = now + (31536000 if status == "failed" else 500) - age
                pipe.zadd(key, {job_id if status != "started" else f"{job_id}:exec-{i}": score})
            pending += 2
            flush()

    add_jobs(queued, "queued", names)
    add_jobs(failed, "failed", [failed_queue] if failed_queue else names)
    add_jobs(finished, "finished", names)
    add_jobs(started, "started", names)
    for i in range(workers):
        key = f"{prefix}:worker:{uuid.uuid4().hex}"
        pipe.sadd(f"{prefix}:workers", key)
        served = [names[i % len(names)], names[(i + 1) % len(names)]]
        for queue in served:
            pipe.sadd(f"{prefix}:workers:{queue}", key)
        pipe.hset(
            key,
            mapping={
                "birth": utc(3600),
                "last_heartbeat": utc(i % 30),
                "queues": ",".join(served),
                "pid": str(10_000 + i),
                "hostname": f"host-{i % 4}",
                "ip_address": "127.0.0.1",
                "version": "2.12.0",
                "python_version": "3.11.7",
                "state": "busy" if i < started else "idle",
                "successful_job_count": str(100 + i),
                "failed_job_count": str(i % 7),
                "total_working_time": str(1000.5 + i),
            },
        )
        pipe.expire(key, 480)
        pending += 5
        flush()
    flush(force=True)
    return names
