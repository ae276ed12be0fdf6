"""The scrape under hostile names, hostile values and a failing Redis: labels, the line cache, the key and
label caches, and the alert notification counts read with the snapshot."""

from __future__ import annotations

import shutil
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families
from rqscope.monitor.cron import CronJobState, CronSchedulerState, CronState
from rqscope.monitor.cron_collector import cron_families
from rqscope.monitor.exposition import render_labelled
from rqscope.monitor.names import metric_label

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
