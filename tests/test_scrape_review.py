"""The scrape under hostile names, hostile values and a failing Redis: labels, the line cache, the key and
label caches, and the alert notification counts read with the snapshot."""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import shutil
import subprocess
import threading
import time
import tracemalloc

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.monitor.alerts.keys import COUNTS_KEY, count_field
from rqscope.monitor.cron import CronJobState, CronSchedulerState, CronState
from rqscope.monitor.cron_collector import cron_families
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.exposition import Rows, render_labelled
from rqscope.monitor.names import exact, from_bytes, metric_label
from rqscope.monitor.rows import queue_keys, worker_keys
from rqscope.monitor.settings import Settings
from rqscope.monitor.snapshot import QueueState, WorkerState
from rqscope.tasks.rq_internals.keys import KEYS
from rqscope.web import create_app

from tests.tcpproxy import TcpProxy

NOTIFIED = "rqscope_alert_notifications_total"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(text: str, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (sample, labels), v in samples(text).items() if sample == name}


def promtool_findings(text: bytes) -> tuple[int, bytes, bytes]:
    promtool = shutil.which("promtool")
    assert promtool is not None
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def test_a_cron_job_named_with_a_surrogate_no_byte_stands_for_is_one_series_and_promtool_clean() -> None:
    # JSON may spell any lone surrogate (\ud800); a name from it has no bytes, unlike any name read from Redis
    scheduler = CronSchedulerState("sched", "h", 1, time.time(), True, time.time() - 60)
    jobs = tuple(
        CronJobState(name, "app.f", "default", None, 60.0, None, time.time() - late, late, "sched")
        for name, late in (("job-\ud800", 5.0), ("job-\\ud800", 7.0), ("job-\udcff", 9.0), ("job-\\xff", 11.0))
    )
    text = render_labelled([("default", cron_families(CronState(True, time.time(), (scheduler,), jobs)))])
    # one series per name: \ud800 for the surrogate; the spelled-out escapes with their backslash doubled
    assert labelled(text.decode(), "rqscope_cron_job_overdue_seconds", "cron_job") == {
        "job-\\ud800": 5.0,
        "job-\\\\ud800": 7.0,
        "job-\\xff": 9.0,
        "job-\\\\xff": 11.0,
    }
    assert promtool_findings(text) == (0, b"", b"")


def test_metric_labels_stay_one_per_name_with_surrogates_no_byte_stands_for() -> None:
    names = ["a\ud800", "a\\ud800", "a\udcff", "a\\xff", "a\ud800\udcff\\", "\udfff", "é\ud83d", "é"]
    labels = [metric_label(name) for name in names]
    assert len(set(labels)) == len(names)
    assert all(label.encode("utf-8") for label in labels)  # any encoder takes them
    assert labels[0] == "a\\ud800" and labels[2] == "a\\xff" and labels[3] == "a\\\\xff"


def test_a_family_whose_label_names_change_is_not_given_the_last_lines() -> None:
    def scrape(labels: tuple[str, ...]) -> bytes:
        family = Rows("rqscope_review_shape", "A family whose labels change", "gauge", labels)
        family.add(("emails",), 1.0)
        return render_labelled([("east", [family])])

    assert b'rqscope_review_shape{queue="emails",redis="east"} 1.0\n' in scrape(("queue",))
    assert b'rqscope_review_shape{redis="east",task="emails"} 1.0\n' in scrape(("task",))


def test_values_that_compare_equal_are_rendered_as_this_scrape_gives_them() -> None:
    def scrape(value: float) -> bytes:
        family = Rows("rqscope_review_value", "A value", "gauge", ("queue",))
        family.add(("q",), value)
        return render_labelled([("east", [family])]).splitlines()[-1]

    for first, then in [(1, 1.0), (True, 1), (999_999, 999_999.0), (10**6, 1e6), (10**17, 1e17), (2.5, 2.5)]:
        assert scrape(first) == scrape(then), (first, then)
    assert scrape(float("nan")).endswith(b" NaN") and scrape(float("inf")).endswith(b" +Inf")
    assert scrape(2**53 + 1).endswith(b" 9.007199254740992e+15")
    assert scrape(3).endswith(b" 3.0") and scrape(-(10**6)).endswith(b" -1000000.0")


