"""Two alert leaders over a real Redis, one of them stalled on the write carrying a new transition:
whoever leads afterwards, on-call is paged once per transition, and no stale memory undoes a resolve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry
from rqscope.monitor.alerts.engine import LEASE_KEY, STATE_KEY, AlertEngine
from rqscope.monitor.alerts.notifiers import Webhook
from rqscope.monitor.alerts.outbox import Delivery, Outbox
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.alerts.state import Alert, Notification
from rqscope.monitor.alerts.store import LOST, STALE, Store
from rqscope.monitor.cache import SnapshotCache
from rqscope.monitor.embedded import EmbeddedRedis

from tests.receivers import Receiver
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.redis
BACKLOG = Rule(
    name="Backlog", kind="queue_depth", threshold=3, severity="critical", summary="{queue} has {value:.0f} waiting"
)
LEASE = 0.6  # three intervals of the engines below


def engine(redis: Redis, receiver: Receiver, holder: str) -> AlertEngine:
    return AlertEngine(
        redis, [BACKLOG], SnapshotCache(redis, ttl=0).get, [Webhook(receiver.url)], interval=0.2, holder=holder
    )


def tick(sidecar: AlertEngine) -> None:
    """One scheduler round, which logs and skips a Redis error as the runner does."""
    for step in (sidecar.evaluate_once, sidecar.deliver):
        try:
            step()
        except RedisError:
            pass


def fill(redis: Redis) -> None:
    redis.sadd("rq:queues", "rq:queue:default")
    redis.rpush("rq:queue:default", *[f"job-{i}" for i in range(10)])


@pytest.fixture
def stalled(
    redis_server: EmbeddedRedis, real_redis: Redis
) -> Iterator[tuple[Receiver, TcpProxy, AlertEngine, AlertEngine]]:
    """A leads through a proxy that holds the commit carrying the new firing; B talks to Redis directly.

    When it yields, A has evaluated the firing and timed out on that commit, its lease has run out, and
    B has taken the lease, evaluated the same firing itself and paged once.
    """
    with Receiver() as hook, TcpProxy(redis_server.port) as proxy:
        # as the sidecar's own client (make_client): no retries, so a stalled Redis costs one timeout
        client = Redis(port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3, retry=Retry(NoBackoff(), 0))
        a, b = engine(client, hook, "a"), engine(real_redis, hook, "b")
        assert a.evaluate_once() == [] and b.evaluate_once() is None  # A leads, nothing wrong yet
        fill(real_redis)
        proxy.pause_at(lambda data: STATE_KEY.encode() in data and b"EVALSHA" in data)
        [note] = a.evaluate_once() or []
        assert note.status == "firing" and not proxy.flowing.is_set()
        tick(a)
        time.sleep(LEASE + 0.1)
        tick(b)
        assert hook.statuses() == ["firing"]
        yield hook, proxy, a, b
        client.close()


def test_the_new_leader_keeps_the_lease_and_the_stalled_ones_transition_is_not_paged_again(
    stalled: tuple[Receiver, TcpProxy, AlertEngine, AlertEngine],
) -> None:
    hook, proxy, a, b = stalled
    proxy.resume()
    time.sleep(0.5)  # the held commit reaches Redis, and is refused
    for _ in range(4):
        tick(a)  # hands over what it evaluated and could not save
        tick(b)
    assert hook.statuses() == ["firing"]
    assert [alert.state for alert in b.load().values()] == ["firing"]


@pytest.mark.parametrize("resolved_first", [False, True], ids=["still-firing", "resolved-by-the-new-leader"])
def test_the_stalled_leader_takes_the_lease_back_and_pages_nothing_twice(
    stalled: tuple[Receiver, TcpProxy, AlertEngine, AlertEngine], real_redis: Redis, resolved_first: bool
) -> None:
    hook, proxy, a, b = stalled
    expected = ["firing"]
    if resolved_first:
        real_redis.delete("rq:queue:default")
        tick(b)
        expected.append("resolved")
        assert hook.statuses() == expected
    proxy.resume()
    time.sleep(LEASE + 0.1)  # B stops (its process died): its lease runs out, and A takes it back
    for _ in range(4):
        tick(a)
    assert a.evaluations >= 4
    assert hook.statuses() == expected
    assert [alert.state for alert in a.load().values()] == [expected[-1]]


def test_a_write_following_a_state_another_write_replaced_is_refused_even_from_the_same_holder(
    real_redis: Redis,
) -> None:
    store = Store(real_redis)
    real_redis.set(LEASE_KEY, "a")
    loaded = store.load_with_handovers()
    assert store.commit("a", {}, [], [], loaded.taken, [], time.time(), loaded.version) == loaded.version + 1
    # the same process's earlier write, stuck in a stalled link, lands after it took the lease back
    assert store.commit("a", {}, [], [], loaded.taken, [], time.time(), loaded.version) == STALE
    real_redis.set(LEASE_KEY, "b")
    assert store.commit("a", {}, [], [], loaded.taken, [], time.time(), loaded.version + 1) == LOST


def test_a_transition_committed_by_two_leaders_is_queued_once(real_redis: Redis) -> None:
    store = Store(real_redis)
    labels = (("queue", "q"),)
    alert = Alert("f1", "Backlog", "queue_depth", "critical", labels, "q", 10.0, "firing", 0.0, epoch=4, seq=1)
    note = Notification("firing", alert)
    for holder, queued_at in (("a", 100.0), ("b", 101.0)):  # evaluated apart, each at its own time
        real_redis.set(LEASE_KEY, holder)
        loaded = store.load_with_handovers()
        delivery = Delivery.of("hook", note, queued_at)
        assert store.commit(holder, {"f1": alert}, [note], [delivery], loaded.taken, [], time.time(), loaded.version)
    assert Outbox(real_redis).size() == 1
    resolved = Notification("resolved", replace(alert, state="resolved", seq=2))
    assert Delivery.of("hook", resolved, 102.0).id != delivery.id != Delivery.of("other", note, 100.0).id
