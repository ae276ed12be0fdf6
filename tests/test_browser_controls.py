"""Queue and worker controls and the enqueue form in Chromium, against `rqscope serve` and a real
`rqscope worker` on a real Redis."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rqscope.monitor.settings import Settings

from tests.test_browser import browser, login, page, sidecar  # noqa: F401 - the browser suite's fixtures
from tests.test_controls import put, status, worker

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]


def test_suspend_and_resume_all_workers_by_clicking(page, real_redis: Redis, real_settings: Settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with worker(real_settings, real_redis, "clicks-1", "default"):
        login(page)
        page.click("#workers-control")
        assert page.inner_text("h1") == "Suspend all workers?"
        page.click("form.confirm button[type=submit]")
        assert "Workers suspended until resumed." in page.inner_text("[role=status]")
        assert page.is_visible("#suspended-banner")
        job = put(real_redis, "default")
        page.goto("/tasks")
        assert page.is_visible("#suspended-banner")  # on every page
        time.sleep(2)
        assert status(job) == JobStatus.QUEUED
        page.click("#suspended-banner a")
        assert page.inner_text("h1") == "Resume all workers?"
        page.click("form.confirm button[type=submit]")
        assert "Workers resumed." in page.inner_text("[role=status]")
        assert page.locator("#suspended-banner").count() == 0
        deadline = time.monotonic() + 10
        while status(job) != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(job) == JobStatus.FINISHED
    assert [entry[1][b"action"] for entry in real_redis.xrevrange("rqscope:audit", count=2)] == [
        b"resume workers",
        b"suspend workers",
    ]


def test_pause_and_resume_a_queue_by_clicking(page, real_redis: Redis, real_settings: Settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    held = put(real_redis, "q1")  # the queue exists before any worker runs
    login(page)
    page.goto("/queues/q1/queued")
    page.click("#queue-control")
    assert page.inner_text("h1") == "Pause queue q1?"
    page.click("form.confirm button[type=submit]")
    assert "Queue q1 paused." in page.inner_text("[role=status]")
    assert page.inner_text("h1 .badge.paused") == "paused"
    with worker(real_settings, real_redis, "clicks-2", "q1", "default"):
        other = put(real_redis, "default")
        deadline = time.monotonic() + 15
        while status(other) != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(other) == JobStatus.FINISHED and status(held) == JobStatus.QUEUED
        page.goto("/")
        row = page.locator("tr[data-queue='q1']")
        assert row.locator(".badge.paused").count() == 1
        row.locator("a.control").click()
        assert page.inner_text("h1") == "Resume queue q1?"
        page.click("form.confirm button[type=submit]")
        assert "Queue q1 resumed." in page.inner_text("[role=status]")
        deadline = time.monotonic() + 10
        while status(held) != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(held) == JobStatus.FINISHED


def test_the_enqueue_form_creates_a_job_a_real_worker_runs(page, real_redis: Redis, real_settings: Settings) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with worker(real_settings, real_redis, "clicks-3", "high", "default"):
        login(page)
        page.goto("/tasks")
        page.click("#enqueue-link")
        page.select_option("select[name=task]", "send_email")
        page.click("#pick-task button")
        page.fill("input[name='arg.to']", "ops@example.com")
        page.fill("input[name='arg.subject']", "<b>hello</b>")
        page.fill("input[name='arg.body']", '{"lines": [1, 2]}')
        page.fill("input[name='arg.duration']", "0.01")
        page.fill("input[name='in']", "soon")
        page.click("#enqueue button[type=submit]")
        assert "'soon' is not seconds" in page.inner_text("#enqueue-error")
        assert page.input_value("input[name='arg.subject']") == "<b>hello</b>"  # kept, and shown as text
        assert page.input_value("input[name='arg.body']") == '{"lines": [1, 2]}'
        page.fill("input[name='in']", "")
        page.select_option("select[name=queue]", "default")
        page.click("#enqueue button[type=submit]")
        assert "Enqueued send_email on default: this is the new job." in page.inner_text("[role=status]")
        job_id = page.url.rsplit("/jobs/", 1)[1]
        job = Job.fetch(job_id, connection=real_redis)
        assert job.args == ("ops@example.com", "<b>hello</b>", {"lines": [1, 2]}) and job.kwargs == {"duration": 0.01}
        deadline = time.monotonic() + 15
        while status(job) != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(job) == JobStatus.FINISHED and job.origin == "default"
        assert page.evaluate("window.__pwned") is None


def test_a_viewer_sees_no_controls(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    put(real_redis, "q1")
    real_redis.set("rq:suspended", 1)
    login(page, "watcher")
    for path in ("/", "/queues/q1/queued", "/tasks", "/enqueue?task=t_ok"):
        page.goto(path)
        assert page.is_visible("#suspended-banner"), path
        controls = "#workers-control, #queue-control, #enqueue-link, a.control, #suspended-banner a, form#enqueue"
        assert page.locator(controls).count() == 0, path
        assert page.locator("header nav a:has-text('Enqueue')").count() == 0
