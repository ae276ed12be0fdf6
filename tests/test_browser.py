"""The dashboard in Debian's Chromium, driven by Playwright, against `rqscope serve` and a real Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.tasks.registry import enqueue
from rqscope.tasks.worker import InstrumentedWorker
from werkzeug.security import generate_password_hash

from bench.stack import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import REPO, http_status, rqscope_command, spawn, stop, wait_for
from tests.test_retry import make_failed

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]
PASSWORD = "correct horse battery"
PAYLOAD = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=1>{{7*7}}"
ARTIFACTS = REPO / "test-artifacts"


def serving(redis_url: str, **extra: str) -> Iterator[str]:
    """`rqscope serve` with one gunicorn worker, the users ops (operator) and watcher (viewer), and a 0.2 s
    snapshot cache; `extra` adds or replaces RQSCOPE_* settings. Yields its URL; stopped by pid."""
    port = free_port()
    users = f"ops:operator:{generate_password_hash(PASSWORD)},watcher:viewer:{generate_password_hash(PASSWORD)}"
    env = {
        "RQSCOPE_REDIS_URL": redis_url,
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks,rqscope.tasks.examples",
        "RQSCOPE_USERS": users,
        "RQSCOPE_SNAPSHOT_TTL": "0.2",
        "RQSCOPE_LOG_LEVEL": "WARNING",
        **extra,
    }
    process = spawn(rqscope_command("serve", "--port", str(port), "--web-workers", "1"), env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_status(url + "/healthz") == 200, timeout=30)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def sidecar(redis_server: EmbeddedRedis) -> Iterator[str]:
    yield from serving(redis_server.url)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Debian's chromium is not installed; .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, sidecar: str, real_redis: Redis):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=sidecar)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(dialog) -> None:  # type: ignore[no-untyped-def]
        page.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def login(page, user: str = "ops") -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def failed_job_with_payload(redis: Redis) -> str:
    job = enqueue("t_fail", PAYLOAD, connection=redis)
    InstrumentedWorker(["default"], connection=redis).work(burst=True, logging_level="WARNING")
    return job.id


def test_login_is_required_and_works(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    assert "/login" in page.url
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert "wrong password" in page.inner_text("main")
    login(page)
    assert page.inner_text("header .who") == "ops (operator)"


def test_open_a_failed_job_and_retry_it_by_clicking(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    job_id = failed_job_with_payload(real_redis)
    login(page)
    page.goto("/queues/default/failed")
    page.click(f"a[href='/jobs/{job_id}']")
    assert "KeyError" in page.inner_text("pre.traceback")
    page.click("form[action$='/retry'] button")
    assert page.dialogs == ["Retry this job?"]
    assert f"Retried job {job_id}." in page.inner_text("[role=status]")
    page.goto("/queues/default/failed")
    assert page.locator(f"a[href='/jobs/{job_id}']").count() == 0
    assert real_redis.lrange("rq:queue:default", 0, -1) == [job_id.encode()]


def test_retry_all_matching_a_filter_with_confirmation(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    failed_job_with_payload(real_redis)
    make_failed(real_redis, 25)
    login(page)
    page.goto("/queues/default/failed")
    page.click("a.chip:has-text('RuntimeError')")
    assert page.inner_text("[data-list-total]") == "25"
    page.click("a.button:has-text('Retry all')")
    assert page.inner_text("h1") == "Retry 25 jobs?"
    page.click("button:has-text('Retry 25 jobs')")
    assert "Retried 25 jobs." in page.inner_text("[role=status]")
    assert real_redis.zcard("rq:failed:default") == 1 and real_redis.llen("rq:queue:default") == 25


def test_live_refresh_updates_a_count_without_reload(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    enqueue("t_ok", 1, connection=real_redis)
    login(page)
    page.goto("/")
    page.evaluate("window.__sameDocument = true")
    assert page.inner_text("[data-total=queued]") == "1"
    for i in range(4):
        enqueue("t_ok", i, connection=real_redis)
    from playwright.sync_api import expect

    expect(page.locator("[data-total=queued]")).to_have_text("5", timeout=15_000)  # the CSP forbids eval
    assert page.evaluate("window.__sameDocument") is True


def test_script_payloads_render_as_text_and_run_nothing(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    job_id = failed_job_with_payload(real_redis)
    login(page)
    for path in (f"/jobs/{job_id}", "/queues/default/failed", "/queues/default/failed?q=script"):
        page.goto(path)
        assert page.evaluate("window.__pwned === undefined")
        assert "<script>window.__pwned=1</script>" in page.inner_text("main")
        assert "{{7*7}}" in page.inner_text("main")  # shown literally: no template evaluation either
    assert page.dialogs == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto("/")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)


def test_viewer_sees_no_actions_and_forged_posts_are_refused(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    job_id = failed_job_with_payload(real_redis)
    login(page, "watcher")
    page.goto(f"/jobs/{job_id}")
    assert page.locator("form[action*='/jobs/'] button").count() == 0
    page.goto("/queues/default/failed")
    assert page.locator("input[name=ids]").count() == 0 and page.locator("a.button").count() == 0
    token = page.evaluate("document.querySelector('input[name=csrf_token]').value")
    forged = page.request.post(f"/jobs/{job_id}/retry", form={"csrf_token": token})
    assert forged.status == 403
    api = page.request.post(f"/api/jobs/{job_id}/retry", headers={"X-CSRF-Token": token}, data="{}")
    assert api.status == 403
    assert real_redis.zcard("rq:failed:default") == 1


def test_operator_post_without_csrf_token_is_refused(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    job_id = failed_job_with_payload(real_redis)
    login(page)
    assert page.request.post(f"/jobs/{job_id}/retry", form={}).status == 403
    assert page.request.post(f"/jobs/{job_id}/retry", form={"csrf_token": "forged"}).status == 403
    assert real_redis.zcard("rq:failed:default") == 1
