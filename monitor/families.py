"""Pure shaping: Snapshot -> Prometheus metric families. No I/O here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from monitor.snapshot import JOB_STATES, WORKER_STATES, Snapshot
from tasks.metrics import task_families


def queue_families(snapshot: Snapshot) -> Iterable[Metric]:
    jobs = GaugeMetricFamily("rqscope_queue_jobs", "Jobs in each queue by state", labels=["queue", "state"])
    latency = GaugeMetricFamily(
        "rqscope_queue_latency_seconds", "Age of the oldest queued job (0 when empty)", labels=["queue"]
    )
    workers = GaugeMetricFamily(
        "rqscope_queue_workers", "Workers listening on each queue, by state", labels=["queue", "state"]
    )
    locked = GaugeMetricFamily(
        "rqscope_scheduler_lock_held", "1 when an RQ scheduler holds the queue's lock", labels=["queue"]
    )
    by_queue_state: dict[tuple[str, str], int] = defaultdict(int)
    for worker in snapshot.workers:
        for queue in worker.queues:
            by_queue_state[(queue, worker.state)] += 1
    for queue in snapshot.queues:
        for state in JOB_STATES:
            jobs.add_metric([queue.name, state], queue.counts[state])
        latency.add_metric([queue.name], queue.latency_seconds)
        locked.add_metric([queue.name], 1.0 if queue.scheduler_locked else 0.0)
        for state in WORKER_STATES:
            workers.add_metric([queue.name, state], by_queue_state.get((queue.name, state), 0))
    return [jobs, latency, workers, locked]


def worker_families(snapshot: Snapshot) -> Iterable[Metric]:
    by_state = GaugeMetricFamily("rqscope_workers", "RQ workers by state (dead: heartbeat expired)", labels=["state"])
    counts: dict[str, int] = defaultdict(int)
    for worker in snapshot.workers:
        counts[worker.state] += 1
    for state in WORKER_STATES:
        by_state.add_metric([state], counts[state])

    heartbeat = GaugeMetricFamily(
        "rqscope_worker_heartbeat_age_seconds", "Oldest heartbeat among live workers on the host", labels=["hostname"]
    )
    oldest: dict[str, float] = {}
    for worker in snapshot.live_workers:
        if worker.heartbeat_age is not None:
            oldest[worker.hostname] = max(oldest.get(worker.hostname, 0.0), worker.heartbeat_age)
    for host, age in sorted(oldest.items()):
        heartbeat.add_metric([host], age)

    rss = GaugeMetricFamily(
        "rqscope_worker_resident_memory_bytes", "Resident memory of rqscope workers on the host", labels=["hostname"]
    )
    cpu = CounterMetricFamily(
        "rqscope_worker_cpu_seconds", "CPU time of running rqscope workers on the host", labels=["hostname"]
    )
    memory: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    for sample in snapshot.processes:
        if sample.role == "worker":
            memory[sample.host] += sample.rss_bytes
            seconds[sample.host] += sample.cpu_seconds
    for host in sorted(memory):
        rss.add_metric([host], memory[host])
        cpu.add_metric([host], seconds[host])
    return [by_state, heartbeat, rss, cpu]


def pool_families(snapshot: Snapshot) -> Iterable[Metric]:
    connections = GaugeMetricFamily(
        "rqscope_redis_pool_connections",
        "Client-side Redis pool connections by process role and host",
        labels=["role", "hostname", "state"],
    )
    maximum = GaugeMetricFamily(
        "rqscope_redis_pool_max_connections", "Pool size limit by process role and host", labels=["role", "hostname"]
    )
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for sample in snapshot.processes:
        entry = totals[(sample.role, sample.host)]
        entry[0] += sample.pool_in_use
        entry[1] += sample.pool_idle
        entry[2] += sample.pool_max
    for (role, host), (in_use, idle, limit) in sorted(totals.items()):
        connections.add_metric([role, host, "in_use"], in_use)
        connections.add_metric([role, host, "idle"], idle)
        maximum.add_metric([role, host], limit)
    return [connections, maximum]


REDIS_GAUGES = (
    ("rqscope_redis_connected_clients", "connected_clients", "Clients connected to Redis"),
    ("rqscope_redis_blocked_clients", "blocked_clients", "Clients blocked on a Redis command"),
    ("rqscope_redis_max_clients", "maxclients", "Redis maxclients setting"),
    ("rqscope_redis_memory_used_bytes", "used_memory", "Memory used by Redis"),
    ("rqscope_redis_memory_max_bytes", "maxmemory", "Redis maxmemory setting (0 means no limit)"),
)


def redis_families(snapshot: Snapshot) -> Iterable[Metric]:
    up = GaugeMetricFamily("rqscope_redis_up", "1 when the last snapshot could read Redis, else 0")
    up.add_metric([], 1.0 if snapshot.redis.up else 0.0)
    families: list[Metric] = [up]
    if not snapshot.redis.up:
        return families
    for name, field, help_text in REDIS_GAUGES:
        family = GaugeMetricFamily(name, help_text)
        family.add_metric([], snapshot.redis.info.get(field, 0.0))
        families.append(family)
    rejected = CounterMetricFamily("rqscope_redis_rejected_connections", "Connections Redis refused (maxclients)")
    rejected.add_metric([], snapshot.redis.info.get("rejected_connections", 0.0))
    cron = GaugeMetricFamily("rqscope_cron_schedulers", "RQ cron schedulers registered")
    cron.add_metric([], snapshot.cron_schedulers)
    trips = GaugeMetricFamily("rqscope_snapshot_round_trips", "Redis round trips the last snapshot took")
    trips.add_metric([], snapshot.round_trips)
    return [*families, rejected, cron, trips]


def snapshot_families(snapshot: Snapshot) -> Iterable[Metric]:
    """Every family the exporter serves for one snapshot."""
    yield from redis_families(snapshot)
    if not snapshot.redis.up:
        return
    yield from queue_families(snapshot)
    yield from worker_families(snapshot)
    yield from pool_families(snapshot)
    yield from task_families(snapshot.tasks)
