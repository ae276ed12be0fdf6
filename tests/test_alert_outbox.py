"""The outbox over a real Redis: a receiver that is down never hides what is due for another, and a
result whose reply was lost is counted once."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rqscope.monitor.alerts import outbox_scripts
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.alerts.notifiers import Webhook
from rqscope.monitor.alerts.outbox import notification_counts
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.embedded import EmbeddedRedis

from tests.receivers import Receiver
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.redis
BACKLOG = Rule(
    name="Backlog", kind="queue_depth", threshold=3, severity="critical", summary="{queue} has {value:.0f} waiting"
)


def fill(redis: Redis, *queues: str) -> None:
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.sadd("rq:queues", f"rq:queue:{queue}")
            pipe.rpush(f"rq:queue:{queue}", *[f"job-{i}" for i in range(5)])
        pipe.execute()


def queues_in(receiver: Receiver) -> set[str]:
    return {body["alerts"][0]["labels"]["queue"] for body in receiver.bodies}


@pytest.mark.timeout(300)
def test_a_down_receiver_never_hides_due_notifications_for_another(real_redis: Redis) -> None:
    with Receiver() as down, Receiver() as healthy:
        down.down = True
        attempts = []
        down.status_for = lambda body: attempts.append(body) or 503  # type: ignore[func-returns-value]
        notifiers = [Webhook(down.url, name="down"), Webhook(healthy.url, name="healthy")]
        engine = AlertEngine(real_redis, [BACKLOG], SnapshotCache(real_redis, ttl=0).get, notifiers, interval=60)
        names = [f"q{i:04d}" for i in range(1001)]
        fill(real_redis, *names)
        assert len(engine.evaluate_once() or []) == 1001  # 1,001 notifications for each receiver
        for _ in range(30):
            engine.deliver()
        assert len(healthy.bodies) == 1001 and queues_in(healthy) == set(names)
        fill(real_redis, "urgent")
        assert len(engine.evaluate_once() or []) == 1
        engine.clock = lambda: time.time() + 3600  # every entry of the down receiver is due again
        for _ in range(3):
            engine.deliver()
        assert "urgent" in queues_in(healthy) and len(healthy.bodies) == 1002
        assert engine.dead_letters() == []  # the down receiver's entries still wait for it
        assert len(attempts) <= 33  # one attempt per round: a down receiver costs the others little time


def test_notifications_for_a_receiver_no_process_sends_to_are_dead_lettered_after_the_give_up_time(
    real_redis: Redis,
) -> None:
    with Receiver() as kept, Receiver() as removed:
        cache = SnapshotCache(real_redis, ttl=0)
        before = AlertEngine(real_redis, [BACKLOG], cache.get, [Webhook(removed.url, name="removed")], interval=60)
        fill(real_redis, "default")
        before.evaluate_once()
        real_redis.delete("rq:queue:default")
        before.evaluate_once()  # firing, then resolved, neither sent
        real_redis.delete("rqscope:alerts:leader")
        # restarted with its receivers changed
        after = AlertEngine(real_redis, [BACKLOG], cache.get, [Webhook(kept.url, name="kept")], interval=60)
        fill(real_redis, "other")
        after.evaluate_once()
        assert after.deliver() == 1 and queues_in(kept) == {"other"} and after.dead_letters() == []
        after.clock = lambda: time.time() + 25 * 3600
        after.deliver()
        dead = after.dead_letters()
        assert [(d.receiver, d.status, d.reason) for d in dead] == [
            ("removed", "resolved", "no process sends to this receiver"),
            ("removed", "firing", "no process sends to this receiver"),
        ]
        assert after.outbox.size() == 0 and removed.bodies == []
        assert notification_counts(real_redis)[("removed", "dropped")] == 2


@pytest.mark.parametrize("retries", [0, 3], ids=["sidecar-client", "retrying-client"])
def test_a_result_replayed_after_a_lost_reply_is_counted_once(
    redis_server: EmbeddedRedis, real_redis: Redis, retries: int
) -> None:
    with Receiver() as hook, TcpProxy(redis_server.port) as proxy:
        client = Redis(port=proxy.port, socket_timeout=2, retry=Retry(NoBackoff(), retries))
        engine = AlertEngine(
            client, [BACKLOG], SnapshotCache(client, ttl=0).get, [Webhook(hook.url, name="hook")], interval=60
        )
        fill(real_redis, "default")
        engine.evaluate_once()
        sha = real_redis.script_load(outbox_scripts.FINISH)  # cached on the server, as in a sidecar that already sent
        proxy.cut_after(lambda data: sha.encode() in data)
        engine.deliver()
        engine.deliver()  # the sidecar's client records the result it did not hear about
        assert proxy.cuts == 1 and hook.statuses() == ["firing"]
        assert notification_counts(real_redis)[("hook", "sent")] == 1
        client.close()


def test_results_of_sends_from_memory_are_counted_once_when_their_reply_is_lost(
    redis_server: EmbeddedRedis, real_redis: Redis
) -> None:
    down = Rule(name="RedisDown", kind="redis_down", severity="critical", summary="Redis is down")
    with Receiver() as hook, TcpProxy(redis_server.port) as proxy:
        client = Redis(port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 0))
        cache = SnapshotCache(client, ttl=0)
        engine = AlertEngine(client, [down], cache.get, [Webhook(hook.url, name="hook")], interval=0.2)
        assert engine.evaluate_once() == []
        proxy.pause()  # Redis stalls: the leader keeps watch and pages from memory
        [note] = engine.evaluate_once() or []
        assert note.status == "firing" and hook.statuses() == ["firing"]
        sha = real_redis.script_load(outbox_scripts.FLUSH)
        proxy.cut_after(lambda data: sha.encode() in data)
        proxy.resume()
        time.sleep(0.3)
        for _ in range(2):
            engine.deliver()  # the first one's reply is lost; the second resends the same results
        assert proxy.cuts == 1 and notification_counts(real_redis)[("hook", "sent")] == 1
        client.close()
