"""Two RQ installations on one Redis Cluster, each on its own slot and node, watched by one sidecar.

`{rq}` and `{billing}` hash to slots on different nodes. Each installation has its own `rqscope worker`,
started with its RQ_KEY_PREFIX; one `rqscope serve` (RQ_KEY_PREFIX={rq}) watches both, the `{billing}`
one through the sidecar process it starts for that prefix. Then the `{billing}` slot moves to another
node while the sidecar is scraped: it follows the move, losing at most one scrape.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.crc import key_slot
from rqscope.monitor.embedded import free_port
from rqscope.tasks.rq_internals.keys import rq_reads_prefix

from tests import cluster as local_cluster
from tests.cluster import LocalCluster
from tests.helpers import REPO, rqscope_command, spawn, stop, wait_for

pytestmark = pytest.mark.skipif(not rq_reads_prefix(), reason="RQ reads RQ_KEY_PREFIX from 3.0 on")
redis_cluster = local_cluster.redis_cluster
PREFIXES = {"orders": "{rq}", "billing": "{billing}"}
JOBS = {"orders": 3, "billing": 4}

ENQUEUE = """
import json, sys
from rq import Queue
from rqscope.monitor.cluster import cluster_client
redis = cluster_client(sys.argv[1], sys.argv[2], socket_timeout=10, socket_connect_timeout=2)
queue = Queue("default", connection=redis)
print(json.dumps([queue.enqueue("tests.cluster.record_run", sys.argv[3]).id for _ in range(int(sys.argv[4]))]))
"""


def _env(cluster: LocalCluster, prefix: str, **extra: str) -> dict[str, str]:
    import os

    urls = ",".join(f"{name}={cluster.url()}#prefix={p}" for name, p in PREFIXES.items())
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RQ_KEY_PREFIX": prefix,
        "RQSCOPE_REDIS_URL": urls,
        "RQSCOPE_TASK_MODULES": "tests.cluster",
        "RQSCOPE_LOG_LEVEL": "WARNING",
        "RQSCOPE_REDIS_TIMEOUT": "2",
        "RQSCOPE_REDIS_CONNECT_TIMEOUT": "1",
        "RQSCOPE_SNAPSHOT_TTL": "0.001",
        "RQSCOPE_NO_AUTH": "true",
        **extra,
    }


def _scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
            body = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _finished(found: dict[Any, float], name: str) -> float:
    return found.get(("rqscope_queue_jobs", (("queue", "default"), ("redis", name), ("state", "finished"))), -1)


def _up(found: dict[Any, float], name: str) -> float:
    return found.get(("rqscope_redis_up", (("redis", name),)), -1)


@pytest.fixture
def sidecar(redis_cluster: LocalCluster, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    serve = spawn(rqscope_command("serve"), env=_env(redis_cluster, "{rq}", RQSCOPE_PORT=str(port)))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: (found := _scrape(base)) and _up(found, "billing") == 1 == _up(found, "orders"), 60)
        yield base
    finally:
        stop(serve)


def test_two_installations_on_two_nodes_one_worker_each_one_sidecar_for_both(
    redis_cluster: LocalCluster, sidecar: str, tmp_path: Path
) -> None:
    owners = {name: redis_cluster.owner(key_slot(prefix.encode())) for name, prefix in PREFIXES.items()}
    assert owners["orders"] != owners["billing"]
    for name, prefix in PREFIXES.items():
        record = tmp_path / f"{name}-runs"
        enqueue = [sys.executable, "-c", ENQUEUE, redis_cluster.url(), prefix, str(record), str(JOBS[name])]
        env = _env(redis_cluster, prefix)
        ids = json.loads(subprocess.run(enqueue, env=env, capture_output=True, check=True, timeout=60).stdout)
        worker = rqscope_command("worker", "--burst", "--redis", name, "default")
        done = subprocess.run(worker, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(record.read_text().split()[::2]) == sorted(ids)  # each job ran, once
    found = _scrape(sidecar)
    assert found is not None
    assert _finished(found, "orders") == JOBS["orders"] and _finished(found, "billing") == JOBS["billing"]
    with urllib.request.urlopen(sidecar + "/api/instances", timeout=30) as response:
        rows = {row["name"]: row for row in json.loads(response.read())["instances"]}
    assert rows["billing"]["kind"] == "cluster" and rows["billing"]["prefix"] == "{billing}"
    assert rows["orders"]["up"] and rows["billing"]["up"]


def test_the_other_prefix_follows_its_slot_to_another_node_losing_at_most_one_scrape(
    redis_cluster: LocalCluster, sidecar: str
) -> None:
    slot = key_slot(b"{billing}")
    source = redis_cluster.owner(slot)
    target = next(p for p in redis_cluster.ports if p not in (source, redis_cluster.owner(key_slot(b"{rq}"))))
    before = _scrape(sidecar)
    assert before is not None
    misses = 0
    redis_cluster.move_slot(slot, source, target)
    assert redis_cluster.owner(slot) == target
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _scrape(sidecar)
        assert found is not None and _up(found, "orders") == 1
        if _up(found, "billing") == 1:
            assert _finished(found, "billing") == _finished(before, "billing")  # the same state, read on its new node
            break
        misses += 1
        time.sleep(0.2)
    else:
        raise AssertionError("the sidecar did not follow the {billing} slot to its new node")
    assert misses <= 1
