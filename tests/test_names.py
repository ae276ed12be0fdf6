"""Any queue or worker name is reachable: every queue route and the forget route, with hostile names."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rqscope.web.names import decode_segment, encode_segment

from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}
TOKEN = "a-session-token"
RAW_NAMES = [b"team/a", b"..", b".", b"%41", b"a b", b"x\ny", b"q" * 5000, b"q\xff", b"caf\xc3\xa9", b"a;", b"..;"]
IDS = ["slash", "dotdot", "dot", "percent", "space", "newline", "5000", "not-utf8", "utf8", "semicolon", "dotdot-semi"]


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encoded(raw: bytes) -> str:
    """The name as an API client writes it: every byte outside unreserved characters percent-encoded."""
    return "".join(chr(b) if chr(b).isalnum() and b < 128 or b in b"-_~" else f"%{b:02X}" for b in raw)


def failed_in(redis: Redis, raw: bytes, count: int) -> list[str]:
    """Real failed jobs (hash, result, registry entry) in the queue whose name is exactly these bytes."""
    ids = make_failed(redis, count, queue="scratch")
    pipe = redis.pipeline()
    pipe.rename("rq:failed:scratch", b"rq:failed:" + raw)
    pipe.srem("rq:queues", "rq:queue:scratch")
    pipe.sadd("rq:queues", b"rq:queue:" + raw)
    for job_id in ids:
        pipe.hset(f"rq:job:{job_id}", "origin", raw)
    pipe.execute()
    return ids


@pytest.mark.parametrize("raw", RAW_NAMES, ids=IDS)
def test_the_url_encoding_round_trips_every_name(raw: bytes) -> None:
    segment = encode_segment(text(raw))
    assert "/" not in segment and segment not in (".", "..") and decode_segment(segment) == text(raw)
    assert decode_segment(encoded(raw)) == text(raw) or raw in (b"", b".", b"..")


RETRY_NAMES = RAW_NAMES


def reads(client: FlaskClient, name: str, ids: list[str]) -> None:
    """Every reading queue route, dashboard and JSON API, shows exactly these failed jobs."""
    page = client.get(f"/queues/{name}/failed", headers=HTML)
    assert page.status_code == 200 and all(i in page.get_data(as_text=True) for i in ids)
    confirm = client.get(f"/queues/{name}/failed/confirm?action=empty", headers=HTML)
    assert confirm.status_code == 200 and f"Delete {len(ids)} jobs?" in confirm.get_data(as_text=True)
    listed = client.get(f"/api/queues/{name}/jobs?state=failed").get_json()
    assert sorted(j["id"] for j in listed["jobs"]) == sorted(ids) and listed["total"] == len(ids)
    assert client.get(f"/api/queues/{name}/exceptions").get_json() == {
        "exceptions": {"RuntimeError": len(ids)},
        "scanned": len(ids),
        "failed_total": len(ids),
    }


@pytest.mark.parametrize("raw", RAW_NAMES, ids=IDS)
def test_every_queue_route_reads_and_empties_the_named_queue(
    real_client: FlaskClient, real_redis: Redis, raw: bytes
) -> None:
    ids = failed_in(real_redis, raw, 3)
    name = encoded(raw)
    reads(real_client, name, ids)
    with real_client.session_transaction() as session:
        session["csrf_token"] = TOKEN
    bulk = real_client.post(f"/queues/{name}/failed/bulk", data={"csrf_token": TOKEN, "action": "empty"})
    assert bulk.status_code == 302 and real_redis.zcard(b"rq:failed:" + raw) == 0
    back = real_client.get(bulk.headers["Location"], headers=HTML)  # the redirect names the same queue
    assert back.status_code == 200 and "No jobs here." in back.get_data(as_text=True)
    more = failed_in(real_redis, raw, 2)
    reads(real_client, name, more)
    deleted = real_client.delete(f"/api/queues/{name}/registries/failed", headers={"X-CSRF-Token": TOKEN})
    assert deleted.get_json() == {"deleted": 2} and not any(real_redis.exists(f"rq:job:{i}") for i in more)


@pytest.mark.parametrize("raw", RETRY_NAMES, ids=IDS)
def test_every_retry_route_reaches_the_named_queue(real_client: FlaskClient, real_redis: Redis, raw: bytes) -> None:
    first, second = failed_in(real_redis, raw, 2)
    name = encoded(raw)
    with real_client.session_transaction() as session:
        session["csrf_token"] = TOKEN
    bulk = real_client.post(f"/queues/{name}/failed/bulk", data={"csrf_token": TOKEN, "action": "retry", "ids": first})
    assert bulk.status_code == 302
    back = real_client.get(bulk.headers["Location"], headers=HTML)
    assert (
        back.status_code == 200 and second in back.get_data(as_text=True) and first not in back.get_data(as_text=True)
    )
    csrf = {"X-CSRF-Token": TOKEN}  # the session cookie signs these API calls in, so they carry the token
    assert real_client.post(f"/api/queues/{name}/retry", json={}, headers=csrf).get_json()["retried"] == 1
    assert real_redis.lrange(b"rq:queue:" + raw, 0, -1) == [first.encode(), second.encode()]
    assert real_client.delete(f"/api/queues/{name}/registries/queued", headers=csrf).get_json() == {"deleted": 2}
    assert real_redis.llen(b"rq:queue:" + raw) == 0


@pytest.mark.parametrize("raw", [b"team/a", b"..", b".", b"%41", b"x\ny", b"a;", b"q\xff", b"caf\xc3\xa9"], ids=str)
def test_overview_links_lead_to_the_queue(real_client: FlaskClient, real_redis: Redis, raw: bytes) -> None:
    [job_id] = failed_in(real_redis, raw, 1)
    overview = real_client.get("/", headers=HTML).get_data(as_text=True)
    links = re.findall(r'href="(/queues/[^"]+/failed)"', overview)
    assert len(links) == 1
    assert job_id in real_client.get(unescape(links[0]), headers=HTML).get_data(as_text=True)
    queues = real_client.get("/api/queues").get_json()["queues"]
    assert [q["counts"]["failed"] for q in queues] == [1]  # counted from the queue's exact key
    listed = real_client.get(f"/api/queues/{queues[0]['url_name']}/jobs?state=failed").get_json()
    assert [job["id"] for job in listed["jobs"]] == [job_id]  # the API's own url_name reaches the queue


def test_a_name_that_is_not_utf8_is_scraped_and_alerted_on(real_client: FlaskClient, real_redis: Redis) -> None:
    failed_in(real_redis, b"q\xff", 1)
    real_redis.rpush(b"rq:queue:q\xff", b"job-x")
    scrape = real_client.get("/metrics")
    assert scrape.status_code == 200
    text = scrape.get_data(as_text=True)
    escaped = 'rqscope_queue_jobs{queue="q\\\\xff",redis="default",state="queued"} 1'
    assert escaped in text  # the label value q\xff, escaped
    assert 'rqscope_scrape_errors_total{cause="shaping",redis="default"} 0.0' in text
    from rqscope.monitor.alerts.notifiers import dashboard_link
    from rqscope.monitor.alerts.state import Alert, Notification

    labels = (("queue", "q\udcff"),)
    alert = Alert("f", "Backlog", "queue_depth", "warning", labels, "q\udcff backs up", 1.0, "firing", 0.0)
    assert dashboard_link("http://h/", Notification("firing", alert)) == "http://h/queues/q%FF/queued"


def test_a_name_that_is_not_utf8_and_its_escape_spelled_out_are_two_series(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    # the byte ff, the four characters \xff, and a backslash before a newline: one series each
    raws = [b"q\xff", b"q\\xff", b"q\\\n"]
    for count, raw in enumerate(raws, start=1):
        real_redis.sadd("rq:queues", b"rq:queue:" + raw)
        real_redis.rpush(b"rq:queue:" + raw, *[b"job-%d" % i for i in range(count)])
    text = real_client.get("/metrics").get_data(as_text=True)
    queued = {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rqscope_queue_jobs" and sample.labels["state"] == "queued"
    }
    assert queued == {"q\\xff": 1, "q\\\\xff": 2, "q\\\\\n": 3}
    if shutil.which("promtool"):  # .ci/run installs it
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_an_unknown_name_is_still_404(real_client: FlaskClient, real_redis: Redis) -> None:
    failed_in(real_redis, b"team/a", 1)
    for path in ("/api/queues/team/jobs", "/api/queues/team%2Fb/jobs", "/api/queues/%2E/exceptions"):
        assert real_client.get(path).status_code == 404, path


WORKER_NAMES = [b"team/a", b"..", b"x\ny", b"%41", b"w" * 5000, b"a b", b"w\xff"]
WORKER_IDS = ["slash", "dotdot", "newline", "percent", "5000", "space", "not-utf8"]


@pytest.mark.parametrize("raw", WORKER_NAMES, ids=WORKER_IDS)
def test_a_dead_worker_with_a_hostile_name_can_be_forgotten(
    real_client: FlaskClient, real_redis: Redis, raw: bytes
) -> None:
    real_redis.sadd("rq:workers", b"rq:worker:" + raw)
    real_redis.hset(
        b"rq:worker:" + raw,
        mapping={"state": "idle", "queues": "default", "last_heartbeat": "2020-01-01T00:00:00.000000Z"},
    )
    with real_client.session_transaction() as session:
        session["csrf_token"] = TOKEN
    page = real_client.get("/workers", headers=HTML).get_data(as_text=True)
    [action] = re.findall(r'action="(/workers/[^"]+/forget)"', page)
    assert action == f"/workers/{quote(raw, safe='') if raw != b'..' else '%2E%2E;'}/forget"
    assert real_client.post(unescape(action), data={"csrf_token": TOKEN}).status_code == 302
    assert real_redis.smembers("rq:workers") == set() and not real_redis.exists(b"rq:worker:" + raw)
