"""bench/load.py at a smaller size: HTTP enqueues from concurrent clients into three priority queues,
more than 1,000 jobs in flight, four `rqscope worker`s, the dashboard open in Chromium, scrapes every
second. Asserts where every job ended and what was counted, not how fast."""

from __future__ import annotations

import os

import pytest

from bench.load import load_stack, run_load
from bench.stack import CHROMIUM

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.browser]


@pytest.mark.timeout(600)
def test_load_holds_every_job_exactly_once_and_counts_it() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Debian's chromium is not installed; .ci/run installs it")
    with load_stack(workers=4) as (redis, stack):
        report = run_load(redis, stack, jobs=3000, clients=8, browser=True, settle_timeout=400)
    outcome = report.reconciliation
    assert (outcome.missing, outcome.duplicated, outcome.not_terminal) == ([], [], [])
    assert (outcome.finished, outcome.failed) == (2850, 150)  # every 20th job fails on purpose
    assert report.counters_match and sum(report.runs.values()) == 3000
    assert report.scraper.max_in_flight > 1000
    assert report.scraper.failures == 0 and len(report.scraper.latencies) >= 10
    assert set(report.scraper.up) == {1.0}
    assert report.viewer_responses[200] >= 5 and not any(code >= 500 for code in report.viewer_responses)
