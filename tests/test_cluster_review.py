"""The cluster client under a hung slot owner: a read fails within the socket timeout, as on a plain Redis."""

from __future__ import annotations

import signal
import time

from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry
from rqscope.monitor.cluster import cluster_client

from tests import cluster as local_cluster
from tests.cluster import LocalCluster

PREFIX = "{hung}"
SLOT = key_slot(PREFIX.encode())
TIMEOUT = 1.0
redis_cluster = local_cluster.redis_cluster


def test_a_hung_owner_costs_each_read_one_timeout_not_two(redis_cluster: LocalCluster) -> None:
    owner = redis_cluster.owner(SLOT)
    seed = next(p for p in redis_cluster.ports if p != owner)
    client = cluster_client(
        redis_cluster.url(seed),
        PREFIX,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )
    client.set(f"{PREFIX}:k", 1)
    process = redis_cluster.processes[redis_cluster.ports.index(owner)]
    process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing: a paused or partitioned node
    took = []
    try:
        for _ in range(2):  # under the cluster node timeout (5 s), so the cluster never marks it failed
            started = time.monotonic()
            try:
                client.get(f"{PREFIX}:k")
            except (ConnectionError, TimeoutError):
                pass
            took.append(time.monotonic() - started)
    finally:
        process.send_signal(signal.SIGCONT)
    # every read after the first also waits for CLUSTER SLOTS from the hung owner before timing out on it
    assert max(took) < TIMEOUT * 1.5, [round(t, 2) for t in took]
    assert client.get(f"{PREFIX}:k") == b"1"  # and it comes back with the node
