"""Alert rules: loading, every kind's evaluation on Snapshots, and the lifecycle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rqscope.monitor.alerts.evaluate import evaluate
from rqscope.monitor.alerts.rules import KINDS, Rule, load_rules, parse_duration
from rqscope.monitor.alerts.state import FIRING, PENDING, RESOLVED, advance
from rqscope.monitor.rates import Minute, Series
from rqscope.monitor.snapshot import QueueState, RateLimitState, RedisState, Snapshot, WorkerState
from rqscope.tasks.errors import SettingsError
from rqscope.tasks.procstats import ProcessSample


def queue(name: str = "default", queued: int = 0, latency: float = 0.0, workers: int = 1) -> QueueState:
    return QueueState(name, queued, dict.fromkeys(("started", "deferred", "scheduled", "finished", "failed",
                                                  "canceled"), 0), None, latency, False, workers)  # fmt: skip


def worker(dead: bool = False) -> WorkerState:
    return WorkerState("w", "h", 1, "dead" if dead else "idle", ("default",), None, 1.0, None, 0, 0, 0.0, 0.0, dead)


def snapshot(queues=(), workers=(), up=True, info=None, processes=()) -> Snapshot:  # type: ignore[no-untyped-def]
    redis = RedisState(up=up, info=info or {"maxclients": 100.0, "connected_clients": 10.0, "maxmemory": 0.0})
    return Snapshot(taken_at=0.0, redis=redis, queues=tuple(queues), workers=tuple(workers),
                    processes=tuple(processes))  # fmt: skip


def test_shipped_rules_load_and_cover_every_kind() -> None:
    rules = load_rules()
    assert {r.kind for r in rules} == set(KINDS)
    assert all(r.summary for r in rules)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  - name: A\n    kind: nope\n", ":3: kind: unknown kind 'nope'"),
        ("rules:\n  - name: A\n    kind: queue_depth\n    for: soon\n", ":4: for: 'soon' is not a duration"),
        ("rules:\n  - kind: queue_depth\n", ":2: name: is required"),
        ("rules:\n  - name: A\n    kind: queue_depth\n    colour: red\n", ":4: colour: unknown field"),
        ("rules:\n  - name: A\n    kind: queue_depth\n    severity: loud\n", ":4: severity: must be one of"),
        ("rules: [\n", "not valid YAML"),
        ("alerts: []\n", ":1: rules: the file must hold"),
        ("rules:\n  - name: A\n    kind: queue_depth\n  - name: A\n    kind: redis_down\n", "'A' is used by two"),
    ],
)
def test_bad_rule_files_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_rules(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_rules(tmp_path / "absent.yml")


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("250ms") == 0.25
    assert parse_duration(12) == 12
    for bad in ("-1s", "5 minutes", True, -3):
        with pytest.raises(ValueError):
            parse_duration(bad)


def rule(kind: str, threshold: float = 0.0, **kwargs) -> Rule:  # type: ignore[no-untyped-def]
    return Rule(name=kind, kind=kind, threshold=threshold, **kwargs)


def held_back(*waits: float) -> Snapshot:
    limits = tuple(RateLimitState(f"key-{i}", 2, 2, 3, wait) for i, wait in enumerate(waits))
    return dataclasses.replace(snapshot(), rate_limits=limits)


def series_for(queue_name: str, runs: int, failed: int) -> Series:
    minute = Minute(0, outcomes={"success": runs - failed, "failure": failed, "retried": 0, "timeout": 0, "killed": 0})
    return Series([0], [minute], {}, {queue_name: [minute]})


@pytest.mark.parametrize(
    ("the_rule", "snap", "series", "expected"),
    [
        (rule("queue_depth", 10), snapshot([queue(queued=11), queue("b", queued=10)]), None, [True, False]),
        (rule("queue_depth", 10, queues=("b*",)), snapshot([queue(queued=99), queue("b", queued=11)]), None, [True]),
        (rule("queue_latency", 60), snapshot([queue(latency=61)]), None, [True]),
        (rule("failed_jobs", 5), snapshot([queue()]), series_for("default", 10, 6), [True]),
        (rule("failure_ratio", 0.5), snapshot([queue()]), series_for("default", 10, 5), [False]),
        (rule("failure_ratio", 0.5), snapshot([queue()]), series_for("default", 10, 6), [True]),
        (rule("failure_ratio", 0.5), snapshot([queue()]), None, [False]),
        (rule("queue_without_workers"), snapshot([queue(queued=1, workers=0), queue("b", workers=0)]), None,
         [True, False]),
        (rule("workers_below", 2), snapshot(workers=[worker(), worker(dead=True)]), None, [True]),
        (rule("dead_workers", 0), snapshot(workers=[worker(dead=True)]), None, [True]),
        (rule("redis_clients", 0.8), snapshot(info={"maxclients": 100.0, "connected_clients": 81.0}), None, [True]),
        (rule("redis_rejected_connections"), snapshot(info={"rejected_connections": 3.0}), None, [True]),
        (rule("redis_memory", 0.9), snapshot(info={"maxmemory": 100.0, "used_memory": 95.0}), None, [True]),
        (rule("redis_memory", 0.9), snapshot(info={"maxmemory": 0.0, "used_memory": 95.0}), None, []),
        (rule("redis_down"), snapshot(up=False), None, [True]),
        (rule("rate_limit_held", 600), held_back(601, 599), None, [True, False]),
        (rule("queue_depth", 0), snapshot([queue(queued=5)], up=False), None, []),
    ],
)  # fmt: skip
def test_every_kind_evaluates(the_rule: Rule, snap: Snapshot, series: Series | None, expected: list[bool]) -> None:
    assert [o.active for o in evaluate((the_rule,), snap, series, now=0.0)] == expected


def test_pool_utilisation_per_role() -> None:
    sample = ProcessSample("worker", "h", 1, "w", 1, 0.0, 9, 1, 10, 0.0)
    observations = evaluate((rule("pool_utilisation", 0.8),), snapshot(processes=[sample]), None, now=0.0)
    assert [(o.labels, o.value, o.active) for o in observations] == [((("role", "worker"),), 0.9, True)]


def test_lifecycle_pending_firing_repeat_resolved() -> None:
    the_rule = rule("queue_depth", 10, for_seconds=60, summary="{queue} has {value:.0f}")
    busy, idle = snapshot([queue(queued=50)]), snapshot([queue(queued=0)])
    names = {the_rule.name}

    def step(states, snap, now):  # type: ignore[no-untyped-def]
        return advance(states, evaluate((the_rule,), snap, None, now), names, now, repeat_seconds=3600)

    states, notes = step({}, busy, 0)
    assert [a.state for a in states.values()] == [PENDING] and notes == []
    states, notes = step(states, busy, 59)
    assert notes == []
    states, notes = step(states, busy, 60)
    assert [n.status for n in notes] == [FIRING] and notes[0].alert.summary == "default has 50"
    states, notes = step(states, busy, 120)
    assert notes == []  # no re-notification before the repeat interval
    states, notes = step(states, busy, 60 + 3600)
    assert [n.status for n in notes] == [FIRING]
    states, notes = step(states, idle, 4000)
    assert [n.status for n in notes] == [RESOLVED] and list(states.values())[0].state == RESOLVED
    states, notes = step(states, idle, 4015)
    assert notes == []


def test_condition_that_clears_while_pending_never_notifies() -> None:
    the_rule = rule("queue_depth", 10, for_seconds=60)
    states, _ = advance({}, evaluate((the_rule,), snapshot([queue(queued=50)]), None, 0), {the_rule.name}, 0, 3600)
    states, notes = advance(states, evaluate((the_rule,), snapshot([queue()]), None, 30), {the_rule.name}, 30, 3600)
    assert states == {} and notes == []


def test_rules_not_evaluated_keep_their_state_and_vanished_subjects_resolve() -> None:
    the_rule = rule("queue_depth", 10)
    states, notes = advance({}, evaluate((the_rule,), snapshot([queue(queued=50)]), None, 0), {the_rule.name}, 0, 3600)
    assert [n.status for n in notes] == [FIRING]
    kept, notes = advance(states, [], set(), 10, 3600)  # Redis down: this rule was not evaluated
    assert kept == states and notes == []
    gone, notes = advance(states, [], {the_rule.name}, 20, 3600)  # the queue no longer exists
    assert [n.status for n in notes] == [RESOLVED]


def test_pool_exhausted_counts_recent_errors() -> None:
    sample = ProcessSample("web", "h", 1, "", 1, 0.0, 1, 0, 1, 0.0, pool_exhausted=7, pool_exhausted_recent=2)
    [obs] = evaluate((rule("pool_exhausted", 0),), snapshot(processes=[sample]), None, now=0.0)
    assert obs.value == 2 and obs.active
