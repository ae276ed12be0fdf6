"""One alert leader at a time over a real Redis: a stalled leader's late writes are refused, a leader
slower than its lease stops, and an outbox entry is sent by one process only."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry
from rqscope.monitor.alerts.engine import STATE_KEY, AlertEngine
from rqscope.monitor.alerts.notifiers import Webhook
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.embedded import EmbeddedRedis

from tests.receivers import Receiver
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.redis
BACKLOG = Rule(
    name="Backlog", kind="queue_depth", threshold=3, severity="critical", summary="{queue} has {value:.0f} waiting"
)


def engine(redis: Redis, receiver: Receiver, holder: str, **kwargs) -> AlertEngine:  # type: ignore[no-untyped-def]
    return AlertEngine(
        redis,
        [BACKLOG],
        SnapshotCache(redis, ttl=0).get,
        [Webhook(receiver.url)],
        interval=0.2,
        holder=holder,
        **kwargs,
    )


def fill(redis: Redis, *queues: str) -> None:
    for queue in queues:
        redis.sadd("rq:queues", f"rq:queue:{queue}")
        redis.rpush(f"rq:queue:{queue}", *[f"job-{i}" for i in range(10)])


def tick(sidecar: AlertEngine, deliver: bool = True) -> None:
    """One scheduler round, which logs and skips a Redis error as the runner does."""
    for step in (sidecar.evaluate_once, sidecar.deliver) if deliver else (sidecar.evaluate_once,):
        try:
            step()
        except RedisError:
            pass


def queues_in(receiver: Receiver) -> list[str]:
    return sorted(body["alerts"][0]["labels"]["queue"] for body in receiver.bodies)


def test_a_stalled_leaders_late_writes_cannot_undo_the_new_leaders_work(
    redis_server: EmbeddedRedis, real_redis: Redis
) -> None:
    with Receiver() as hook, TcpProxy(redis_server.port) as proxy:
        # as the sidecar's own client (make_client): no retries, so a stalled Redis costs one timeout
        stalled_client = Redis(
            port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 0)
        )
        leader, other = engine(stalled_client, hook, "stalled"), engine(real_redis, hook, "other")
        fill(real_redis, "default")
        assert leader.evaluate_once() is not None and other.evaluate_once() is None
        leader.deliver()
        assert hook.statuses() == ["firing"]
        # the leader's link stalls as it writes its state: that write reaches Redis only later
        proxy.pause_at(lambda data: STATE_KEY.encode() in data and (b"HSET" in data or b"EVALSHA" in data))
        tick(leader)
        assert not proxy.flowing.is_set()
        time.sleep(0.7)  # its lease (3 intervals) runs out
        real_redis.delete("rq:queue:default")
        assert other.evaluate_once() is not None
        other.deliver()
        assert hook.statuses() == ["firing", "resolved"]
        proxy.resume()
        time.sleep(0.5)  # the held commands reach Redis
        for _ in range(3):
            for sidecar in (leader, other):
                tick(sidecar)
        assert hook.statuses() == ["firing", "resolved"]
        assert [a.state for a in other.load().values()] == ["resolved"]
        stalled_client.close()


def test_a_leader_slower_than_its_lease_stops_and_nothing_is_sent_twice(real_redis: Redis) -> None:
    with Receiver() as hook:
        hook.delay = 1.0  # each send outlasts the 0.6 s lease
        first, second = engine(real_redis, hook, "first"), engine(real_redis, hook, "second")
        fill(real_redis, "q1", "q2")
        assert first.evaluate_once() is not None  # two firing notifications queued
        sending = threading.Thread(target=first.deliver)
        sending.start()
        time.sleep(0.7)
        assert second.evaluate_once() is not None  # took the expired lease
        second.deliver()
        sending.join()
        for _ in range(3):
            first.deliver()
            second.evaluate_once()
            second.deliver()
        assert queues_in(hook) == ["q1", "q2"]


def test_an_entry_claimed_by_a_process_that_died_is_sent_after_the_claim_timeout(real_redis: Redis) -> None:
    with Receiver() as hook:
        dying = engine(real_redis, hook, "dying", claim_seconds=1.0)
        fill(real_redis, "default")
        dying.evaluate_once()
        assert len(dying.outbox.claim(dying.holder, {"webhook:" + hook.url.split("/")[2]: 50}, time.time())) == 1
        real_redis.delete("rqscope:alerts:leader")  # the process died: its lease goes too
        survivor = engine(real_redis, hook, "survivor", claim_seconds=1.0)
        survivor.evaluate_once()
        assert survivor.deliver() == 0 and hook.statuses() == []
        time.sleep(1.1)
        assert survivor.deliver() == 1 and hook.statuses() == ["firing"]
        assert survivor.deliver() == 0
