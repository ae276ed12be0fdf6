"""The scrape under hostile names, hostile values and a failing Redis: labels, the line cache, the key and
label caches, and the alert notification counts read with the snapshot."""

from __future__ import annotations

import gc
import shutil
import subprocess
import threading
import time
import tracemalloc

from prometheus_client.parser import text_string_to_metric_families
from rqscope.monitor.cron import CronJobState, CronSchedulerState, CronState
from rqscope.monitor.cron_collector import cron_families
from rqscope.monitor.exposition import Rows, render_labelled
from rqscope.monitor.names import exact, from_bytes, metric_label
from rqscope.monitor.rows import queue_keys, worker_keys
from rqscope.tasks.rq_internals.keys import KEYS

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
