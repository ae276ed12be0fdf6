"""Notifier faults over a real Redis: one bad message never blocks the rest, permanent failures are
dead-lettered and shown, every outcome is counted, and text from Redis is made safe per channel."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.alerts.engine import LEASE_KEY, AlertEngine
from rqscope.monitor.alerts.notifiers import Email, PagerDuty, Slack, Webhook
from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.cache import SnapshotCache
from rqscope.web import create_app

from tests.receivers import Mailbox, Receiver

pytestmark = pytest.mark.redis
BACKLOG = Rule(
    name="Backlog", kind="queue_depth", threshold=3, severity="critical", summary="{queue} has {value:.0f} waiting"
)
BAD = "bad\r\nBcc: victim@example.test"


def fill(redis: Redis, *queues: str) -> None:
    for queue in queues:
        redis.sadd("rq:queues", f"rq:queue:{queue}")
        redis.rpush(f"rq:queue:{queue}", *[f"job-{i}" for i in range(10)])


def engine_for(redis: Redis, notifiers: list, **kwargs) -> AlertEngine:  # type: ignore[type-arg,no-untyped-def]
    return AlertEngine(redis, [BACKLOG], SnapshotCache(redis, ttl=0).get, notifiers, interval=0.2, **kwargs)


def queues_in(receiver: Receiver) -> list[str]:
    return sorted(body["alerts"][0]["labels"]["queue"] for body in receiver.bodies)


def test_a_queue_name_with_crlf_neither_blocks_other_alerts_nor_injects_an_email_header(real_redis: Redis) -> None:
    with Receiver() as hook, Mailbox() as mailbox:
        mail = Email("127.0.0.1", mailbox.port, "rqscope@example.test", ("oncall@example.test",))
        engine = engine_for(real_redis, [Webhook(hook.url), mail])
        fill(real_redis, BAD, "good")
        engine.evaluate_once()
        engine.deliver()
        assert queues_in(hook) == [BAD, "good"]
        subjects = sorted(m["Subject"] for m in mailbox.messages)
        assert subjects == [
            "[FIRING] Backlog: bad Bcc: victim@example.test has 10 waiting",
            "[FIRING] Backlog: good has 10 waiting",
        ]
        assert all(m["Bcc"] is None for m in mailbox.messages)


def test_a_webhook_rejecting_one_alert_dead_letters_it_and_delivers_the_rest(real_redis: Redis, real_settings) -> None:  # type: ignore[no-untyped-def]
    with Receiver() as hook:
        hook.status_for = lambda body: 400 if body["alerts"][0]["labels"]["queue"] == "bad" else 200
        # the delivery counts are read with the snapshot: a snapshot of its own for every read, so that the scrape
        # below is not served the one the evaluation read before the deliveries
        settings = replace(real_settings, alert_webhook_urls=(hook.url,), snapshot_ttl=1e-9)
        app = create_app(settings, testing=True)
        engine = app.extensions["rqscope"].alerts
        engine.rules = (BACKLOG,)
        fill(real_redis, "bad", "good")
        engine.evaluate_once()
        engine.deliver()
        assert queues_in(hook) == ["good"]
        engine.deliver()  # nothing left to try: the rejected one is not retried
        assert queues_in(hook) == ["good"]
        client = app.test_client()
        [dead] = client.get("/api/alerts").get_json()["dead_letters"]
        assert dead["receiver"] == f"webhook:127.0.0.1:{hook.server.server_address[1]}"
        assert dead["status"] == "firing" and dead["alert"]["labels"] == {"queue": "bad", "redis": "default"}
        assert "400" in dead["reason"] and abs(dead["at"] - time.time()) < 30
        page = client.get("/alerts", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert "Undeliverable notifications" in page and "400" in page
        samples = {
            (s.labels["receiver"], s.labels["result"]): s.value
            for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
            for s in f.samples
            if s.name == "rqscope_alert_notifications_total"
        }
        receiver = dead["receiver"]
        assert samples == {(receiver, "sent"): 1.0, (receiver, "retried"): 0.0, (receiver, "dropped"): 1.0}


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_a_webhook_answering_a_temporary_error_is_retried_then_delivered(real_redis: Redis, status: int) -> None:
    with Receiver() as hook:
        hook.status_for = lambda body: status
        engine = engine_for(real_redis, [Webhook(hook.url)])
        fill(real_redis, "default")
        engine.evaluate_once()
        assert engine.deliver() == 0 and engine.dead_letters() == []
        hook.status_for = lambda body: 200
        engine.clock = lambda: time.time() + 10  # past the backoff
        assert engine.deliver() == 1 and queues_in(hook) == ["default"]


def test_slack_text_from_redis_cannot_mention_the_channel(real_redis: Redis) -> None:
    with Receiver() as hook:
        engine = engine_for(real_redis, [Slack(hook.url)])
        fill(real_redis, "x <!channel> & co")
        engine.evaluate_once()
        assert engine.deliver() == 1
        text = hook.bodies[0]["text"]
        assert "x &lt;!channel&gt; &amp; co has 10 waiting" in text and "<!channel>" not in text
        assert text.endswith("/queues/x%20%3C%21channel%3E%20%26%20co/queued?redis=default|Open in rqscope>")


def test_pagerduty_summary_is_at_most_1024_characters(real_redis: Redis) -> None:
    with Receiver() as hook:
        engine = engine_for(real_redis, [PagerDuty("routing-key", url=hook.url)])
        fill(real_redis, "q" * 5000)
        engine.evaluate_once()
        assert engine.deliver() == 1
        summary = hook.bodies[0]["payload"]["summary"]
        assert len(summary) <= 1024 and summary.startswith("qqq")


def test_a_notifier_raising_any_exception_keeps_it_to_that_entry(real_redis: Redis) -> None:
    class Broken(Webhook):
        def build(self, note, base_url):  # type: ignore[no-untyped-def]
            raise TypeError("a bug in this notifier")

    with Receiver() as broken_target, Receiver() as hook:
        engine = engine_for(real_redis, [Broken(broken_target.url, name="broken"), Webhook(hook.url)])
        fill(real_redis, "a", "b")
        engine.evaluate_once()
        assert engine.deliver() == 2 and queues_in(hook) == ["a", "b"]
        dead = engine.dead_letters()
        assert sorted((d.receiver, d.alert["labels"][0][1]) for d in dead) == [("broken", "a"), ("broken", "b")]
        assert all("TypeError: a bug in this notifier" in d.reason for d in dead)


def test_queued_notifications_follow_their_receiver_when_receivers_are_reordered(real_redis: Redis) -> None:
    with Receiver() as first, Receiver() as second:
        engine = engine_for(real_redis, [Webhook(first.url, ("critical",)), Webhook(second.url)])
        fill(real_redis, "default")
        engine.evaluate_once()  # queued for both, not yet sent
        real_redis.delete(LEASE_KEY)  # the sidecar restarts with its receivers listed the other way round
        restarted = engine_for(real_redis, [Webhook(second.url), Webhook(first.url, ("critical",))])
        assert restarted.deliver() == 2
        assert first.statuses() == ["firing"] and second.statuses() == ["firing"]


def test_redis_down_pages_through_a_summary_no_email_header_can_hold(real_settings) -> None:  # type: ignore[no-untyped-def]
    from rqscope.monitor.embedded import EmbeddedRedis

    from tests.conftest import redis_binary

    server = EmbeddedRedis(binary=redis_binary()).start()
    client = Redis(port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    down = Rule(name="RedisDown", kind="redis_down", severity="critical", summary="Redis is down.\nCheck the host.")
    with Receiver() as hook, Mailbox() as mailbox:
        mail = Email("127.0.0.1", mailbox.port, "rqscope@example.test", ("oncall@example.test",))
        engine = AlertEngine(client, [down], SnapshotCache(client, ttl=0).get, [mail, Webhook(hook.url)], interval=0.2)
        try:
            assert engine.evaluate_once() == []
            server.halt()
            [note] = engine.evaluate_once() or []
            assert note.status == "firing" and hook.statuses() == ["firing"]
            assert [m["Subject"] for m in mailbox.messages] == ["[FIRING] RedisDown: Redis is down. Check the host."]
        finally:
            server.stop()
