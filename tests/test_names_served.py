"""Hostile queue names under a real `rqscope serve` (gunicorn) and in Chromium clicking the overview's links."""

from __future__ import annotations

import base64
import http.client
import json

import pytest
from redis import Redis

from tests.test_browser import PASSWORD, browser, login, page, sidecar  # noqa: F401 - the browser suite's fixtures
from tests.test_names import encoded, failed_in

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def raw_get(url: str, path: str) -> tuple[int, dict[str, object]]:
    """GET a path sent byte for byte, as curl --path-as-is would: no client-side normalising."""
    host = url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.putheader("Accept", "application/json")
        connection.putheader("Authorization", "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode())
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "raw",
    [b"team/a", b"..", b".", b"%41", b"a b", b"x\ny", b"q\xff", "é".encode() * 5000],
    ids=lambda raw: str(raw[:20]),
)
def test_gunicorn_routes_percent_encoded_names(sidecar: str, real_redis: Redis, raw: bytes) -> None:  # noqa: F811
    ids = failed_in(real_redis, raw, 2)
    status, body = raw_get(sidecar, f"/api/queues/{encoded(raw)}/jobs?state=failed")
    assert status == 200 and sorted(job["id"] for job in body["jobs"]) == sorted(ids)  # type: ignore[union-attr]
    status, body = raw_get(sidecar, f"/api/queues/{encoded(raw)}/exceptions")
    assert status == 200 and body["failed_total"] == 2
    assert raw_get(sidecar, f"/api/queues/{encoded(raw + b'x')}/jobs")[0] == 404


@pytest.mark.browser
@pytest.mark.parametrize("raw", [b"..", b"team/a"], ids=str)
def test_clicking_the_overview_link_opens_the_named_queue(page, real_redis: Redis, raw: bytes) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    ids = failed_in(real_redis, raw, 1)
    login(page)
    page.goto("/")
    row = page.locator(f"tr[data-queue='{raw.decode()}']")
    row.locator("a[data-count=failed]").click()
    page.wait_for_load_state()
    assert page.url.endswith("/queues/%2E%2E;/failed" if raw == b".." else "/queues/team%2Fa/failed")
    assert page.inner_text("h1").startswith(raw.decode())
    assert ids[0] in page.inner_text("main")
