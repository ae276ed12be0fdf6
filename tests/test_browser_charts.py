"""The charts in Chromium, fed by a real `rqscope worker` and the sidecar's own alert leader."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task

import tests.sample_tasks  # noqa: F401  (registers t_ok and t_fail for enqueue)
from tests.helpers import rqscope_command, spawn, stop, wait_for
from tests.test_browser import PASSWORD, browser, login, page, serving  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]
SUCCESS, FAILURE, LINE = (4, 120, 87), (185, 28, 28), (29, 78, 216)  # the light palette of static/charts.js
BACKLOG = "charts backlog"  # a queue no worker reads, so its depth stays up


@pytest.fixture(scope="module")
def sidecar(redis_server: EmbeddedRedis) -> Iterator[str]:
    """`rqscope serve` whose alert leader evaluates (and records history) every second."""
    yield from serving(redis_server.url, RQSCOPE_TASK_MODULES="tests.sample_tasks", RQSCOPE_ALERT_INTERVAL="1")


@pytest.fixture
def worker(redis_server: EmbeddedRedis, real_redis: Redis) -> Iterator[None]:
    process = spawn(
        rqscope_command("worker", "default"),
        {"RQSCOPE_REDIS_URL": redis_server.url, "RQSCOPE_TASK_MODULES": "tests.sample_tasks"},
    )
    try:
        wait_for(lambda: real_redis.scard("rq:workers") > 0, timeout=30)
        yield
    finally:
        stop(process)


def run_jobs(redis: Redis, ok: int, failing: int) -> None:
    for i in range(ok):
        enqueue("t_ok", i, connection=redis)
    for i in range(failing):
        enqueue("t_fail", i, connection=redis)
    wait_for(lambda: redis.llen("rq:queue:default") == 0 and not redis.zcard("rq:wip:default"), timeout=60)


def color_pixels(tab, figure: str, rgb: tuple[int, int, int]) -> int:  # type: ignore[no-untyped-def]
    """How many pixels of the chart's canvas have this colour: the series was drawn."""
    return int(
        tab.evaluate(
            """([selector, rgb]) => {
                const canvas = document.querySelector(selector + ' canvas');
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let n = 0;
                for (let i = 0; i < data.length; i += 4) {
                    if (Math.abs(data[i] - rgb[0]) < 8 && Math.abs(data[i + 1] - rgb[1]) < 8
                        && Math.abs(data[i + 2] - rgb[2]) < 8 && data[i + 3] > 200) { n++; }
                }
                return n;
            }""",
            [figure, list(rgb)],
        )
    )


def column(tab, figure: str, index: int) -> list[str]:  # type: ignore[no-untyped-def]
    return tab.locator(
        f"{figure} table.chart-table tbody tr td:nth-child({index})"
    ).all_text_contents()  # the table sits in a closed <details>


def test_the_overview_chart_draws_real_runs_and_changes_live(page, real_redis: Redis, worker) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    run_jobs(real_redis, ok=6, failing=0)
    login(page, "watcher")
    figure = "figure[data-chart=runs]"
    page.wait_for_selector(f"{figure} .uplot canvas")
    assert page.locator(f"{figure} .u-legend").inner_text().count("success") == 1
    assert "failure" in page.locator(f"{figure} .u-legend").inner_text()
    assert page.locator(f"{figure} table.chart-table thead").text_content().startswith("Time (UTC)")
    wait_for(lambda: any(float(v) > 0 for v in column(page, figure, 2)), timeout=20)
    assert color_pixels(page, figure, SUCCESS) > 20
    assert color_pixels(page, figure, FAILURE) < color_pixels(page, figure, SUCCESS)
    page.evaluate("window.__not_reloaded = true")
    page.mouse.move(*_middle(page, f"{figure} .u-over"))
    assert any(ch.isdigit() for ch in page.locator(f"{figure} .u-legend").inner_text())  # the hover values

    run_jobs(real_redis, ok=0, failing=8)  # failures appear in the live chart, without a reload
    wait_for(lambda: any(float(v) > 0 for v in column(page, figure, 3)), timeout=20)
    wait_for(lambda: color_pixels(page, figure, FAILURE) > 20, timeout=10)
    assert page.evaluate("window.__not_reloaded") is True

    page.click("[data-window-choice='7d']")  # hour bins from the rollups, still without a reload
    wait_for(lambda: len(column(page, figure, 1)) == 60 and ":00" in column(page, figure, 1)[-1], timeout=10)
    assert page.evaluate("window.__not_reloaded") is True and page.url.endswith("?window=7d")


def _middle(tab, selector: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    box = tab.locator(selector).bounding_box()
    return box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2


def test_live_updates_pause_while_the_tab_is_hidden(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    login(page, "watcher")
    page.wait_for_selector("figure[data-chart=runs] .uplot canvas")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/api/series/runs" in request.url else None)
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    assert page.inner_text("[data-live-state]") == "paused"
    page.wait_for_timeout(11_000)  # two refresh periods
    assert asked == []
    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'visible'});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    wait_for(lambda: len(asked) > 0, timeout=5)
    assert page.inner_text("[data-live-state]") == "live"


def test_a_queue_page_charts_depth_recorded_by_the_leader(page, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    for i in range(7):
        enqueue_task(REGISTRY.get("t_ok"), [i], {}, connection=real_redis, queue="q2")
    real_redis.sadd("rq:queues", "rq:queue:" + BACKLOG)  # and one more, whose name needs encoding
    real_redis.rpush("rq:queue:" + BACKLOG, *(f"missing-{i}" for i in range(3)))
    # the leader records one point a minute: the first one comes within seconds of the queues appearing
    wait_for(
        lambda: (
            real_redis.exists(b"rqscope:history:queue:q2")
            and real_redis.exists(b"rqscope:history:queue:" + BACKLOG.encode())
        ),
        timeout=70,
    )
    login(page, "watcher")
    page.goto("/queues/q2")
    figure = "figure[data-chart=queue-depth]"
    page.wait_for_selector(f"{figure} .uplot canvas")
    wait_for(lambda: "7" in column(page, figure, 2), timeout=10)
    assert color_pixels(page, figure, LINE) > 0
    assert "jobs" in page.locator(f"{figure} .u-legend").inner_text() or "queued" in page.inner_text(figure)
    page.goto("/queues/charts%20backlog?window=24h")
    page.wait_for_selector(f"{figure} .uplot canvas")
    wait_for(lambda: "3" in column(page, figure, 2), timeout=10)
    assert page.inner_text("h1") == f"Queue {BACKLOG}"


def test_a_task_page_charts_histogram_percentiles_and_failures(page, real_redis: Redis, worker) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    run_jobs(real_redis, ok=5, failing=5)
    login(page, "watcher")
    page.goto("/tasks")
    page.click("a[href='/tasks/t_fail']")
    for kind in ("task-histogram", "task-quantiles", "task-failure"):
        page.wait_for_selector(f"figure[data-chart={kind}] .uplot canvas")
    histogram = column(page, "figure[data-chart=task-histogram]", 2)
    assert sum(int(n) for n in histogram) == 5  # every failed run in its bucket
    assert color_pixels(page, "figure[data-chart=task-histogram]", LINE) > 50  # the bar
    assert column(page, "figure[data-chart=task-failure]", 3)[-1] == "100"
    assert color_pixels(page, "figure[data-chart=task-failure]", LINE) > 0
    p99 = [v for v in column(page, "figure[data-chart=task-quantiles]", 4) if v != "–"]
    assert p99 and float(p99[-1]) > 0
