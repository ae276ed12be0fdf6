"""Faults injected into the running stack: real redis-server, `rqscope serve`, forking `rqscope worker`s.

Each scenario asserts invariants (where every job ended, what was counted, what on-call was sent),
never timings. The alert-delivery scenarios (receiver down for two minutes, leader killed) are in
tests/test_alert_e2e.py.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
from redis import Redis
from rq.job import Job
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.tasks.metrics import METRICS_KEY, parse_metrics
from rqscope.tasks.registry import REGISTRY, enqueue_task

from bench import ledger
from bench.ledger import exported_runs, reconcile
from bench.load import enqueue_all, job_bodies
from bench.stack import QUEUES, Scraper, Stack, request
from tests.conftest import redis_binary
from tests.helpers import current_job, wait_for
from tests.receivers import Receiver
from tests.test_retry import make_failed

pytestmark = [pytest.mark.redis, pytest.mark.slow]
REDIS_DOWN_RULE = """rules:
  - name: RedisDown
    kind: redis_down
    for: 1s
    severity: critical
    summary: Redis is unreachable
"""


@pytest.fixture
def persistent_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(binary=redis_binary(), extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    yield server
    server.stop()


def alert_env(tmp_path: Path, receiver: Receiver, rules: str) -> dict[str, str]:
    (tmp_path / "rules.yml").write_text(rules)
    return {"RQSCOPE_ALERT_RULES": str(tmp_path / "rules.yml"), "RQSCOPE_ALERT_INTERVAL": "0.5",
            "RQSCOPE_ALERT_WEBHOOK_URLS": receiver.url, "RQSCOPE_SNAPSHOT_TTL": "0.2"}  # fmt: skip


def finished_count(redis: Redis, queues: tuple[str, ...] = QUEUES) -> int:
    return sum(redis.zcard(f"rq:finished:{q}") + redis.zcard(f"rq:failed:{q}") for q in queues)


@pytest.mark.timeout(300)
def test_redis_restarted_mid_load(persistent_redis: EmbeddedRedis, tmp_path: Path) -> None:
    redis = Redis.from_url(persistent_redis.url, socket_timeout=5)
    jobs = 1500
    with Receiver() as receiver, Stack(persistent_redis.url, 2, alert_env(tmp_path, receiver, REDIS_DOWN_RULE),
                                       logs=tmp_path) as stack:  # fmt: skip
        scraper = Scraper(stack, interval=0.25)
        scraper.start()
        results = []
        producer = threading.Thread(
            target=lambda: results.append(enqueue_all(stack.url, job_bodies(jobs, seconds=0.005), clients=4))
        )
        producer.start()
        wait_for(lambda: finished_count(redis) >= 200, timeout=60)
        # a planned restart: pause clients, then SIGTERM. Without the pause, a BLPOP served in the
        # event-loop turn Redis shuts down in is persisted while its reply is lost, and the job with
        # it: RQ's at-most-once dequeue from several queues, which rqscope does not change (README)
        redis.execute_command("CLIENT", "PAUSE", 10_000, "ALL")
        persistent_redis.halt()
        wait_for(lambda: 0.0 in scraper.up, timeout=30)
        wait_for(lambda: receiver.statuses() == ["firing"], timeout=30)
        persistent_redis.start()
        producer.join(180)
        wait_for(lambda: ledger.settled(redis), timeout=120, interval=0.2)
        wait_for(lambda: len(receiver.statuses()) >= 2, timeout=30)
        wait_for(lambda: scraper.up[-1] == 1.0, timeout=10)
        scraper.stop()
        alive = {name: process.poll() is None for name, process in stack.workers.items()}
        # each gunicorn worker serves its own snapshot, up to RQSCOPE_SNAPSHOT_TTL plus one read old:
        # wait until several scrapes in a row (so every worker) show the final counts
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(sum(exported_runs(stack.url).values()) >= jobs for _ in range(6)), timeout=10)
        runs = exported_runs(stack.url)
        timeline = []
        if sum(runs.values()) != jobs:
            for _ in range(20):
                direct = sum(st.runs for st in parse_metrics(redis.hgetall(METRICS_KEY)).values())
                timeline.append((round(time.monotonic(), 1), sum(exported_runs(stack.url).values()), direct))
                time.sleep(0.5)
        per_queue = {q: dict(exported_runs(stack.url, queues=(q,))) for q in QUEUES}
        logs = stack.logs_text()
    reconciliation = reconcile(redis, [f"load-{n}" for n in range(jobs)])
    assert results and sorted(set(results[0].accepted)) == sorted(f"load-{n}" for n in range(jobs))
    assert (reconciliation.missing, reconciliation.duplicated, reconciliation.not_terminal) == ([], [], [])
    assert alive == {"load-0": True, "load-1": True}, logs[-3000:]
    ended = {q: (redis.zcard(f"rq:finished:{q}"), redis.zcard(f"rq:failed:{q}")) for q in QUEUES}
    assert sum(runs.values()) == jobs, (timeline, per_queue, ended)
    assert receiver.statuses() == ["firing", "resolved"], receiver.bodies
    assert [alert["labels"]["alertname"] for body in receiver.bodies for alert in body["alerts"]] == ["RedisDown"] * 2


def horses(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children()
    except psutil.NoSuchProcess:
        return []


def kill_horses(
    workers: list[subprocess.Popen[bytes]], stop: threading.Event, pace: tuple[float, float] = (0.1, 0.4)
) -> list[int]:
    """SIGKILL a running work horse of a random worker every `pace` seconds until `stop` is set."""
    chooser, killed = random.Random(7), []
    while not stop.wait(chooser.uniform(*pace)):
        running = [h for w in workers for h in horses(w)]
        if running:
            victim = chooser.choice(running)
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
                killed.append(victim.pid)
    return killed


def kill_whole_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its horse (which may just have finished its job and gone)."""
    for process in [*horses(worker), psutil.Process(worker.pid)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)


