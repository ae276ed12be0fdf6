"""Two RQ installations under different key prefixes in Debian's Chromium: one dashboard for both.

`main` is under RQ's default prefix, `billing` under `{billing}`, served by the sidecar process `rqscope serve`
starts for that prefix. A signed-in operator switches to billing, opens a failed job and retries it by
clicking, sees the message, and switches back.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.tasks.rq_internals.keys import rq_reads_prefix

from tests import test_browser, test_instances
from tests.helpers import REPO, rqscope_command, wait_for
from tests.test_browser import login, serving
from tests.test_prefixes import BILLING, ENQUEUE, _env

pytestmark = [
    pytest.mark.redis,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not rq_reads_prefix(), reason="RQ reads RQ_KEY_PREFIX from 3.0 on"),
]
browser, page = test_browser.browser, test_browser.page  # the page, on this module's sidecar, accepts dialogs
west_server, west = test_instances.west_server, test_instances.west


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
            return json.loads(response.read()).get("status") == "ok"
    except OSError:
        return False


@pytest.fixture
def sidecar(redis_server: EmbeddedRedis, west_server: EmbeddedRedis, real_redis: Redis, west: Redis) -> Iterator[str]:
    env = _env(redis_server.url, west_server.url)
    subprocess.run(
        [sys.executable, "-c", ENQUEUE],
        env={**env, "RQ_KEY_PREFIX": BILLING, "URL": west_server.url, "OK": "0", "FAIL": "1", "HOSTILE": "x"},
        check=True,
        timeout=60,
    )
    worker = rqscope_command("worker", "--burst", "--redis", "billing", "default")
    subprocess.run(worker, env={**env, "RQ_KEY_PREFIX": BILLING}, check=True, timeout=120, cwd=REPO)
    for url in serving(f"main={redis_server.url},billing={west_server.url}#prefix={BILLING}"):
        wait_for(lambda u=url: _ready(u), timeout=60)  # the other prefix's sidecar answers a moment after
        yield url


def test_switch_to_the_other_prefix_retry_a_failed_job_and_come_back(page, west: Redis) -> None:  # type: ignore[no-untyped-def]
    (job_id,) = [j.decode() for j in west.zrange(f"{BILLING}:failed:default", 0, -1)]
    login(page)
    expect(page).to_have_title("Overview · main · rqscope")
    page.click("[data-instance-switch=billing]")
    expect(page).to_have_title("Overview · billing · rqscope")
    assert page.inner_text("header .who") == "ops (operator)"
    page.goto("/queues/default/failed?redis=billing")
    page.click(f"a[href='/jobs/{job_id}?redis=billing']")
    assert "KeyError" in page.inner_text("pre.traceback")
    page.click("form[action*='/retry'] button")
    assert page.dialogs == ["Retry this job?"]
    assert f"Retried job {job_id}." in page.inner_text("[role=status]")
    assert west.lrange(f"{BILLING}:queue:default", 0, -1) == [job_id.encode()]
    assert west.zcard(f"{BILLING}:failed:default") == 0
    page.click("[data-instance-switch=main]")
    expect(page).to_have_title(re.compile(r".* · main · rqscope"))
    assert "redis=" not in urlsplit(page.url).query  # the default instance takes no ?redis=
