"""Overview links, job-list times and bulk cancel, paged workers and the Redis page, on a real redis-server."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rqscope.monitor import audit
from rqscope.monitor.embedded import free_port
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task
from rqscope.web import create_app

from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def row_of(body: str, queue: str) -> str:
    match = re.search(r'<tr data-queue="' + re.escape(html.escape(queue)) + r'">(.*?)</tr>', body, re.S)
    assert match, queue
    return match.group(1)


def csrf(client: FlaskClient) -> str:
    with client.session_transaction() as session:
        return str(session["csrf_token"])


def register_workers(redis: Redis, count: int, stale: tuple[int, ...] = ()) -> list[str]:
    """`count` workers as RQ registers them; those numbered in `stale` last heartbeat 10 minutes ago."""
    now = datetime.now(UTC)
    names = [f"w{i:03d}" for i in range(count)]
    pipe = redis.pipeline()
    for i, name in enumerate(names):
        beat = now - timedelta(minutes=10) if i in stale else now
        pipe.sadd("rq:workers", f"rq:worker:{name}")
        pipe.sadd("rq:workers:default", f"rq:worker:{name}")
        fields = {"state": "idle", "queues": "default", "hostname": "h", "birth": now.isoformat()}
        pipe.hset(f"rq:worker:{name}", mapping={**fields, "last_heartbeat": beat.isoformat()})
    pipe.execute()
    return names


def test_overview_links_only_counts_above_zero_and_flags_failures(real_client: FlaskClient, real_redis: Redis) -> None:
    make_failed(real_redis, 3, queue="team/a")
    enqueue("t_ok", 1, connection=real_redis)
    body = page(real_client, "/")
    team = row_of(body, "team/a")
    # the queue's name opens its page, its slash encoded so that it stays one path segment
    assert '<a href="/queues/team%2Fa" class="queue-name">team/a</a>' in team
    failed = re.search(r'<td data-state="failed"[^>]*>(.*?)</td>', team, re.S).group(1)  # type: ignore[union-attr]
    assert 'href="/queues/team%2Fa/failed"' in failed and 'class="bad"' in failed
    assert "⚠" in failed and '<span class="sr-only"> failed</span>' in failed and 'title="3 failed jobs"' in failed
    queued = re.search(r'<td data-state="queued"[^>]*>(.*?)</td>', team, re.S).group(1)  # type: ignore[union-attr]
    assert queued == '<span data-count="queued" class="zero">0</span>'  # a zero is text, not a link
    assert len(re.findall(r"<a [^>]*data-count=", team)) == 1
    default = row_of(body, "default")
    assert re.search(r'<a href="/queues/default/queued" data-count="queued">1</a>', default)
    assert len(re.findall(r"<a [^>]*data-count=", default)) == 1


def test_overview_live_figures(real_client: FlaskClient, real_redis: Redis) -> None:
    register_workers(real_redis, 3, stale=(0,))
    body = real_client.get("/overview/live", headers={"Accept": "application/json"}).get_json()
    assert body["workers"] == {"live": 2, "dead": 1} and body["window_minutes"] == 15
    assert body["throughput"] == 0 and body["failure_ratio"] is None and body["redis_up"] is True


def test_failed_list_shows_relative_times_exact_titles_and_durations(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    [job_id] = make_failed(real_redis, 1)
    started = datetime.now(UTC) - timedelta(minutes=3, seconds=30)
    ended = started + timedelta(seconds=75, microseconds=250_000)
    real_redis.hset(
        f"rq:job:{job_id}",
        mapping={
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "ended_at": ended.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    )
    body = page(real_client, "/queues/default/failed")
    row = re.search(r'<tr data-job-id="' + job_id + r'">(.*?)</tr>', body, re.S).group(1)  # type: ignore[union-attr]
    ended_cell = re.search(r'<td class="when" data-field="ended_at">(.*?)</td>', row).group(1)  # type: ignore[union-attr]
    assert f'title="{ended:%Y-%m-%d %H:%M:%S} UTC"' in ended_cell and ">2 min ago</time>" in ended_cell
    assert '<td class="when" data-field="duration">1 min 15 s</td>' in row
    shown = re.sub(r"<[^>]+>", " ", row)  # the text a reader sees: no raw ISO times, no microseconds
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d+", shown) and "T" not in re.findall(r"\d\d(T)\d\d", shown)
    assert 'data-select-all aria-label="select every job on this page"' in body
    assert "Retry selected" in body


def test_bulk_cancel_cancels_the_selected_queued_jobs_and_audits_it(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    ids = [enqueue("t_ok", i, connection=real_redis).id for i in range(3)]
    later = datetime.now(UTC) + timedelta(hours=1)
    planned = enqueue_task(REGISTRY.get("t_ok"), [1], {}, connection=real_redis, at=later)[0].id
    body = page(real_client, "/queues/default/queued")
    assert 'data-confirm-selected="Cancel"' in body and "Cancel selected" in body
    token = csrf(real_client)
    response = real_client.post(
        "/queues/default/queued/bulk", data={"csrf_token": token, "action": "cancel", "ids": ids[:2] + [planned]}
    )
    assert response.status_code == 302
    # the scheduled job of the same queue, selected too, is canceled with them
    assert [Job.fetch(i, connection=real_redis).get_status() for i in ids] == [
        JobStatus.CANCELED,
        JobStatus.CANCELED,
        JobStatus.QUEUED,
    ]
    assert Queue("default", connection=real_redis).job_ids == [ids[2]]
    assert set(real_redis.zrange("rq:canceled:default", 0, -1)) >= {ids[0].encode(), ids[1].encode()}
    assert real_redis.zscore("rq:scheduled:default", planned) is None
    [entry] = audit.recent(real_redis, 1)
    assert (entry.action, entry.target, entry.count) == ("cancel", "default/queued", 3)
    assert "Canceled 3 jobs." in page(real_client, "/queues/default/queued")


def test_bulk_cancel_leaves_failed_running_and_other_queues_jobs_alone(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    [failed] = make_failed(real_redis, 1)
    other = Queue("other", connection=real_redis).enqueue("tests.sample_tasks.t_ok", 1).id
    page(real_client, "/queues/default/queued")
    token = csrf(real_client)
    response = real_client.post(
        "/queues/default/queued/bulk", data={"csrf_token": token, "action": "cancel", "ids": [failed, other]}
    )
    assert response.status_code == 302
    assert Job.fetch(failed, connection=real_redis).get_status() == JobStatus.FAILED
    assert Job.fetch(other, connection=real_redis).get_status() == JobStatus.QUEUED
    assert audit.recent(real_redis, 1)[0].count == 0
    # no cancel of a failed list, and no "cancel everything" without a selection
    for path, ids in (("/queues/default/failed/bulk", [failed]), ("/queues/default/queued/bulk", [])):
        assert real_client.post(path, data={"csrf_token": token, "action": "cancel", "ids": ids}).status_code == 400


def test_workers_are_paged_fifty_at_a_time_with_stale_heartbeats_marked(
    real_client: FlaskClient, real_redis: Redis
) -> None:
    names = register_workers(real_redis, 120, stale=(7, 115))
    first = page(real_client, "/workers")
    assert first.count("<tr class=") == 50 and "w000" in first and "w050" not in first
    assert "120 workers: 118 live" in first and "2 with a stale heartbeat" in first
    assert (
        'Dead or stale workers are on pages <a href="/workers?page=1">1</a>, <a href="/workers?page=3">3</a>' in first
    )
    assert '<a href="/workers?page=3">3</a>' in first and 'rel="next"' in first
    stale_row = re.search(r'data-worker="w007">(.*?)</tr>', first, re.S).group(1)  # type: ignore[union-attr]
    assert 'class="nowrap stale"' in stale_row and '<span class="flag">stale</span>' in stale_row
    fresh_row = re.search(r'data-worker="w008">(.*?)</tr>', first, re.S).group(1)  # type: ignore[union-attr]
    assert "stale" not in fresh_row
    last = page(real_client, "/workers?page=3")
    assert last.count("<tr class=") == 20 and "w119" in last and "w099" not in last
    assert page(real_client, "/workers?page=99").count("<tr class=") == 20  # past the end: the last page
    assert real_client.get("/workers?page=0", headers=HTML).status_code == 400
    # the JSON: every worker without paging arguments (as before), one page with them
    assert [w["name"] for w in real_client.get("/api/workers").get_json()["workers"]] == names
    paged = real_client.get("/api/workers?page=3&per_page=50").get_json()
    assert (paged["total"], paged["page"], paged["pages"], len(paged["workers"])) == (120, 3, 3, 20)
    assert real_client.get("/api/workers?per_page=0").status_code == 400


def test_redis_page_shows_info_sections_and_no_secrets(real_client: FlaskClient, real_redis: Redis) -> None:
    real_redis.set("k", 1)
    body = page(real_client, "/redis")
    info = real_redis.info()
    assert f'<dd data-info="redis_version">{info["redis_version"]}</dd>' in body
    assert 'data-info="connected_clients">' in body and f"of {info['maxclients']} allowed" in body
    assert 'data-info="role">master</dd>' in body and 'data-info="rdb_last_bgsave_status">ok' in body
    assert '<tr data-db="db0"><td>db0</td><td>1</td>' in body
    assert 'href="/redis"' in body  # in the nav
    api = real_client.get("/api/redis").get_json()
    assert api["up"] is True and api["server"]["redis_version"] == info["redis_version"]
    assert api["memory"]["used_memory"] > 0 and "mem_fragmentation_ratio" in api["memory"]
    assert api["clients"]["maxclients"] == info["maxclients"] and api["keyspace"]["db0"]["keys"] == 1
    assert api["replication"]["role"] == "master" and api["pool"]["max"] > 0
    text = body + str(api)
    for secret in ("requirepass", "masterauth", "config_file", "executable"):
        assert secret not in text


def test_one_info_call_serves_many_views(real_app, real_redis: Redis) -> None:  # type: ignore[no-untyped-def]
    client = real_app.test_client()
    cache = real_app.extensions["rqscope.redis_info"]["default"]  # one INFO cache per instance
    for _ in range(5):
        client.get("/redis", headers=HTML)
        client.get("/api/redis")
    assert cache.fetches == 1
    time.sleep(cache.ttl + 0.05)
    client.get("/api/redis")
    assert cache.fetches == 2


def test_redis_page_shows_an_outage_as_a_state() -> None:
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout=0.2), testing=True)
    client = app.test_client()
    response = client.get("/redis", headers=HTML)
    assert response.status_code == 200
    assert 'id="redis-info-state"' in response.get_data(as_text=True)
    api = client.get("/api/redis")
    assert api.status_code == 503 and api.get_json()["up"] is False and "unavailable" in api.get_json()["error"]
