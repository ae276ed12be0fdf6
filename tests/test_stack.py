"""The full loop on real parts: redis-server, `rqscope serve`, two `rqscope worker`s with demo traffic,
Debian's Prometheus (the shipped prometheus.yml, targets adapted) and Alertmanager (the shipped
config, its receiver pointed at a loopback HTTP server)."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.tasks.registry import enqueue

from tests.helpers import REPO, http_status, rqscope_command, spawn, stop, wait_for
from tests.receivers import Receiver

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def query(prometheus: str, expr: str) -> list[Any]:
    body = get_json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not installed; .ci/run installs Debian's packages")
    work = tmp_path_factory.mktemp("stack")
    redis = Redis.from_url(redis_server.url)
    redis.flushall()
    web_port, prom_port, am_port = free_port(), free_port(), free_port()
    env = {"RQSCOPE_REDIS_URL": redis_server.url, "RQSCOPE_TASK_MODULES": "rqscope.tasks.examples",
           "RQSCOPE_PUBLISH_INTERVAL": "1", "RQSCOPE_LOG_LEVEL": "WARNING", "RQSCOPE_SNAPSHOT_TTL": "0.5"}  # fmt: skip
    processes = []
    with Receiver() as receiver:
        try:
            processes.append(spawn(rqscope_command("serve", "--port", str(web_port), "--web-workers", "1"), env))
            for n in range(2):
                processes.append(
                    spawn(rqscope_command("worker", "high", "default", "low", "--name", f"stack-{n}"), env)
                )
            config = yaml.safe_load((REPO / "prometheus.yml").read_text())
            config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
            config["rule_files"] = [str(work / "rules.yml")]
            config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am_port}"]
            config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{web_port}"]
            (work / "prometheus.yml").write_text(yaml.safe_dump(config))
            # the shipped rules, with `for:` shortened so that the test does not wait minutes
            rules = re.sub(r"for: \d+[smh]", "for: 2s", (REPO / "prometheus/rqscope.rules.yml").read_text())
            (work / "rules.yml").write_text(rules)
            am_config = yaml.safe_load((REPO / "prometheus/alertmanager.yml").read_text())
            for receiver_config in am_config["receivers"]:
                receiver_config.pop("email_configs", None)
                receiver_config["webhook_configs"] = [{"url": receiver.url, "send_resolved": True}]
            am_config["route"]["group_wait"] = "1s"
            (work / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
            processes.append(spawn(["prometheus-alertmanager", f"--config.file={work / 'alertmanager.yml'}",
                                    f"--storage.path={work / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                    "--cluster.listen-address="]))  # fmt: skip
            processes.append(spawn(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={work / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{prom_port}"]))  # fmt: skip
            prometheus = f"http://127.0.0.1:{prom_port}"
            wait_for(lambda: http_status(f"{prometheus}/-/ready") == 200, timeout=60)
            wait_for(lambda: http_status(f"http://127.0.0.1:{web_port}/healthz") == 200, timeout=60)
            yield {"prometheus": prometheus, "redis": redis, "receiver": receiver, "work": work}
        finally:
            for process in reversed(processes):
                stop(process)


def traffic(redis: Redis, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        enqueue("send_email", f"user{n}@example.com", "Hi", "body", connection=redis, duration=0.01, fail_rate=0.3)
        enqueue("process_upload", f"/uploads/{n}.csv", connection=redis, duration=0.01, fail_rate=0.3)
        time.sleep(0.1)


def test_every_grafana_panel_query_returns_data(stack: dict[str, Any]) -> None:
    redis = stack["redis"]
    redis.sadd("rq:queues", "rq:queue:orphan")  # a queue with jobs and no worker, for that panel
    redis.rpush("rq:queue:orphan", "job-x")
    traffic(redis, 25)
    # the sidecar's own `redis` label reaches Prometheus as it is: prometheus.yml sets no target label that clashes
    assert query(stack["prometheus"], 'count({__name__=~"rqscope_.+", exported_redis!=""})') == []
    assert query(stack["prometheus"], 'count({__name__=~"rqscope_.+", redis!="default"})') == []
    empty = []
    for path in sorted((REPO / "grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$redis", "default").replace("$job", "rqscope")
                expr = expr.replace("$instance", ".*").replace("$queue", ".*")
                if not query(stack["prometheus"], expr):
                    empty.append(f"{path.name} / {panel['title']}: {expr}")
    assert empty == []


def test_every_shipped_rule_loads_and_a_backlog_reaches_the_receiver(stack: dict[str, Any]) -> None:
    rules = get_json(f"{stack['prometheus']}/api/v1/rules")["data"]["groups"][0]["rules"]
    shipped = yaml.safe_load((REPO / "prometheus/rqscope.rules.yml").read_text())["groups"][0]["rules"]
    assert [rule["name"] for rule in rules] == [rule["alert"] for rule in shipped]
    assert all(rule["health"] == "ok" for rule in rules)
    redis = stack["redis"]
    redis.sadd("rq:queues", "rq:queue:backlog")
    redis.rpush("rq:queue:backlog", *[f"job-{i}" for i in range(1001)])
    receiver: Receiver = stack["receiver"]

    def delivered() -> list[dict[str, Any]]:
        wanted = {"alertname": "RqscopeQueueBacklog", "queue": "backlog", "redis": "default"}
        alerts = [alert for body in receiver.bodies for alert in body["alerts"]]
        return [alert for alert in alerts if wanted.items() <= alert["labels"].items()]

    wait_for(delivered, timeout=120, interval=1)
    annotations = delivered()[0]["annotations"]  # the instance named in the summary, and the link opens its page
    assert annotations["summary"].startswith("[default] Queue backlog has ")
    assert annotations["dashboard_url"].endswith("/queues/backlog/queued?redis=default")
