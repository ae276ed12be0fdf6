"""Build the alert engine from settings and run it on APScheduler inside each sidecar process."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from apscheduler.schedulers.background import BackgroundScheduler
from redis import Redis, RedisError
from rqscope.monitor.alerts.engine import AlertEngine
from rqscope.monitor.alerts.notifiers import Email, PagerDuty, Slack, Webhook, digest
from rqscope.monitor.alerts.rules import DEFAULT_RULES, load_rules
from rqscope.monitor.alerts.sending import Notifier
from rqscope.monitor.cron import CronState
from rqscope.monitor.history import STEP_SECONDS, MinuteRecorder
from rqscope.monitor.settings import Settings
from rqscope.monitor.snapshot import Snapshot

log = logging.getLogger(__name__)
DELIVERY_INTERVAL = 5.0


def notifiers_from(settings: Settings) -> list[Notifier]:
    """One notifier per configured receiver, each limited to its severities (empty: all)."""
    notifiers: list[Notifier] = [Webhook(url, settings.webhook_severities) for url in settings.alert_webhook_urls]
    notifiers += [Slack(url, settings.slack_severities) for url in settings.alert_slack_urls]
    if settings.pagerduty_routing_key:
        notifiers.append(
            PagerDuty(settings.pagerduty_routing_key, settings.pagerduty_url, settings.pagerduty_severities)
        )
    if settings.smtp_host and settings.smtp_from:
        notifiers.append(
            Email(
                settings.smtp_host,
                settings.smtp_port,
                settings.smtp_from,
                settings.smtp_to,
                starttls=settings.smtp_starttls,
                severities=settings.smtp_severities,
            )
        )
    return distinct_names(notifiers)


def distinct_names(notifiers: list[Notifier]) -> list[Notifier]:
    """Two receivers on one host (say two webhook paths) get a digest of their whole target in their name."""
    taken = Counter(n.name for n in notifiers)
    return [
        replace(n, name=f"{n.name}-{digest(repr(n))}") if taken[n.name] > 1 else n  # type: ignore[type-var]
        for n in notifiers
    ]


def build_engine(
    settings: Settings,
    redis: Redis,
    snapshot: Callable[[], Snapshot],
    cron: Callable[[], CronState] | None = None,
    instance: str = "default",
) -> AlertEngine:
    """The engine for these settings; a bad rules file fails here, at start."""
    rules = load_rules(settings.alert_rules or DEFAULT_RULES)
    return AlertEngine(
        redis,
        rules,
        snapshot,
        notifiers_from(settings),
        interval=settings.alert_interval,
        repeat_seconds=settings.alert_repeat,
        base_url=settings.dashboard_url,
        cron=cron,
        instance=instance,
    )


def _guarded(step: Callable[[], object], name: str) -> Callable[[], None]:
    def run() -> None:
        try:
            step()
        except RedisError as exc:  # the next run tries again; evaluation never stops over one failure
            log.warning("alert %s skipped: %s", name, exc)
        except Exception:  # a bug: logged with its traceback, and the next run goes on
            log.exception("alert %s failed", name)

    return run


def start(engine: AlertEngine) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(daemon=True)
    scheduler.add_job(
        _guarded(engine.evaluate_once, "evaluation"),
        "interval",
        seconds=engine.interval,
        max_instances=1,
        coalesce=True,
        id="evaluate",
    )
    scheduler.add_job(
        _guarded(engine.deliver, "delivery"),
        "interval",
        seconds=min(DELIVERY_INTERVAL, engine.interval),
        max_instances=1,
        coalesce=True,
        id="deliver",
    )
    recorder = MinuteRecorder(engine.redis, engine.lease, engine.snapshot, engine.clock)
    scheduler.add_job(
        _guarded(recorder.step, "history"),  # queue points and the hourly rollup fold, by the leader only
        "interval",
        seconds=min(STEP_SECONDS, engine.interval),
        max_instances=1,
        coalesce=True,
        id="history",
    )
    scheduler.start()
    return scheduler
