"""Pure shaping: Snapshot -> Prometheus metric families. No I/O here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric
from rqscope.monitor.exposition import Rows
from rqscope.monitor.snapshot import JOB_STATES, WORKER_STATES, Snapshot
from rqscope.tasks.metrics import task_families

# per queue, only the states of workers that can serve it; dead and unknown are in rqscope_workers
SERVING_STATES = ("idle", "busy", "suspended")


def queue_families(snapshot: Snapshot) -> Iterable[Metric]:
    jobs = Rows("rqscope_queue_jobs", "Jobs in each queue by state", "gauge", ("queue", "state"))
    latency = Rows("rqscope_queue_latency_seconds", "Age of the oldest queued job (0 when empty)", "gauge", ("queue",))
    workers = Rows(
        "rqscope_queue_workers", "Live workers listening on each queue, by state", "gauge", ("queue", "state")
    )
    locked = Rows("rqscope_scheduler_lock_held", "1 when an RQ scheduler holds the queue's lock", "gauge", ("queue",))
    paused = Rows(
        "rqscope_queue_paused", "1 when the queue is paused (rqscope workers skip it), else 0", "gauge", ("queue",)
    )
    by_queue_state: dict[tuple[str, str], int] = defaultdict(int)
    for worker in snapshot.workers:
        for queue in worker.queues:
            by_queue_state[(queue, worker.state)] += 1
    for queue_state in snapshot.queues:
        name = queue_state.name
        counts = queue_state.counts
        for state in JOB_STATES:
            jobs.add((name, state), counts[state])
        latency.add((name,), queue_state.latency_seconds)
        locked.add((name,), 1 if queue_state.scheduler_locked else 0)
        for state in SERVING_STATES:
            workers.add((name, state), by_queue_state.get((name, state), 0))
        paused.add((name,), 1 if snapshot.is_paused(name) else 0)
    known = {queue_state.name for queue_state in snapshot.queues}
    for name in sorted(snapshot.paused - known):  # paused before its first job, or deleted since
        paused.add((name,), 1)
    return [jobs, latency, workers, locked, paused]


def worker_families(snapshot: Snapshot) -> Iterable[Metric]:
    by_state = Rows("rqscope_workers", "RQ workers by state (dead: heartbeat expired)", "gauge", ("state",))
    counts: dict[str, int] = defaultdict(int)
    for worker in snapshot.workers:
        counts[worker.state] += 1
    for state in WORKER_STATES:
        by_state.add((state,), counts[state])

    heartbeat = Rows(
        "rqscope_worker_heartbeat_age_seconds",
        "Oldest heartbeat among live workers on the host",
        "gauge",
        ("hostname",),
    )
    oldest: dict[str, float] = {}
    for worker in snapshot.live_workers:
        if worker.heartbeat_age is not None:
            oldest[worker.hostname] = max(oldest.get(worker.hostname, 0.0), worker.heartbeat_age)
    for host, age in sorted(oldest.items()):
        heartbeat.add((host,), age)

    rss = Rows(
        "rqscope_worker_resident_memory_bytes", "Resident memory of rqscope workers on the host", "gauge", ("hostname",)
    )
    cpu = Rows("rqscope_worker_cpu_seconds", "CPU time of rqscope workers on the host", "counter", ("hostname",))
    memory: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    for sample in snapshot.processes:
        if sample.role == "worker":
            memory[sample.host] += sample.rss_bytes
            seconds[sample.host] += sample.cpu_seconds
    for host in sorted(memory):
        rss.add((host,), memory[host])
        cpu.add((host,), seconds[host])
    return [by_state, heartbeat, rss, cpu]


def pool_families(snapshot: Snapshot) -> Iterable[Metric]:
    connections = Rows(
        "rqscope_redis_pool_connections",
        "Client-side Redis pool connections by process role and host",
        "gauge",
        ("role", "hostname", "state"),
    )
    maximum = Rows(
        "rqscope_redis_pool_max_connections", "Pool size limit by process role and host", "gauge", ("role", "hostname")
    )
    exhausted = Rows(
        "rqscope_redis_pool_exhausted",
        "Times a running process's Redis pool had no connection to give",
        "counter",
        ("role", "hostname"),
    )
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for sample in snapshot.processes:
        entry = totals[(sample.role, sample.host)]
        entry[0] += sample.pool_in_use
        entry[1] += sample.pool_idle
        entry[2] += sample.pool_max
        entry[3] += sample.pool_exhausted
    for (role, host), (in_use, idle, limit, errors) in sorted(totals.items()):
        connections.add((role, host, "in_use"), in_use)
        connections.add((role, host, "idle"), idle)
        maximum.add((role, host), limit)
        exhausted.add((role, host), errors)
    return [connections, maximum, exhausted]


def rate_limit_families(snapshot: Snapshot) -> Iterable[Metric]:
    jobs = Rows(
        "rqscope_rate_limit_jobs",
        "Jobs under each RQ concurrency limit: allowed (queued or running) and held back",
        "gauge",
        ("key", "state"),
    )
    concurrency = Rows("rqscope_rate_limit_concurrency", "Slots of each RQ concurrency limit", "gauge", ("key",))
    oldest = Rows(
        "rqscope_rate_limit_oldest_held_seconds",
        "How long the oldest job held back by each limit has waited (0 when none)",
        "gauge",
        ("key",),
    )
    for limit in snapshot.rate_limits:
        jobs.add((limit.key, "allowed"), limit.allowed)
        jobs.add((limit.key, "held"), limit.held)
        concurrency.add((limit.key,), limit.concurrency)
        oldest.add((limit.key,), limit.oldest_held_seconds)
    return [jobs, concurrency, oldest]


REDIS_FIGURES = (
    ("rqscope_redis_connected_clients", "connected_clients", "gauge", "Clients connected to Redis"),
    ("rqscope_redis_blocked_clients", "blocked_clients", "gauge", "Clients blocked on a Redis command"),
    ("rqscope_redis_max_clients", "maxclients", "gauge", "Redis maxclients setting"),
    ("rqscope_redis_memory_used_bytes", "used_memory", "gauge", "Memory used by Redis"),
    ("rqscope_redis_memory_max_bytes", "maxmemory", "gauge", "Redis maxmemory setting (0 means no limit)"),
    ("rqscope_redis_rejected_connections", "rejected_connections", "counter", "Connections Redis refused"),
)


def _single(name: str, documentation: str, typ: str, value: float) -> Rows:
    family = Rows(name, documentation, typ)
    family.add((), value)
    return family


def _up(value: float) -> Rows:
    return _single("rqscope_redis_up", "1 when the last snapshot could read Redis, else 0", "gauge", value)


def unreachable() -> list[Metric]:
    """All that is known of an instance whose read did not finish in time."""
    return [_up(0)]


def redis_families(snapshot: Snapshot) -> Iterable[Metric]:
    up = _up(snapshot.redis.up)
    if not snapshot.redis.up:
        return [up]
    info = snapshot.redis.info
    return [
        up,
        *(_single(name, text, typ, info.get(field, 0.0)) for name, field, typ, text in REDIS_FIGURES),
        _single(
            "rqscope_snapshot_round_trips", "Redis round trips the last snapshot took", "gauge", snapshot.round_trips
        ),  # fmt: skip
    ]


NOTIFICATION_RESULTS = ("sent", "retried", "dropped")


def notification_family(counts: Mapping[tuple[str, str], float]) -> Rows:
    """Alert delivery outcomes per receiver; every result of a known receiver is present, 0 if none yet."""
    family = Rows(
        "rqscope_alert_notifications",
        "Alert notification attempts by receiver and result (sent, retried, dropped)",
        "counter",
        ("receiver", "result"),
    )
    for receiver in sorted({receiver for receiver, _ in counts}):
        for result in NOTIFICATION_RESULTS:
            family.add((receiver, result), counts.get((receiver, result), 0.0))
    return family


def snapshot_families(snapshot: Snapshot) -> Iterable[Metric]:
    """Every family the exporter serves for one snapshot."""
    yield from redis_families(snapshot)
    if not snapshot.redis.up:
        return
    yield from queue_families(snapshot)
    yield from worker_families(snapshot)
    yield from pool_families(snapshot)
    yield from rate_limit_families(snapshot)
    yield from task_families(snapshot.tasks)
    if snapshot.notifications is not None:
        yield notification_family(snapshot.notifications)