UNSERVED_RULES = """rules:
  - name: QueueWithoutWorkers
    kind: queue_without_workers
    for: 1s
    severity: critical
    summary: Jobs wait in {queue} and no worker listens to it
  - name: WorkersDead
    kind: dead_workers
    threshold: 0
    for: 0s
    severity: warning
    summary: "{value:.0f} workers stopped sending heartbeats"
"""


@pytest.mark.timeout(300)
def test_horses_and_a_whole_worker_killed(redis_server: EmbeddedRedis, real_redis: Redis, tmp_path: Path) -> None:
    served = [body for body in job_bodies(240, fail_every=0, seconds=0.2) if body["queue"] != "low"]
    lonely = [body for body in job_bodies(240, fail_every=0, seconds=2.0) if body["queue"] == "low"]
    with Receiver() as receiver, Stack(redis_server.url, 0, alert_env(tmp_path, receiver, UNSERVED_RULES),
                                       logs=tmp_path) as stack:  # fmt: skip
        pair = [stack.start_worker(f"pair-{n}", ("high", "default")) for n in range(2)]
        solo = stack.start_worker("solo", ("low",))
        enqueue_all(stack.url, served + lonely, clients=4)
        stop = threading.Event()
        kills: list[int] = []
        killer = threading.Thread(target=lambda: kills.extend(kill_horses(pair, stop)))
        killer.start()
        running_job = wait_for(lambda: horses(solo) and current_job(real_redis, "solo"), timeout=60)
        kill_whole_worker(solo)  # its job takes 2 s: the one it holds when killed
        wait_for(lambda: not (real_redis.llen("rq:queue:high") or real_redis.llen("rq:queue:default")), timeout=120)
        stop.set()
        killer.join(10)
        wait_for(lambda: not (real_redis.zcard("rq:wip:high") or real_redis.zcard("rq:wip:default")), timeout=60)
        # the dead worker is flagged within three of its publish intervals (1 s here), not RQ's 480 s
        dead = 'rqscope_workers{redis="default",state="dead"} 1.0'
        wait_for(lambda: dead in request("GET", stack.url + "/metrics")[1].decode(),
                 timeout=15)  # fmt: skip
        wait_for(lambda: {"QueueWithoutWorkers", "WorkersDead"} <= firing(receiver), timeout=30)
        # an operator cleans the dead worker up: its registration goes, and the job it held fails
        assert request("POST", stack.url + "/workers/solo/forget")[0] == 302
        wait_for(lambda: exported_runs(stack.url, queues=("low",))["killed"] == 1, timeout=10, interval=0.2)
        served_runs = partial(exported_runs, stack.url, queues=("high", "default"))
        wait_for(lambda: sum(served_runs().values()) >= len(served), timeout=10, interval=0.2)
        runs = served_runs()
    outcome = reconcile(real_redis, [body["job_id"] for body in served])
    assert (outcome.missing, outcome.duplicated, outcome.not_terminal) == ([], [], [])
    assert len(kills) >= 3 and outcome.failed >= 1
    assert runs["killed"] == outcome.failed and runs["success"] == outcome.finished
    assert sum(runs.values()) == len(served)
    for queue in ("high", "default"):
        for job in Job.fetch_many([i.decode() for i in real_redis.zrange(f"rq:failed:{queue}", 0, -1)], real_redis):
            result = job.latest_result() if job is not None else None
            assert result is not None and "Work-horse terminated unexpectedly" in (result.exc_string or "")
    # the job the dead worker held was failed when it was cleaned up; nothing else on its queue moved
    assert real_redis.zrange("rq:wip:low", 0, -1) == []
    assert real_redis.zrange("rq:failed:low", 0, -1) == [running_job.encode()]
    assert Job.fetch(running_job, real_redis).get_status() == "failed"
    assert real_redis.llen("rq:queue:low") == len(lonely) - 1 - real_redis.zcard("rq:finished:low")
    assert not real_redis.sismember("rq:workers", "rq:worker:solo")
    assert [
        a["labels"].get("queue") for a in alerts(receiver) if a["labels"]["alertname"] == "QueueWithoutWorkers"
    ] == ["low"]


