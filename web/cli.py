"""The `rqscope` command: serve, worker, info, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from rqscope.monitor.embedded import with_default_redis
from rqscope.monitor.instances import InstanceConfig, by_prefix
from rqscope.monitor.settings import DEFAULT_QUEUES, Settings, env_name, from_env
from rqscope.tasks.errors import RqscopeError
from rqscope.tasks.rq_internals.keys import rq_key_prefix

# (flag, settings field, help); every flag has the RQSCOPE_* variable of the same name
CONNECTION_FLAGS = (
    ("--redis-url", "redis_url", "redis://, rediss:// or unix:// URL (`info` defaults to a running demo's Redis)"),
    ("--sentinel-hosts", "sentinel_hosts", "comma-separated host:port list of Redis Sentinels"),
    ("--sentinel-master", "sentinel_master", "name of the Sentinel-monitored master"),
    ("--redis-connect-timeout", "redis_connect_timeout", "seconds to wait for a Redis connection"),
    ("--redis-timeout", "redis_timeout", "seconds to wait for a Redis reply"),
    ("--log-level", "log_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ("--task-modules", "task_modules", "comma-separated modules that register @task functions"),
)
SERVE_FLAGS = (
    ("--host", "host", "address to bind (default 127.0.0.1)"),
    ("--port", "port", "port to bind (default 9190)"),
    ("--web-workers", "web_workers", "gunicorn worker processes"),
    ("--web-threads", "web_threads", "threads per gunicorn worker"),
    ("--snapshot-ttl", "snapshot_ttl", "seconds a Redis snapshot is reused"),
    ("--max-body-bytes", "max_body_bytes", "largest accepted request body"),
    ("--max-batch", "max_batch", "most jobs one POST /api/tasks/batch may enqueue (default 1000)"),
    ("--max-batch-bytes", "max_batch_bytes", "largest accepted batch body (default 4 MiB)"),
    ("--max-delay", "max_delay", "longest 'in' or 'at' ahead a job may be scheduled, like 30d (default)"),
    ("--alert-rules", "alert_rules", "YAML file of alert rules (default: the shipped rules)"),
    ("--alert-interval", "alert_interval", "seconds between alert evaluations"),
    ("--public-url", "public_url", "the dashboard's URL as on-call engineers reach it, for alert links"),
    ("--allowed-hosts", "allowed_hosts", "comma-separated Host names accepted besides localhost and the bound address"),
    ("--trusted-proxies", "trusted_proxies", "reverse proxies in front whose X-Forwarded-* headers are trusted (0-5)"),
)


def _add_flags(parser: argparse.ArgumentParser, flags: Sequence[tuple[str, str, str]]) -> None:
    for flag, field, help_text in flags:
        parser.add_argument(flag, dest=field, default=None, help=f"{help_text} [{env_name(field)}]")


def merged_env(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """The environment, with each flag given on the command line in place of its variable."""
    merged = dict(env)
    for field in vars(Settings()):
        value = getattr(args, field, None)
        if value is True:
            merged[env_name(field)] = "true"
        elif value is not None and value is not False:
            merged[env_name(field)] = str(value)
    return merged


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Settings from the environment, with any flag given on the command line taking precedence."""
    return from_env(merged_env(args, env))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rqscope", description="Observability sidecar and dashboard for RQ.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the dashboard, JSON API, /metrics and alert evaluator")
    _add_flags(serve, CONNECTION_FLAGS + SERVE_FLAGS)
    serve.add_argument(
        "--no-auth",
        action="store_true",
        default=None,
        help="no credentials: anonymous loopback callers only; refused off loopback or with credentials "
        "[RQSCOPE_NO_AUTH]",
    )
    serve.add_argument(
        "--process-per-instance",
        action="store_true",
        default=None,
        help="serve each Redis instance after the first from a process of its own [RQSCOPE_PROCESS_PER_INSTANCE]",
    )
    serve.set_defaults(run=run_serve)

    worker = commands.add_parser("worker", help="run an instrumented RQ worker")
    worker.add_argument(
        "queues", nargs="*", metavar="QUEUE", help=f"queues in priority order (default: {' '.join(DEFAULT_QUEUES)})"
    )
    _add_flags(worker, CONNECTION_FLAGS)
    worker.add_argument("--with-scheduler", action="store_true", help="also run RQ's scheduler")
    worker.add_argument("--burst", action="store_true", help="quit once the queues are empty")
    worker.add_argument("--name", default=None, help="worker name (default: random)")
    worker.add_argument(
        "--redis",
        dest="instance",
        default=None,
        metavar="NAME",
        help=f"the instance of {env_name('redis_url')} to work on (needed when it names several)",
    )
    worker.add_argument(
        "--publish-interval",
        dest="publish_interval",
        default=None,
        help=f"seconds between process-stat publications [{env_name('publish_interval')}]",
    )
    worker.set_defaults(run=run_worker)

    info = commands.add_parser("info", help="print queues, workers and Redis health, like `rq info`")
    _add_flags(info, CONNECTION_FLAGS)
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.add_argument("--interval", type=float, default=None, help="repeat every N seconds until Ctrl-C")
    info.add_argument("--count", type=int, default=None, help="with --interval: stop after N reports")
    info.set_defaults(run=run_info)

    demo = commands.add_parser("demo", help="run everything on an embedded Redis, with example traffic")
    demo.add_argument("--port", type=int, default=None, help="sidecar port (default 9190, or a free one)")
    demo.add_argument("--workers", type=int, default=2, help="instrumented workers to start (1-8)")
    demo.add_argument("--rate", type=float, default=5.0, help="example jobs enqueued per second (0-200)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.set_defaults(run=run_demo)
    return parser


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level_number, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from rqscope.monitor.alerts.rules import DEFAULT_RULES, load_rules
    from rqscope.web.hosts import exposure_warnings
    from rqscope.web.serve import serve

    load_rules(settings.alert_rules or DEFAULT_RULES)  # a bad rules file stops here, with file, line and field
    for warning in exposure_warnings(settings):
        logging.getLogger("rqscope.serve").warning("%s", warning)

    return serve(settings, merged_env(args, os.environ))


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from rqscope.monitor.redis_client import make_client
    from rqscope.tasks.registry import import_task_modules
    from rqscope.tasks.worker import InstrumentedWorker

    if args.name is not None and not (0 < len(args.name) <= 200 and args.name.isprintable()):
        raise RqscopeError("--name must be 1 to 200 printable characters")
    import_task_modules(settings.task_modules)
    # no client name: every forked horse opens fresh connections, and naming costs each a round trip
    # no client-side retries: a transaction resent after a lost reply would record a job's outcome twice
    # (a failure's Retry pushed twice); the worker waits an outage out at its own steps instead
    client = make_client(settings, _worker_instance(settings, args.instance), client_name=None, retries=0)
    queues = args.queues or list(DEFAULT_QUEUES)
    worker = InstrumentedWorker(queues, connection=client, name=args.name, publish_interval=settings.publish_interval)
    worker.work(burst=args.burst, with_scheduler=args.with_scheduler, logging_level=settings.log_level)
    return 0


def _worker_instance(settings: Settings, name: str | None) -> InstanceConfig | None:
    """The instance a worker serves: the one named by --redis, or the only one configured."""
    names = [instance.name for instance in settings.instances]
    if name is None:
        if len(names) > 1:
            raise RqscopeError(
                f"{env_name('redis_url')} names {len(names)} instances ({', '.join(names)}): pick one with --redis NAME"
            )
        return None
    if name not in names:
        raise RqscopeError(f"--redis {name[:64]!r} is not an instance of {env_name('redis_url')} ({', '.join(names)})")
    chosen = settings.instances[names.index(name)]
    if chosen.prefix != rq_key_prefix():  # RQ writes under the prefix it read at import: it would use the wrong keys
        raise RqscopeError(
            f"--redis {name}: the instance has prefix {chosen.prefix!r} but this process's RQ_KEY_PREFIX is "
            f"{rq_key_prefix()!r}; start the worker with RQ_KEY_PREFIX={chosen.prefix}"
        )
    return chosen


def run_info(args: argparse.Namespace, settings: Settings) -> int:
    import json
    import time

    from rqscope.monitor.fanout import Fanout
    from rqscope.monitor.reader import fetch_snapshot, unreachable_snapshot
    from rqscope.monitor.redis_client import make_client
    from rqscope.monitor.report import render_text, snapshot_dict

    if args.interval is not None and not 0.1 <= args.interval <= 3600:
        raise RqscopeError("--interval must be between 0.1 and 3600 seconds")
    if args.count is not None and args.count < 1:
        raise RqscopeError("--count must be at least 1")
    settings = with_default_redis(settings)
    local, groups = by_prefix(env_name("redis_url"), settings.instances, rq_key_prefix(), first_here=False)
    clients = {i.name: make_client(settings, i, client_name="rqscope-info") for i in local}
    if not settings.instances:  # none configured: this one says so
        clients = {"default": make_client(settings, client_name="rqscope-info")}
    fanout = Fanout(settings.redis_connect_timeout + settings.redis_timeout + 0.5)
    several = len(settings.instances) > 1 or bool(settings.front_instances)  # a front's: each headed by name
    environ = merged_env(args, os.environ)
    reports = 0
    while True:
        # each other prefix's process is started at once, and runs while this one reads its own instances
        with ThreadPoolExecutor(max_workers=max(1, len(groups)), thread_name_prefix="rqscope-info") as pool:
            asked = [pool.submit(_info_elsewhere, args, environ, settings, members) for members in groups.values()]
            read = fanout.each(clients, fetch_snapshot) if clients else {}
            elsewhere = [future.result() for future in asked]
        snapshots = {name: snapshot or unreachable_snapshot() for name, snapshot in read.items()}
        if args.json:
            shown: dict[str, object] = {name: snapshot_dict(s) for name, s in snapshots.items()}
            for output, _ in elsewhere:
                shown.update(json.loads(output) if output.strip() else {})
            print(json.dumps(shown if several else shown.popitem()[1]), flush=True)
        else:
            if args.interval is not None and sys.stdout.isatty():
                print("\033[H\033[2J", end="")
            for name, snapshot in snapshots.items():
                print(f"== {name} ==\n" if several else "", render_text(snapshot), sep="", end="", flush=True)
            for output, _ in elsewhere:
                print(output, end="", flush=True)
        reports += 1
        if args.interval is None or (args.count is not None and reports >= args.count):
            fine = all(s.redis.up for s in snapshots.values()) and all(ok for _, ok in elsewhere)
            return 0 if fine else 1
        time.sleep(args.interval)


def _info_elsewhere(
    args: argparse.Namespace, environ: Mapping[str, str], settings: Settings, members: tuple[InstanceConfig, ...]
) -> tuple[str, bool]:
    """`rqscope info` of instances under another RQ prefix, from a process started with that prefix."""
    import subprocess

    from rqscope.web.children import cli_command, prefix_environ

    env = prefix_environ(environ, members)
    env[env_name("front_instances")] = ",".join(i.name for i in settings.instances)  # each headed by its name
    command = cli_command("info", *(["--json"] if args.json else []))
    limit = 3 * (settings.redis_connect_timeout + settings.redis_timeout) + 30  # its start-up, then its reads
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return _unread(args, members, "no answer in time"), False
    if done.returncode not in (0, 1) or not done.stdout.strip():
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "it failed"
        return _unread(args, members, why.removeprefix("rqscope: error: ")), False
    return done.stdout, done.returncode == 0


def _unread(args: argparse.Namespace, members: tuple[InstanceConfig, ...], why: object) -> str:
    import json

    if args.json:
        return json.dumps({m.name: {"redis": {"up": False, "error": str(why)}} for m in members})
    return "".join(f"== {m.name} ==\nRedis: unreadable ({why})\n" for m in members)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from rqscope.web.demo import Demo

    if not 1 <= args.workers <= 8:
        raise RqscopeError("--workers must be between 1 and 8")
    if not 0 <= args.rate <= 200:
        raise RqscopeError("--rate must be between 0 and 200 jobs per second")
    if args.duration is not None and not 0 < args.duration <= 7 * 24 * 3600:
        raise RqscopeError("--duration must be a positive number of seconds")
    if args.port is not None and not 0 < args.port < 65536:
        raise RqscopeError("--port must be between 1 and 65535")
    return Demo(workers=args.workers, rate=args.rate, port=args.port).run(args.duration)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, os.environ if env is None else env)
        configure_logging(settings)
        return int(args.run(args, settings))
    except RqscopeError as exc:
        print(f"rqscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
