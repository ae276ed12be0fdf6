"""The alert engine over a real Redis: one leader among three, one notification per transition,
takeover when the leader stops, and delivery after a receiver outage."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rqscope.monitor.alerts.engine import LEASE_KEY, OUTBOX_KEY, AlertEngine
from rqscope.monitor.alerts.notifiers import PagerDuty, Slack, Webhook, alertmanager_payload
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cache import SnapshotCache

from tests.receivers import Receiver

pytestmark = pytest.mark.redis
BACKLOG = Rule(name="Backlog", kind="queue_depth", threshold=3, for_seconds=0.5, severity="critical",
               summary="{queue} has {value:.0f} waiting")  # fmt: skip


def engines(redis: Redis, receiver: Receiver, count: int = 3, **kwargs) -> list[AlertEngine]:  # type: ignore[no-untyped-def]
    cache = SnapshotCache(redis, ttl=0)
    return [AlertEngine(redis, [BACKLOG], cache.get, [Webhook(receiver.url)], interval=0.2, holder=f"sidecar-{i}",
                        **kwargs) for i in range(count)]  # fmt: skip


def run_round(all_engines: list[AlertEngine]) -> None:
    for engine in all_engines:
        engine.evaluate_once()
        engine.deliver()


def fill(redis: Redis, count: int) -> None:
    redis.sadd("rq:queues", "rq:queue:default")
    if count:
        redis.rpush("rq:queue:default", *[f"job-{i}" for i in range(count)])


def test_one_leader_one_firing_one_resolved(real_redis: Redis) -> None:
    with Receiver() as receiver:
        sidecars = engines(real_redis, receiver)
        fill(real_redis, 10)
        for _ in range(3):
            run_round(sidecars)
        assert sum(e.evaluations for e in sidecars) == 3 and sidecars[0].evaluations == 3
        assert receiver.statuses() == []  # `for:` has not elapsed
        time.sleep(0.6)
        for _ in range(3):
            run_round(sidecars)
        assert receiver.statuses() == ["firing"]
        body = receiver.bodies[0]
        assert body["version"] == "4" and body["alerts"][0]["labels"]["queue"] == "default"
        assert body["alerts"][0]["generatorURL"].endswith("/queues/default/queued?redis=default")
        real_redis.delete("rq:queue:default")
        for _ in range(3):
            run_round(sidecars)
        assert receiver.statuses() == ["firing", "resolved"]


def test_leader_stops_mid_incident_and_another_takes_over_without_duplicates(real_redis: Redis) -> None:
    with Receiver() as receiver:
        leader, *others = engines(real_redis, receiver)
        fill(real_redis, 10)
        leader.evaluate_once()
        time.sleep(0.6)
        leader.evaluate_once()
        leader.deliver()
        assert receiver.statuses() == ["firing"]
        # the leader dies: nothing renews its lease, which expires after 3 intervals
        assert all(e.evaluate_once() is None for e in others)
        time.sleep(0.7)
        assert not real_redis.exists(LEASE_KEY)
        run_round(others)
        assert receiver.statuses() == ["firing"]  # the new leader continues the incident, no re-page
        real_redis.delete("rq:queue:default")
        run_round(others)
        assert receiver.statuses() == ["firing", "resolved"]


def test_receiver_down_then_back_gets_every_notification_once(real_redis: Redis) -> None:
    with Receiver() as receiver:
        [engine] = engines(real_redis, receiver, count=1)
        receiver.down = True
        fill(real_redis, 10)
        engine.evaluate_once()
        time.sleep(0.6)
        engine.evaluate_once()  # firing, queued in the outbox
        assert engine.deliver() == 0 and real_redis.zcard(OUTBOX_KEY) == 1
        real_redis.delete("rq:queue:default")
        started = time.monotonic()
        engine.evaluate_once()  # resolved: queued behind the firing, evaluation did not wait
        assert time.monotonic() - started < 1 and real_redis.zcard(OUTBOX_KEY) == 2
        receiver.down = False
        engine.clock = lambda: time.time() + 10  # past the backoff
        assert engine.deliver() == 2
        assert receiver.statuses() == ["firing", "resolved"] and real_redis.zcard(OUTBOX_KEY) == 0
        assert engine.deliver() == 0


def test_payload_shapes_for_slack_and_pagerduty(real_redis: Redis) -> None:
    with Receiver() as receiver:
        cache = SnapshotCache(real_redis, ttl=0)
        notifiers = [Slack(receiver.url), PagerDuty("routing-key-123", url=receiver.url)]
        engine = AlertEngine(real_redis, [BACKLOG], cache.get, notifiers, interval=0.2, clock=time.time)
        fill(real_redis, 10)
        engine.evaluate_once()
        time.sleep(0.6)
        [note] = engine.evaluate_once() or []
        assert engine.deliver() == 2
        slack, pager = receiver.bodies
        assert slack["text"].startswith(":red_circle: [FIRING] Backlog (critical): default has 10 waiting")
        assert pager["event_action"] == "trigger" and pager["dedup_key"] == note.alert.fingerprint
        assert pager["routing_key"] == "routing-key-123"
        assert alertmanager_payload(note, "http://x/")["alerts"][0]["fingerprint"] == note.alert.fingerprint


def test_email_through_a_local_smtp_server(real_redis: Redis) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message
    from rqscope.monitor.alerts.notifiers import Email
    from rqscope.monitor.embedded import free_port

    received = []

    class Collect(Message):
        def handle_message(self, message) -> None:  # type: ignore[no-untyped-def]
            received.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cache = SnapshotCache(real_redis, ttl=0)
        mail = Email("127.0.0.1", port, "rqscope@example.test", ("oncall@example.test",))
        engine = AlertEngine(real_redis, [BACKLOG], cache.get, [mail], interval=0.2)
        fill(real_redis, 10)
        engine.evaluate_once()
        time.sleep(0.6)
        engine.evaluate_once()
        assert engine.deliver() == 1
    finally:
        controller.stop()
    assert len(received) == 1
    assert received[0]["Subject"] == "[FIRING] Backlog: default has 10 waiting"
    assert received[0]["To"] == "oncall@example.test"


def test_alerts_api_and_pages_show_firing_alerts(real_redis: Redis, real_client) -> None:  # type: ignore[no-untyped-def]
    engine = real_client.application.extensions["rqscope"].alerts
    fill(real_redis, 5000)
    engine.rules = (Rule(name="Backlog", kind="queue_depth", threshold=3, summary="{queue} has {value:.0f} waiting"),)
    engine.evaluate_once()
    body = real_client.get("/api/alerts").get_json()
    assert [(a["rule"], a["state"], a["labels"]["queue"]) for a in body["alerts"]] == [("Backlog", "firing", "default")]
    page = real_client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "default has 5000 waiting" in page
    assert "Backlog" in real_client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert [(h["status"], h["rule"]) for h in body["history"]] == [("firing", "Backlog")]


def test_silenced_alert_is_evaluated_but_not_sent(real_redis: Redis) -> None:
    from rqscope.monitor.alerts import silences

    with Receiver() as receiver:
        [engine] = engines(real_redis, receiver, count=1)
        now = time.time()
        silences.create(real_redis, {"alertname": "Backlog", "queue": "default"}, now, now + 60, "ops", "deploy")
        fill(real_redis, 10)
        engine.evaluate_once()
        time.sleep(0.6)
        [note] = engine.evaluate_once() or []
        assert note.status == "firing" and engine.deliver() == 0 and receiver.statuses() == []
        assert [a.state for a in engine.load().values()] == ["firing"]


def test_notifiers_receive_only_their_severities(real_redis: Redis) -> None:
    with Receiver() as critical_only, Receiver() as warnings_only:
        cache = SnapshotCache(real_redis, ttl=0)
        notifiers = [Webhook(critical_only.url, ("critical",)), Webhook(warnings_only.url, ("warning",))]
        engine = AlertEngine(real_redis, [BACKLOG], cache.get, notifiers, interval=0.2)
        fill(real_redis, 10)
        engine.evaluate_once()
        time.sleep(0.6)
        engine.evaluate_once()
        assert engine.deliver() == 1
        assert critical_only.statuses() == ["firing"] and warnings_only.statuses() == []


def test_silences_api(real_client, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    created = real_client.post("/api/silences", json={"matchers": {"queue": "emails"}, "duration": "2h",
                                                       "comment": "maintenance"})  # fmt: skip
    assert created.status_code == 201
    silence_id = created.get_json()["id"]
    listed = real_client.get("/api/silences").get_json()["silences"]
    assert [(s["id"], s["active"], s["author"]) for s in listed] == [(silence_id, True, "anonymous")]
    assert real_client.delete(f"/api/silences/{silence_id}").get_json() == {"id": silence_id, "expired": True}
    assert real_client.get("/api/silences").get_json()["silences"][0]["active"] is False
    assert real_client.delete("/api/silences/nope").status_code == 404
    for bad in ({}, {"matchers": {}}, {"matchers": {"q": 1}}, {"matchers": {"q": "x"}, "duration": "forever"},
                {"matchers": {"q": "x"}, "duration": "90d"}, {"matchers": {"q": "x"}, "extra": 1}):  # fmt: skip
        assert real_client.post("/api/silences", json=bad).status_code == 400, bad


def test_redis_down_alert_reaches_on_call_while_redis_is_away(real_settings) -> None:  # type: ignore[no-untyped-def]
    from rqscope.monitor.embedded import EmbeddedRedis, free_port

    from tests.conftest import redis_binary

    port = free_port()
    server = EmbeddedRedis(port=port, binary=redis_binary()).start()
    client = Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    down = Rule(name="RedisDown", kind="redis_down", for_seconds=0.3, severity="critical", summary="Redis is down")
    with Receiver() as receiver:
        engine = AlertEngine(client, [down], SnapshotCache(client, ttl=0).get, [Webhook(receiver.url)], interval=0.2)
        try:
            assert engine.evaluate_once() == []  # leads, nothing wrong
            server.stop()
            engine.evaluate_once()  # pending
            time.sleep(0.4)
            [note] = engine.evaluate_once() or []
            assert note.status == "firing" and receiver.statuses() == ["firing"]  # sent without Redis
            engine.evaluate_once()
            assert receiver.statuses() == ["firing"]
            server = EmbeddedRedis(port=port, binary=redis_binary()).start()
            [note] = engine.evaluate_once() or []
            assert note.status == "resolved"
            engine.deliver()
            assert receiver.statuses() == ["firing", "resolved"]
        finally:
            server.stop()


def test_after_an_outage_the_new_leader_resolves_what_the_old_one_fired(real_settings) -> None:  # type: ignore[no-untyped-def]
    from rqscope.monitor.embedded import EmbeddedRedis

    from tests.conftest import redis_binary

    server = EmbeddedRedis(binary=redis_binary()).start()
    client = Redis(port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    down = Rule(name="RedisDown", kind="redis_down", for_seconds=0.0, severity="critical", summary="Redis is down")
    with Receiver() as receiver:
        old, new = (AlertEngine(client, [down], SnapshotCache(client, ttl=0).get, [Webhook(receiver.url)],
                                interval=0.2, holder=name) for name in ("old", "new"))  # fmt: skip
        try:
            assert old.evaluate_once() == [] and new.evaluate_once() is None
            server.halt()
            old.evaluate_once()
            assert receiver.statuses() == ["firing"]  # sent from memory
            server.start()
            client.set(LEASE_KEY, "new")  # the lease expired during the outage and the other process took it
            assert new.evaluate_once() is not None
            assert old.evaluate_once() is None  # hands its memory over
            [note] = new.evaluate_once() or []
            new.deliver()
            assert note.status == "resolved" and receiver.statuses() == ["firing", "resolved"]
            assert new.evaluate_once() == [] and old.evaluate_once() is None
            assert receiver.statuses() == ["firing", "resolved"]
        finally:
            server.stop()
