"""Each hook on RQ's internals breaks loudly, at start-up or here, when RQ changes underneath it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, cast

import pytest
import rq
from redis import Redis
from rq import Queue, Worker
from rq.executions import ExecutionRegistry
from rq.group import Group
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rqscope.tasks.errors import RqscopeError
from rqscope.tasks.registry import enqueue
from rqscope.tasks.rq_internals import KEYS, REGISTRY_NAMES, Keys, fail_job, verify_rq
from rqscope.tasks.rq_internals.checks import OPTIONAL_SIGNATURES, SIGNATURES
from rqscope.tasks.worker import InstrumentedWorker

from tests.helpers import REPO, wait_for
from tests.receivers import Receiver
from tests.test_auth_caller import PASSWORD, TOKEN, USERS, sidecar, sign_in

RQ3 = tuple(int(p) for p in rq.__version__.split(".")[:2]) >= (3, 0)


def test_the_installed_rq_has_every_hooked_signature() -> None:
    verify_rq()


@pytest.mark.parametrize(
    ("cls", "name"), sorted(SIGNATURES, key=lambda k: (k[0].__name__, k[1])), ids=lambda v: getattr(v, "__name__", v)
)
def test_a_changed_signature_stops_the_worker_naming_the_method(
    cls: type, name: str, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def changed(self: Any, renamed: Any, *, new_flag: bool = False) -> None:  # not a shape any hook accepts
        raise AssertionError("never called")

    monkeypatch.setattr(cls, name, changed)
    with pytest.raises(RqscopeError, match=rf"changed {cls.__name__}\.{name}\b.*rqscope supports rq"):
        InstrumentedWorker(["default"], connection=redis)


def test_a_missing_method_is_named() -> None:
    with pytest.raises(RqscopeError, match=r"Worker\.dequeue_gone \(missing\)"):
        verify_rq({(Worker, "dequeue_gone"): (("self",),)})


def test_optional_hooks_are_checked_where_rq_has_them(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    for cls, name in OPTIONAL_SIGNATURES:
        if hasattr(cls, name):
            monkeypatch.setattr(cls, name, lambda self, other: None)
            with pytest.raises(RqscopeError, match=name):
                InstrumentedWorker(["default"], connection=redis)


def test_a_worker_without_the_private_attributes_is_refused(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Worker.__init__

    def without_flag(self: Worker, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self._horse_pid

    monkeypatch.setattr(Worker, "__init__", without_flag)
    with pytest.raises(RqscopeError, match="_horse_pid"):
        InstrumentedWorker(["default"], connection=redis)


def test_keys_are_rqs_own(redis: Redis) -> None:
    queue = Queue("team/a", connection=redis)
    worker = Worker([queue], connection=redis, name="w1")
    job = Job.create(print, id="j1", connection=redis)
    assert KEYS.queues == Queue.redis_queues_keys
    assert KEYS.queue("team/a") == queue.key
    assert KEYS.intermediate("team/a") == IntermediateQueue(queue.key, redis).key
    assert KEYS.workers == Worker.redis_workers_keys
    assert KEYS.worker("w1") == worker.key
    assert KEYS.job("j1") == job.key
    assert KEYS.results("j1") == Result.get_key("j1")
    assert KEYS.executions_prefix + "j1" == ExecutionRegistry("j1", connection=redis).key
    assert (KEYS.group_prefix, KEYS.groups) == (Group.REDIS_GROUP_NAME_PREFIX, Group.REDIS_GROUP_KEY)
    registries: dict[str, type] = {
        "started": StartedJobRegistry,
        "deferred": DeferredJobRegistry,
        "scheduled": ScheduledJobRegistry,
        "finished": FinishedJobRegistry,
        "failed": FailedJobRegistry,
        "canceled": CanceledJobRegistry,
    }
    if RQ3:
        from rq.registry import ReadyJobRegistry  # type: ignore[attr-defined]

        registries["ready"] = ReadyJobRegistry
    for state, registry in registries.items():
        assert KEYS.registry(state, "team/a") == registry("team/a", connection=redis).key, state
    assert set(registries) <= set(REGISTRY_NAMES)


def test_job_page_keys_are_rqs_own(redis: Redis) -> None:
    parent = Job.create(print, id="p-1", connection=redis)
    assert KEYS.results("p-1") == Result.get_key("p-1")
    assert KEYS.dependents("p-1") == parent.dependents_key == Job.dependents_key_for("p-1")
    assert KEYS.group("g-1") == Group.get_key("g-1") == Group(redis, name="g-1").key


def test_cron_keys_are_rqs_own(redis: Redis) -> None:
    from rq import cron_scheduler_registry
    from rq.cron import CronJob, CronScheduler

    scheduler = CronScheduler(redis, name="host:1:ab/\n")
    job = CronJob("q", func_name="app.cleanup", interval=60, name="nightly clean-up")
    assert KEYS.cron_schedulers == cron_scheduler_registry.get_registry_key()
    assert KEYS.cron_scheduler(scheduler.name) == scheduler.key
    assert KEYS.cron_job_history(job.name) == job.job_history_key
    if RQ3:
        from rq import cron_job_registry  # type: ignore[attr-defined]
        from rq.cron import get_cron_job_history_key  # type: ignore[attr-defined]

        assert KEYS.cron_jobs == cron_job_registry.get_registry_key()
        assert KEYS.cron_job_history("a:b") == get_cron_job_history_key("a:b")


def test_keys_follow_a_prefix() -> None:
    keys = Keys("{billing}")
    assert keys.queue("q") == "{billing}:queue:q"
    assert keys.registry("started", "q") == "{billing}:wip:q"
    assert keys.rate_limit("k", "allowed") == "{billing}:rl:k:allowed"


def test_rqscopes_own_keys_keep_their_names_under_rqs_default_prefix() -> None:
    from rqscope.monitor import audit, cron_memory, delete, queue_history, rollups
    from rqscope.monitor.alerts import keys, silences
    from rqscope.tasks import metrics, procstats
    from rqscope.web import ratelimit, session_key, sessions

    assert KEYS.prefix == "rq"  # an upgrade keeps every counter, alert state and session it had
    assert (metrics.METRICS_KEY, metrics.ROLLUP_KEY_TEMPLATE.format(minute=7)) == (
        "rqscope:metrics",
        "rqscope:metrics:m:7",
    )
    assert (keys.LEASE_KEY, keys.STATE_KEY, keys.ready_key("hook")) == (
        "rqscope:alerts:leader",
        "rqscope:alerts:state",
        "rqscope:alerts:outbox:ready:hook",
    )
    assert (audit.AUDIT_KEY, silences.SILENCES_KEY, session_key.SECRET_KEY) == (
        "rqscope:audit",
        "rqscope:alerts:silences",
        "rqscope:session-key",
    )
    assert (rollups.HOURLY_KEY_TEMPLATE.format(hour=3), queue_history.history_key("q")) == (
        "rqscope:metrics:h:3",
        b"rqscope:history:queue:q",
    )
    assert (
        procstats.PROCS_KEY,
        procstats.PROC_KEY_TEMPLATE.format(id="p"),
        metrics.RUN_MARKER_TEMPLATE.format(id="r"),
    ) == (
        "rqscope:procs",
        "rqscope:proc:p",
        "rqscope:run:r",
    )
    assert (cron_memory.SEEN_KEY, cron_memory.copy_key("s"), delete.PENDING_KEY) == (
        "rqscope:cron:seen",
        b"rqscope:cron:seen:s",
        "rqscope:emptying",
    )
    assert sessions.SESSION_KEY.format("id").startswith("rqscope:session:")
    assert ratelimit.FAILURES_KEY.format(kind="user", digest="d") == "rqscope:signin-failures:user:d"


def test_rqscopes_own_keys_share_the_slot_of_any_other_prefix() -> None:
    assert Keys("rq").own("metrics") == "rqscope:metrics"
    assert Keys("{billing}").own("metrics") == "{billing}:rqscope:metrics"
    assert Keys("{rq}").for_format().own("metrics:m:{minute}").format(minute=5) == "{rq}:rqscope:metrics:m:5"
    assert Keys("app.rq").own("audit") == "app.rq:rqscope:audit"


def t_ok_func():  # type: ignore[no-untyped-def]
    from rqscope.tasks.registry import REGISTRY

    return REGISTRY.get("t_ok").func


def test_fail_job_records_what_rq_records(real_redis: Redis) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    with real_redis.pipeline() as pipe:
        fail_job(job, "Traceback: it died", "w1", pipe)
        pipe.execute()
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry(job.origin, connection=real_redis).get_job_ids()
    (result,) = Result.all(job, serializer=job.serializer)
    assert result.type == Result.Type.FAILED
    assert result.exc_string == "Traceback: it died"


def test_schedule_job_writes_nothing_outside_the_transaction(real_redis: Redis) -> None:
    from datetime import UTC, datetime, timedelta

    from rq import Queue
    from rq.registry import ScheduledJobRegistry
    from rqscope.tasks.rq_internals import schedule_job

    queue = Queue("default", connection=real_redis)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    with real_redis.pipeline() as pipe:
        job = queue.create_job(t_ok_func(), args=(1,))
        schedule_job(pipe, queue, job, at)
        assert real_redis.keys("*") == []  # nothing sent before the transaction runs
        pipe.execute()
    assert ScheduledJobRegistry(queue=queue).get_scheduled_time(job.id) == at
    assert job.get_status() == JobStatus.SCHEDULED and Queue.all(connection=real_redis) == [queue]
    own = queue.enqueue_at(at, t_ok_func(), 1)  # RQ's own scheduling writes the same fields
    assert set(real_redis.hkeys(job.key)) == set(real_redis.hkeys(own.key))


def test_enqueue_now_writes_what_rqs_scheduler_writes(real_redis: Redis) -> None:
    from datetime import UTC, datetime, timedelta

    from rq import Queue
    from rq.job import Job
    from rq.scheduler import RQScheduler
    from rqscope.monitor.scheduled import enqueue_now

    queue = Queue("default", connection=real_redis)
    soon = datetime.now(UTC) + timedelta(seconds=1)
    ours = queue.enqueue_at(soon + timedelta(hours=1), t_ok_func(), 1, ttl=600)
    theirs = queue.enqueue_at(soon, t_ok_func(), 1, ttl=600)
    assert enqueue_now(real_redis, ours.id, "default").moved
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1.1)
    scheduler = RQScheduler(["default"], connection=real_redis)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    scheduler.release_locks()
    assert queue.job_ids == [ours.id, theirs.id]
    mine, rqs = real_redis.hgetall(ours.key), real_redis.hgetall(theirs.key)
    assert set(mine) == set(rqs)
    for field in (b"status", b"origin", b"ttl"):
        assert mine.get(field) == rqs.get(field), field
    assert 0 < real_redis.ttl(ours.key) <= 600 and 0 < real_redis.ttl(theirs.key) <= 600
    for job in (ours, theirs):
        assert Job.fetch(job.id, connection=real_redis).get_status() == JobStatus.QUEUED


# under RQ_KEY_PREFIX={rq}: a worker run (two failures), a cron scheduler, and what the sidecar reads of them
UNDER_PREFIX = """
import json, sys
from redis import Redis
from rq.cron import CronScheduler
from rqscope.monitor.reader import fetch_snapshot
from rqscope.tasks.registry import enqueue
from rqscope.tasks.worker import InstrumentedWorker
import tests.sample_tasks
redis = Redis.from_url(sys.argv[1])
for i in range(3):
    enqueue("t_ok", i, connection=redis)
