"""Two Redis instances in Debian's Chromium: switching between them, and live refresh that stays on one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.tasks.registry import enqueue

from tests import test_browser, test_instances
from tests.test_browser import login, serving
from tests.test_instances import _fill

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]
LIVE = 15_000  # ms: a few polls (one every 3 s)
browser, west_server, west = test_browser.browser, test_instances.west_server, test_instances.west  # shared fixtures


@pytest.fixture(scope="module")
def sidecar(redis_server: EmbeddedRedis, west_server: EmbeddedRedis) -> Iterator[str]:
    yield from serving(f"east={redis_server.url},west={west_server.url}")


@pytest.fixture
def page(browser, sidecar: str, real_redis: Redis, west: Redis):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=sidecar)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def queued_tab(tab) -> str:  # type: ignore[no-untyped-def]
    return tab.locator(".tabs a", has_text="queued").locator(".count").inner_text()


def test_switch_from_west_to_east_and_back_on_a_queue_page(page, real_redis: Redis, west: Redis) -> None:  # type: ignore[no-untyped-def]
    _fill(real_redis, west)  # default holds 2 jobs on east, 5 on west
    login(page)
    page.goto("/queues/default?redis=west")
    expect(page).to_have_title("Queue default · west · rqscope")
    assert page.inner_text("[data-instance-current]") == "west" and queued_tab(page) == "5"
    page.click("[data-instance-switch=east]")
    expect(page).to_have_title("Queue default · east · rqscope")
    assert urlsplit(page.url)[2:4] == ("/queues/default", "")  # the default instance: no redis= at all
    assert page.inner_text("[data-instance-current]") == "east" and queued_tab(page) == "2"
    page.click("[data-instance-switch=west]")
    expect(page).to_have_title("Queue default · west · rqscope")
    assert urlsplit(page.url)[2:4] == ("/queues/default", "redis=west") and queued_tab(page) == "5"
    page.click(".tabs a:has-text('queued')")  # and its links stay on west
    assert parse_qs(urlsplit(page.url).query)["redis"] == ["west"]
    assert page.locator("[data-list-total]").inner_text() == "5"


def watch_fetches(tab) -> list[str]:  # type: ignore[no-untyped-def]
    """The URLs of every fetch the page's scripts make from now on."""
    fetched: list[str] = []
    tab.on("request", lambda r: fetched.append(r.url) if r.resource_type in ("fetch", "xhr") else None)
    return fetched


def instances_asked(urls: list[str]) -> set[tuple[str, ...]]:
    return {tuple(parse_qs(urlsplit(url).query).get("redis", [])) for url in urls}


def test_live_refresh_on_wests_overview_reads_only_west(page, real_redis: Redis, west: Redis) -> None:  # type: ignore[no-untyped-def]
    _fill(real_redis, west)
    login(page)
    fetched = watch_fetches(page)
    page.goto("/?redis=west")
    page.evaluate("window.__sameDocument = true")
    assert page.inner_text("[data-total=queued]") == "5"
    for i in range(3):
        enqueue("t_ok", i, connection=west)
    enqueue("t_ok", 9, connection=real_redis)
    expect(page.locator("[data-total=queued]")).to_have_text("8", timeout=LIVE)  # west's count, not east's 3
    page.wait_for_timeout(3500)  # one more round of every poll
    assert page.evaluate("window.__sameDocument") is True and page.inner_text("[data-total=queued]") == "8"
    polls = [url for url in fetched if not urlsplit(url).path.startswith("/api/series/")]  # charts: see below
    assert {"/api/queues", "/overview/live"} <= {urlsplit(url).path for url in polls}, fetched
    assert instances_asked(polls) == {("west",)}, polls


def test_the_overview_chart_on_west_reads_west(page, real_redis: Redis, west: Redis) -> None:  # type: ignore[no-untyped-def]
    login(page)
    fetched = watch_fetches(page)
    page.goto("/?redis=west")
    chart = page.locator("figure.chart")
    expect(chart).to_have_attribute("data-points", re.compile(r"\d+"), timeout=LIVE)
    series = [url for url in fetched if urlsplit(url).path.startswith("/api/series/")]
    assert series and instances_asked(series) == {("west",)}, series
    assert chart.get_attribute("data-error") is None