def alerts(receiver: Receiver) -> list[dict[str, Any]]:
    return [alert for body in receiver.bodies for alert in body["alerts"]]


def firing(receiver: Receiver) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts(receiver) if a["status"] == "firing"}


@pytest.mark.timeout(300)
def test_retry_all_while_workers_die_and_redis_pauses(redis_server: EmbeddedRedis, real_redis: Redis,
                                                      tmp_path: Path) -> None:  # fmt: skip
    ids = make_failed(real_redis, 10_000)
    env = {"RQSCOPE_TASK_MODULES": "tests.sample_tasks", "RQSCOPE_REDIS_TIMEOUT": "10"}
    with Stack(redis_server.url, 0, env, logs=tmp_path) as stack:
        workers = [stack.start_worker(f"retry-{n}", ("default",)) for n in range(3)]
        wait_for(lambda: real_redis.scard("rq:workers") == 3, timeout=30)
        stop = threading.Event()
        kills: list[int] = []
        killer = threading.Thread(target=lambda: kills.extend(kill_horses(workers[:2], stop, pace=(0.05, 0.2))))
        pauses: list[int] = []
        pauser = threading.Thread(target=lambda: pauses.append(pause_redis(redis_server.url, 4.0, 0.25)))
        retried: list[int] = []
        killer.start()
        pauser.start()
        time.sleep(0.1)  # Redis is asleep when the retry starts, and keeps pausing between its batches
        while not retried or pauser.is_alive():
            code, body = request("POST", stack.url + "/api/queues/default/retry", {}, timeout=60)
            if code == 200:
                retried.append(json.loads(body)["retried"])
            if retried and workers[2].poll() is None:
                wait_for(lambda: horses(workers[2]), timeout=30)
                kill_whole_worker(workers[2])  # mid-job
                workers[2].wait(10)
        pauser.join(30)
        stop.set()
        killer.join(10)
        for process in workers[:2]:
            process.terminate()  # a warm shutdown: each finishes its job, so nothing moves while we count
            process.wait(60)
    assert ledger.misplaced(real_redis, ids) == {}
    assert sum(retried) >= 10_000 and kills and pauses[0] >= 10 and real_redis.zcard("rq:finished:default") > 0


@pytest.mark.timeout(240)
def test_warm_shutdown_at_random_moments(redis_server: EmbeddedRedis, real_redis: Redis, tmp_path: Path) -> None:
    """SIGTERM lands anywhere in a busy worker's cycle (RQ's handler could deadlock on the Redis pool
    lock its own thread held); each worker must finish its job and leave, every job in one place."""
    t_ok, queues = REGISTRY.get("t_ok"), ("q1", "q2")  # two queues: RQ's BLPOP path
    ids = [enqueue_task(t_ok, (n,), {}, connection=real_redis, queue=queues[n % 2])[0].id for n in range(3000)]
    ended = partial(finished_count, real_redis, queues)
    chooser, exits = random.Random(11), []
    env = {"RQSCOPE_TASK_MODULES": "tests.sample_tasks"}
    with Stack(redis_server.url, 0, env, logs=tmp_path) as stack:
        for n in range(12):
            worker = stack.start_worker(f"stop-{n}", queues)
            wait_for(partial(lambda before: ended() > before, ended()), timeout=30)
            time.sleep(chooser.uniform(0, 0.05))
            worker.terminate()
            try:
                exits.append(worker.wait(30))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker stop-{n} ignored SIGTERM: " + stack.logs_text()[-2000:])
    found = ledger.places(real_redis, queues)
    assert exits == [0] * 12
    assert found["q1:started"] == found["q2:started"] == []
    assert ledger.misplaced(real_redis, ids, queues) == {}


def pause_redis(url: str, duration: float, seconds: float) -> int:
    """Freeze the whole server with DEBUG SLEEP, back to back, as a slow disk or a stuck fork would;
    every other client's command waits for the end of the current pause."""
    client = Redis.from_url(url, socket_timeout=seconds + 5)
    deadline, pauses = time.monotonic() + duration, 0
    while time.monotonic() < deadline:
        client.execute_command("DEBUG", "SLEEP", seconds)
        pauses += 1
    client.close()
    return pauses