def test_threads_rendering_one_family_each_get_their_own_rows() -> None:
    wrong: list[tuple[int, bytes]] = []

    def scrapes(worker: int) -> None:
        for i in range(300):
            family = Rows("rqscope_review_threads", "Rows of one family from several threads", "gauge", ("queue",))
            expected = []
            for q in range(5):
                depth = float(worker * 1000 + (i + q) % 7)
                family.add((f"q{q}",), depth)
                expected.append(f'rqscope_review_threads{{queue="q{q}",redis="east"}} {depth}')
            lines = render_labelled([("east", [family])]).decode().splitlines()[2:]
            if lines != expected:
                wrong.append((worker, "\n".join(lines).encode()))

    threads = [threading.Thread(target=scrapes, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []


def _retained(churn: callable) -> int:  # type: ignore[valid-type]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_churned_long_hostile_names_do_not_pile_up_in_the_label_and_key_caches() -> None:
    # RQ takes 5,000-character names; queues come and go, and each scrape renders the ones there now
    def hostile(i: int) -> str:
        return "\\" + "x" * 4990 + f"{i:09d}"

    def scrapes() -> None:
        for first in range(0, 8192, 512):
            family = Rows("rqscope_review_churn", "Churned queues", "gauge", ("queue",))
            for i in range(first, first + 512):
                family.add((hostile(i),), 1.0)
            render_labelled([("east", [family])])
        for i in range(4096):
            queue_keys(hostile(i))
            worker_keys(hostile(i))

    assert _retained(scrapes) < 16 << 20  # the last render's lines are 2.5 MB; unbounded, the caches kept 290 MB


def test_short_names_are_still_kept_and_keys_are_exact() -> None:
    name = from_bytes(b"q\xff/..\n")
    assert queue_keys(name) is queue_keys(name) and queue_keys(name)[0] == b"rq:queue:q\xff/..\n"
    long = from_bytes(b"q\xff" * 3000)
    assert queue_keys(long)[0] == b"rq:queue:" + b"q\xff" * 3000
    assert worker_keys(long) == (b"rq:worker:" + b"q\xff" * 3000, exact(KEYS.worker_executions(long)))


def _notification_app(settings: Settings, url: str) -> FlaskClient:
    chosen = dataclasses.replace(settings, redis_url=url, snapshot_ttl=1e-9)  # every scrape reads Redis again
    return create_app(chosen, testing=True).test_client()


def test_notification_counts_of_the_wrong_type_or_garbage_are_no_value_not_a_failed_scrape(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    real_redis.sadd("rq:queues", "rq:queue:default")
    real_redis.set(COUNTS_KEY, "not a hash")
    text = real_client.get("/metrics").get_data(as_text=True)
    assert labelled(text, "rqscope_redis_up", "redis") == {"default": 1.0}
    assert "rqscope_alert_notifications" not in text  # unreadable: absent, not 0
    assert labelled(text, "rqscope_queue_jobs", "queue")

    real_redis.delete(COUNTS_KEY)
    real_redis.hset(
        COUNTS_KEY,
        mapping={
            count_field("hook", "sent"): 3,
            count_field("hook", "retried"): "abc",
            count_field("hook", "dropped"): "nan",
            count_field("pager", "sent"): "inf",
            count_field("pager", "dropped"): -2,
            b"\xff\xfe": 1,
            "hook\nbogus": 2,
        },
    )
    real_client.application.extensions["rqscope"].first.snapshots.invalidate()
    text = real_client.get("/metrics").get_data(as_text=True)
    counts = {
        (dict(labels)["receiver"], dict(labels)["result"]): v
        for (name, labels), v in samples(text).items()
        if name == NOTIFIED
    }
    # a count is a finite, non-negative number; anything else in the hash is not one
    assert counts == {
        ("hook", "sent"): 3.0,
        ("hook", "retried"): 0.0,
        ("hook", "dropped"): 0.0,
    }
    assert promtool_findings(text.encode()) == (0, b"", b"")


def test_notification_counts_are_absent_while_redis_drops_the_read_and_whole_after(
    real_settings: Settings, real_redis: Redis, redis_server: EmbeddedRedis
) -> None:
    real_redis.hset(COUNTS_KEY, mapping={count_field("hook", "sent"): 7})
    real_redis.sadd("rq:queues", "rq:queue:default")
    with TcpProxy(redis_server.port) as proxy:
        client = _notification_app(real_settings, f"redis://127.0.0.1:{proxy.port}/0")
        text = client.get("/metrics").get_data(as_text=True)
        assert samples(text)[(NOTIFIED, (("receiver", "hook"), ("redis", "default"), ("result", "sent")))] == 7
        for marker in (b"alerts:notifications", b"EVALSHA"):  # the first pipeline, then the second round trip
            proxy.cut_after(lambda data, marker=marker: marker in data)
            text = client.get("/metrics").get_data(as_text=True)
            assert proxy.cuts_left == 0
            assert labelled(text, "rqscope_redis_up", "redis") == {"default": 0.0}
            assert NOTIFIED not in text  # never a counter reset to 0
            text = client.get("/metrics").get_data(as_text=True)
            assert samples(text)[(NOTIFIED, (("receiver", "hook"), ("redis", "default"), ("result", "sent")))] == 7


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))])
def test_queue_and_worker_states_copy_and_pickle_with_their_slots(copier: callable) -> None:  # type: ignore[valid-type]
    queue = QueueState(from_bytes(b"q\xff"), 3, {"failed": 1}, None, 0.5, True, 2)
    worker = WorkerState("w", "h", 1, "busy", ("q",), "j", 1.0, None, 1, 2, 3.0, 4.0, False)
    assert copier(queue) == queue and copier(worker) == worker
    assert dataclasses.replace(queue, queued=4).queued == 4 and dataclasses.asdict(worker)["hostname"] == "h"
