"""Live refresh, lists, workers, the Redis page and keyboard shortcuts in Debian's Chromium, against `rqscope serve`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect
from redis import Redis
from rq.job import Job, JobStatus
from rqscope.tasks.registry import enqueue

from tests.test_browser import browser, login, page, sidecar  # noqa: F401 - the fixtures, shared
from tests.test_pages_more import register_workers
from tests.test_retry import make_failed

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]
LIVE = 15_000  # ms: a few polls (one every 3 s)


def hide(tab, hidden: bool) -> None:  # type: ignore[no-untyped-def]
    """Make the tab hidden or shown as the Page Visibility API reports it, and say so."""
    tab.evaluate(
        "(h) => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => h});"
        " document.dispatchEvent(new Event('visibilitychange')); }",
        hidden,
    )


def test_overview_counts_links_and_workers_refresh_without_reload(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    enqueue("t_ok", 1, connection=real_redis)
    login(page)
    page.evaluate("window.__sameDocument = true")
    row = page.locator("tr[data-queue=default]")
    assert row.locator("[data-count=failed]").evaluate("n => n.tagName") == "SPAN"  # zero: text, not a link
    assert row.locator("a.queue-name").get_attribute("href") == "/queues/default"
    make_failed(real_redis, 2)
    register_workers(real_redis, 2)
    failed = row.locator("a[data-count=failed]")
    expect(failed).to_have_attribute("href", "/queues/default/failed", timeout=LIVE)
    expect(failed).to_have_class("bad")
    assert failed.get_attribute("title") == "2 failed jobs" and failed.inner_text().startswith("⚠ 2")
    expect(page.locator("[data-stat=workers]")).to_have_text("2 live", timeout=LIVE)
    expect(row.locator("[data-workers]")).to_have_text("2", timeout=LIVE)
    real_redis.delete("rq:queue:default")  # the queued count drops to zero: its link becomes text again
    expect(row.locator("span[data-count=queued]")).to_have_text("0", timeout=LIVE)
    assert page.evaluate("window.__sameDocument") is True


def test_polling_waits_while_the_tab_is_hidden(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    login(page)
    polls: list[float] = []
    page.on("request", lambda r: polls.append(time.monotonic()) if "/api/queues" in r.url else None)
    page.wait_for_timeout(3500)
    assert polls, "the overview polls its counts"
    hide(page, True)
    page.wait_for_timeout(3500)  # a request already in flight may still answer
    before = len(polls)
    page.wait_for_timeout(7000)
    assert len(polls) == before, "nothing is polled while hidden"
    shown_at = time.monotonic()
    hide(page, False)
    page.wait_for_timeout(1000)
    assert len(polls) == before + 1 and polls[-1] - shown_at < 1.0  # at once when shown again


def test_a_job_list_refreshes_but_never_under_a_checked_box(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    first = make_failed(real_redis, 2)
    login(page)
    page.goto("/queues/default/failed")
    rows = page.locator("table.jobs tbody tr[data-job-id]")
    expect(rows).to_have_count(2)
    page.check(f"tr[data-job-id='{first[0]}'] input[name=ids]")
    later = make_failed(real_redis, 3)
    ended_at = datetime.now(UTC) - timedelta(seconds=5)
    stamp = ended_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    real_redis.hset(f"rq:job:{later[0]}", mapping={"started_at": stamp, "ended_at": stamp})
    expect(page.locator("[data-list-total]")).to_have_text("5", timeout=LIVE)  # the count moves on
    page.wait_for_timeout(3500)
    expect(rows).to_have_count(2)  # the rows stay while a box is checked
    assert page.is_checked(f"tr[data-job-id='{first[0]}'] input[name=ids]")
    page.uncheck(f"tr[data-job-id='{first[0]}'] input[name=ids]")
    page.locator("h1").click()  # focus leaves the list
    expect(rows).to_have_count(5, timeout=LIVE)
    new = page.locator(f"tr[data-job-id='{later[0]}']")
    assert new.locator("a").get_attribute("href") == f"/jobs/{later[0]}"
    ended = new.locator("[data-field=ended_at] time")
    assert re.fullmatch(r"\d+ s ago", ended.inner_text())
    assert ended.get_attribute("title") == f"{ended_at:%Y-%m-%d %H:%M:%S} UTC"  # exact, to the second
    assert new.locator("[data-field=duration]").inner_text() == "0 ms"
    page.check("input[data-select-all]")
    assert page.locator("tbody input[name=ids]:checked").count() == 5
    page.click("button:has-text('Retry selected')")
    assert page.dialogs == ["Retry 5 selected jobs?"]
    assert "Retried 5 jobs." in page.inner_text("[role=status]")
    assert real_redis.zcard("rq:failed:default") == 0


def test_select_all_and_cancel_queued_jobs(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    ids = [enqueue("t_ok", i, connection=real_redis).id for i in range(3)]
    login(page)
    page.goto("/queues/default/queued")
    page.check("input[data-select-all]")
    page.uncheck(f"tr[data-job-id='{ids[1]}'] input[name=ids]")
    assert page.locator("input[data-select-all]").evaluate("n => n.indeterminate") is True
    page.click("button:has-text('Cancel selected')")
    assert page.dialogs == ["Cancel 2 selected jobs?"]
    assert "Canceled 2 jobs." in page.inner_text("[role=status]")
    statuses = [Job.fetch(i, connection=real_redis).get_status() for i in ids]
    assert statuses == [JobStatus.CANCELED, JobStatus.QUEUED, JobStatus.CANCELED]


def test_workers_page_is_paged_and_marks_a_heartbeat_going_stale(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    register_workers(real_redis, 120)
    login(page)
    page.goto("/workers")
    assert page.locator("tr[data-worker]").count() == 50
    stale = page.locator("tr[data-worker=w001] [data-field=heartbeat]")
    assert "stale" not in stale.inner_text()
    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    real_redis.hset("rq:worker:w001", "last_heartbeat", old)
    expect(stale.locator(".flag")).to_have_text("stale", timeout=LIVE)
    expect(page.locator("tr[data-worker=w001] [data-field=state]")).to_have_text("dead", timeout=LIVE)
    page.click("nav.pages a:text-is('3')")
    assert page.url.endswith("/workers?page=3")
    assert page.locator("tr[data-worker]").count() == 20


def test_redis_page_from_the_nav(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    login(page)
    page.click("header nav a:text-is('Redis')")
    assert page.inner_text("h1") == "Redis"
    assert page.inner_text("[data-info=redis_version]") == real_redis.info()["redis_version"]
    assert page.inner_text("[data-info=role]") == "master"


def test_keyboard_shortcuts_and_a_visible_focus(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    ids = make_failed(real_redis, 3)
    login(page)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "job-search"  # no list here: the job id box
    page.keyboard.press("Escape")
    page.goto("/queues/default/failed")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("jk")  # typing in a field moves nothing
    assert page.input_value("input[name=q]") == "jk" and page.locator("tr.kb-selected").count() == 0
    page.fill("input[name=q]", "")
    page.keyboard.press("Escape")
    order = page.locator("table.jobs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")
    assert sorted(order) == sorted(ids)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.locator("tr.kb-selected").get_attribute("data-job-id") == order[1]
    page.keyboard.press("?")
    expect(page.locator("dialog#shortcuts")).to_be_visible()
    assert "j / k" in page.inner_text("dialog#shortcuts")
    page.keyboard.press("Escape")
    expect(page.locator("dialog#shortcuts")).to_be_hidden()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/jobs/{order[1]}")
    page.keyboard.press("Tab")  # keyboard focus shows a ring
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.tagName") in ("A", "INPUT", "BUTTON") and outline == "solid"


def test_enter_opens_the_row_even_before_the_closed_help_s_close_event(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Esc closes the help at once, but its close event (which hands the focus back) runs later: an Enter in
    between, with the focus still on the closed dialog's button, opens the selected row all the same."""
    make_failed(real_redis, 2)
    login(page)
    page.goto("/queues/default/failed")
    page.keyboard.press("j")
    wanted = page.locator("tr.kb-selected").get_attribute("data-job-id")
    page.keyboard.press("?")
    expect(page.locator("dialog#shortcuts")).to_be_visible()
    focused = page.evaluate(
        """() => {
            const dialog = document.getElementById("shortcuts");
            dialog.querySelector("button").focus();
            dialog.close();
            const on = document.activeElement.tagName;
            document.activeElement.dispatchEvent(new KeyboardEvent("keydown", {key: "Enter", bubbles: true}));
            return on;
        }"""
    )
    page.wait_for_url(f"**/jobs/{wanted}")
    assert focused == "BUTTON"  # the state the race leaves


def test_a_worker_whose_name_is_not_utf8_stays_live_on_refresh(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    name = b"w\xff/.."
    now = datetime.now(UTC).isoformat()
    real_redis.sadd("rq:workers", b"rq:worker:" + name)
    real_redis.hset(b"rq:worker:" + name, mapping={"state": "busy", "queues": "default", "last_heartbeat": now})
    login(page)
    page.goto("/workers")
    row = page.locator("tr[data-worker]")
    assert row.get_attribute("data-worker") == "w\\xff/.."
    real_redis.hset(b"rq:worker:" + name, "state", "idle")
    expect(row.locator("[data-field=state]")).to_have_text("idle", timeout=LIVE)  # matched by name, not "gone"
    assert "gone" not in (row.get_attribute("class") or "")