failed = [enqueue("t_fail", i, connection=redis).id for i in range(2)]
InstrumentedWorker(["default"], connection=redis, publish_interval=60).work(burst=True, logging_level="ERROR")
cron = CronScheduler(redis, name="nightly")
cron.register(print, "default", interval=3600, name="hourly")
cron.register_birth()
cron.save()
cron.heartbeat()
snapshot = fetch_snapshot(redis)
(queue,) = [q for q in snapshot.queues if q.name == "default"]
runs = {f"{t}/{o}": n for (t, q), stats in snapshot.tasks.items() for o, n in stats.outcomes.items() if n}
print(json.dumps({"counts": queue.counts, "runs": runs, "failed": failed}))
"""
RULES = """rules:
  - {name: AnyFailure, kind: failed_jobs, threshold: 0, window: 5m, for: 0s, severity: warning, summary: "{value}"}
  - {name: CronJobOverdue, kind: cron_overdue, threshold: 300, for: 0s, severity: warning, summary: "{value}"}
"""


@pytest.mark.skipif(not RQ3, reason="RQ_KEY_PREFIX arrived in rq 3.0")
def test_under_a_hash_tag_prefix_every_key_lives_in_its_slot(redis_server, real_redis: Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "RQ_KEY_PREFIX": "{rq}", "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", UNDER_PREFIX, redis_server.url], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.splitlines()[-1])  # the cron scheduler logs to stdout first
    assert seen["counts"]["finished"] == 3 and seen["counts"]["failed"] == 2
    assert seen["runs"] == {"t_ok/success": 3, "t_fail/failure": 2}
    assert real_redis.exists("{rq}:queues") and not real_redis.exists("rq:queues")
    (tmp_path / "rules.yml").write_text(RULES)
    with Receiver() as receiver:
        served_env = {
            "RQ_KEY_PREFIX": "{rq}",
            "RQSCOPE_USERS": USERS,
            "RQSCOPE_API_TOKEN": TOKEN,
            "RQSCOPE_ALERT_INTERVAL": "1",
            "RQSCOPE_ALERT_RULES": str(tmp_path / "rules.yml"),
            "RQSCOPE_ALERT_WEBHOOK_URLS": receiver.url,
        }
        with sidecar(redis_server.url, served_env) as served:
            assert sign_in(served, username="ops", password="wrong")[1].status_code == 401
            assert sign_in(served, username="ops", password=PASSWORD)[1].status_code in (302, 303)
            token = {"Authorization": f"Bearer {TOKEN}"}
            assert served.post(f"/api/jobs/{seen['failed'][0]}/retry", headers=token).status_code == 200
            silence = served.post("/api/silences", headers=token, json={"matchers": {"queue": "elsewhere"}})
            assert silence.status_code == 201
            emptied = served.open("DELETE", "/api/queues/default/registries/finished", headers=token)
            assert emptied.json() == {"deleted": 3}
            # the leader evaluated, sent the failure alert, remembered the cron scheduler and recorded history
            wait_for(lambda: receiver.bodies and real_redis.keys("{rq}:rqscope:metrics:h:*"), timeout=30)
            wait_for(lambda: real_redis.exists("{rq}:rqscope:history:minute", "{rq}:rqscope:cron:seen") == 2)
            # the delivery's result is recorded once the receiver has answered
            sent = ("{rq}:rqscope:alerts:leader", "{rq}:rqscope:alerts:outbox:finished")
            wait_for(lambda: real_redis.exists(*sent) == 2)
            running = every_key(real_redis)
    found = running | every_key(real_redis)  # and what stopping wrote
    assert sorted(key for key in found if not key.startswith("{rq}:")) == []
    own = {key.removeprefix("{rq}:rqscope:").split(":")[0] for key in found if key.startswith("{rq}:rqscope:")}
    expected = {"metrics", "run", "alerts", "audit", "history", "cron", "session", "session-key", "signin-failures"}
    assert expected <= own, own
    actions = [fields[b"action"] for _, fields in cast(list[Any], real_redis.xrevrange("{rq}:rqscope:audit"))]
    assert actions == [b"empty finished", b"silence", b"retry"]


def every_key(redis: Redis) -> set[str]:
    return {key.decode() for key in cast(list[bytes], redis.keys("*"))}


def test_rq_reads_its_prefix_from_the_environment_from_3_0_on() -> None:
    import rq
    from rqscope.tasks.rq_internals.keys import rq_reads_prefix

    assert rq_reads_prefix() == (int(rq.__version__.split(".")[0]) >= 3)
