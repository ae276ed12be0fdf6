"""The JSON API over a real Redis: lists, filters, retry, delete, roles, bad input."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import REGISTRY, enqueue, enqueue_task
from rqscope.tasks.worker import InstrumentedWorker
from rqscope.web import create_app

from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789ab"


def all_pages(client: FlaskClient, path: str, per_page: int, **params: str) -> list[str]:
    ids, page = [], 1
    while True:
        query = "&".join(f"{k}={v}" for k, v in {**params, "page": page, "per_page": per_page}.items())
        body = client.get(f"{path}?{query}").get_json()
        ids += [job["id"] for job in body["jobs"]]
        if page * per_page >= body["total"]:
            return ids
        page += 1


def test_failed_pages_hold_every_job_once_in_order(real_client: FlaskClient, real_redis: Redis) -> None:
    ids = make_failed(real_redis, 53)
    path = "/api/queues/default/jobs"
    newest = all_pages(real_client, path, 10, state="failed", order="newest")
    oldest = all_pages(real_client, path, 7, state="failed", order="oldest")
    in_registry = [i.decode() for i in real_redis.zrange("rq:failed:default", 0, -1)]
    assert sorted(in_registry) == sorted(ids)  # RQ's scores are whole seconds: ties order by id
    assert newest == list(reversed(in_registry)) and oldest == in_registry
    first = real_client.get(f"{path}?state=failed&per_page=5").get_json()
    assert first["total"] == 53 and first["jobs"][0]["exc_type"] == "RuntimeError"
    assert first["jobs"][0]["func"] == "tests.sample_tasks.t_ok"


def test_queued_pages_in_both_orders(real_client: FlaskClient, real_redis: Redis) -> None:
    ids = [enqueue("t_ok", i, connection=real_redis).id for i in range(23)]
    path = "/api/queues/default/jobs"
    assert all_pages(real_client, path, 4, state="queued", order="oldest") == ids
    assert all_pages(real_client, path, 4, state="queued", order="newest") == list(reversed(ids))
    past_end = real_client.get(f"{path}?state=queued&page=99").get_json()
    assert past_end["total"] == 23 and past_end["jobs"] == []


def failures(real_redis: Redis) -> tuple[list[str], list[str]]:
    key_errors = [enqueue("t_fail", i, connection=real_redis).id for i in range(4)]
    report = REGISTRY.get("generate_report")
    report_errors = [
        enqueue_task(report, [str(i)], {"duration": 0, "fail_rate": 1.0}, connection=real_redis, queue="default")[0].id
        for i in range(3)
    ]
    InstrumentedWorker(["default"], connection=real_redis).work(burst=True, logging_level="WARNING")
    return key_errors, report_errors


def test_filters_and_exception_summary(real_client: FlaskClient, real_redis: Redis) -> None:
    key_errors, report_errors = failures(real_redis)
    path = "/api/queues/default/jobs?state=failed"
    by_exc = real_client.get(f"{path}&exc=ReportError").get_json()
    assert sorted(j["id"] for j in by_exc["jobs"]) == sorted(report_errors) and by_exc["scanned"] == 7
    by_func = real_client.get(f"{path}&func=t_fail").get_json()
    assert sorted(j["id"] for j in by_func["jobs"]) == sorted(key_errors)
    by_text = real_client.get(f"{path}&q=missing%202").get_json()
    assert [j["exc_message"] for j in by_text["jobs"]] == ["'missing 2'"]
    summary = real_client.get("/api/queues/default/exceptions").get_json()
    assert summary == {"exceptions": {"KeyError": 4, "ReportError": 3}, "scanned": 7, "failed_total": 7}


def test_retry_all_matching_a_filter_and_audit(real_client: FlaskClient, real_redis: Redis) -> None:
    key_errors, report_errors = failures(real_redis)
    response = real_client.post("/api/queues/default/retry", json={"exc": "KeyError"})
    assert response.get_json() == {"retried": 4, "scan_limit_reached": False}
    assert sorted(Queue("default", connection=real_redis).job_ids) == sorted(key_errors)
    again = real_client.post("/api/queues/default/retry", json={"exc": "KeyError"}).get_json()
    assert again["retried"] == 0
    rest = real_client.post("/api/queues/default/retry", json={}).get_json()
    assert rest["retried"] == 3
    entries = real_client.get("/api/audit").get_json()["entries"]
    assert [(e["action"], e["target"], e["count"]) for e in entries] == [
        ("retry", "default", 3),
        ("retry", "default", 0),
        ("retry", "default", 4),
    ]


def test_retry_and_delete_one_job(real_client: FlaskClient, real_redis: Redis) -> None:
    [first, second] = make_failed(real_redis, 2)
    assert real_client.post(f"/api/jobs/{first}/retry", json={}).get_json() == {"id": first, "status": "queued"}
    assert real_client.post(f"/api/jobs/{first}/retry", json={}).status_code == 409
    assert real_client.delete(f"/api/jobs/{second}").get_json() == {"id": second, "deleted": True}
    assert real_redis.zcard("rq:failed:default") == 0 and not real_redis.exists(f"rq:job:{second}")
    assert real_client.get(f"/api/jobs/{second}").status_code == 404


def test_job_detail_has_args_and_traceback(real_client: FlaskClient, real_redis: Redis) -> None:
    [key_error, *_], _ = failures(real_redis)
    body = real_client.get(f"/api/jobs/{key_error}").get_json()
    assert body["args"] == [0] and body["kwargs"] == {} and body["status"] == "failed"
    assert "KeyError" in body["traceback"] and body["error"]["type"] == "KeyError"


def test_empty_a_registry(real_client: FlaskClient, real_redis: Redis) -> None:
    ids = make_failed(real_redis, 30)
    response = real_client.delete("/api/queues/default/registries/failed")
    assert response.get_json() == {"deleted": 30}
    assert real_redis.zcard("rq:failed:default") == 0
    assert not any(real_redis.exists(f"rq:job:{i}") for i in ids)


def test_queues_and_workers(real_client: FlaskClient, real_redis: Redis) -> None:
    enqueue("t_ok", 1, connection=real_redis)
    body = real_client.get("/api/queues").get_json()
    assert body["redis"]["up"] is True and body["totals"]["queued"] == 1
    assert body["queues"][0]["name"] == "default" and body["queues"][0]["no_workers"] is True
    assert real_client.get("/api/workers").get_json()["workers"] == []


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=abc", "page=-1", "per_page=501", "per_page=0", "order=sideways", "state=bogus",
     "func=" + "x" * 201, "q=%00", "page=99999999999", "page=%C2%B2", "per_page=%D9%A3", "page=", "page=+1",
     "page=1%20", "order=", "state=", "page=" + "9" * 5000],
    ids=lambda v: v[:20],
)  # fmt: skip
def test_bad_list_parameters_are_400(real_client: FlaskClient, real_redis: Redis, query: str) -> None:
    enqueue("t_ok", 1, connection=real_redis)
    response = real_client.get(f"/api/queues/default/jobs?{query}")
    assert response.status_code == 400 and response.get_json()["error"]


@pytest.mark.parametrize("limit", ["%C2%B2", "", "abc", "0", "1001", "1.5", "9" * 5000], ids=lambda v: v[:12])
def test_bad_audit_limits_are_400(real_client: FlaskClient, limit: str) -> None:
    response = real_client.get(f"/api/audit?limit={limit}")
    assert response.status_code == 400 and "limit must be a whole number" in response.get_json()["error"]


@pytest.mark.parametrize("body", [[], {"exc": 5}, {"ids": "x"}, {"ids": [1]}, {"bogus": 1}, {"ids": ["x" * 200]}])
def test_bad_retry_bodies_are_400(real_client: FlaskClient, real_redis: Redis, body: object) -> None:
    make_failed(real_redis, 1)
    assert real_client.post("/api/queues/default/retry", json=body).status_code == 400
    assert real_redis.zcard("rq:failed:default") == 1


def test_unknown_queue_registry_and_job_are_404(real_client: FlaskClient) -> None:
    assert real_client.get("/api/queues/nope/jobs").status_code == 404
    assert real_client.get("/api/queues/<script>/exceptions").status_code == 404
    assert real_client.delete("/api/queues/default/registries/bogus").status_code == 404
    assert real_client.post("/api/jobs/nope/retry", json={}).status_code == 404


class TestRoles:
    @pytest.fixture
    def secured(self, real_settings: Settings, real_redis: Redis) -> FlaskClient:
        settings = real_settings.replace(api_token=OPERATOR, viewer_token=VIEWER, host="0.0.0.0")
        return create_app(settings, testing=True).test_client()

    def test_anonymous_gets_401_everywhere(self, secured: FlaskClient) -> None:
        for path in ("/api/queues", "/api/workers", "/api/queues/default/jobs", "/api/audit"):
            assert secured.get(path).status_code == 401

    def test_viewer_reads_but_cannot_act(self, secured: FlaskClient, real_redis: Redis) -> None:
        [job_id] = make_failed(real_redis, 1)
        viewer = {"Authorization": f"Bearer {VIEWER}"}
        assert secured.get("/api/queues", headers=viewer).status_code == 200
        for method, path in [("post", f"/api/jobs/{job_id}/retry"), ("delete", f"/api/jobs/{job_id}"),
                             ("post", "/api/queues/default/retry"), ("delete", "/api/queues/default/registries/failed"),
                             ("post", "/api/tasks")]:  # fmt: skip
            response = getattr(secured, method)(path, headers=viewer, json={})
            assert response.status_code == 403, path
        assert real_redis.zcard("rq:failed:default") == 1

    def test_operator_acts_but_not_cross_site(self, secured: FlaskClient, real_redis: Redis) -> None:
        [job_id] = make_failed(real_redis, 1)
        operator = {"Authorization": f"Bearer {OPERATOR}"}
        forged = secured.post(f"/api/jobs/{job_id}/retry", headers={**operator, "Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403 and real_redis.zcard("rq:failed:default") == 1
        assert secured.post(f"/api/jobs/{job_id}/retry", headers=operator).status_code == 200


def test_get_routes_never_mutate(real_client: FlaskClient, real_redis: Redis) -> None:
    key_errors, _ = failures(real_redis)
    enqueue("t_ok", 1, connection=real_redis)
    digest = real_redis.execute_command("DEBUG", "DIGEST")
    app = real_client.application
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        path = rule.rule.replace("<queue>", "default").replace("<job_id>", key_errors[0])
        assert real_client.get(path).status_code < 500, path
    assert real_redis.execute_command("DEBUG", "DIGEST") == digest


def test_redis_down_is_503_json(real_settings: Settings) -> None:
    from rqscope.monitor.embedded import free_port

    client = create_app(
        real_settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"), testing=True
    ).test_client()
    for path in ("/api/queues/default/jobs", "/api/jobs/x"):
        response = client.get(path)
        assert response.status_code == 503 and "Redis is unavailable" in response.get_json()["error"]
    queues = client.get("/api/queues")
    assert queues.status_code == 503 and queues.get_json()["redis"]["up"] is False


def test_a_redis_that_stops_answering_gives_503_within_the_timeout(real_settings: Settings, real_redis: Redis) -> None:
    import threading
    import time

    enqueue("t_ok", 1, connection=real_redis)
    client = create_app(real_settings.replace(redis_timeout=0.3, snapshot_ttl=0), testing=True).test_client()
    assert client.get("/api/queues").status_code == 200
    other = Redis.from_url(str(real_settings.redis_url), socket_timeout=10)
    sleeper = threading.Thread(target=other.execute_command, args=("DEBUG", "SLEEP", 5))
    sleeper.start()
    time.sleep(0.2)  # the sleep has begun: Redis answers nobody for 5 s
    try:
        for path in ("/api/queues", "/api/workers", "/api/queues/default/jobs", "/api/audit"):
            started = time.monotonic()
            response = client.get(path)
            assert response.status_code == 503, path
            assert "Redis is unavailable" in response.get_json()["error"] and time.monotonic() - started < 1.5
    finally:
        sleeper.join()
        other.close()
    assert client.get("/api/queues").status_code == 200  # recovers on its own


@pytest.mark.skipif(not hasattr(Queue, "_enqueue_rate_limited_job"), reason="concurrency limits arrived in rq 3.0")
def test_concurrency_limits_and_the_ready_registry_are_shown(real_client: FlaskClient, real_redis: Redis) -> None:
    from rq.rate_limit import RateLimit  # type: ignore[import-not-found]

    queue = Queue("default", connection=real_redis)
    for i in range(4):
        queue.enqueue(len, [i], rate_limit=RateLimit("partner <api>", 1))
    body = real_client.get("/api/queues").get_json()
    assert [(r["key"], r["concurrency"], r["allowed"], r["held"]) for r in body["rate_limits"]] == [
        ("partner <api>", 1, 1, 3)
    ]
    assert body["queues"][0]["counts"]["ready"] == 0 and "ready" in body["totals"]
    page = real_client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Concurrency limits" in page and "partner &lt;api&gt;" in page and "<api>" not in page
    listed = real_client.get("/api/queues/default/jobs?state=ready").get_json()
    assert listed["total"] == 0 and listed["jobs"] == []
