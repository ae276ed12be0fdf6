"""Alert rules: what each kind measures, and loading them from YAML with errors that name file, line and field."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rqscope.tasks.errors import SettingsError

DEFAULT_RULES = Path(__file__).with_name("default_rules.yml")

# kind -> (what the threshold means, whether the rule is per queue)
KINDS: dict[str, tuple[str, bool]] = {
    "queue_depth": ("queued jobs above N", True),
    "queue_latency": ("oldest queued job older than S seconds", True),
    "failed_jobs": ("runs failed in the window above N", True),
    "failure_ratio": ("share of runs failed in the window above R (0..1)", True),
    "queue_without_workers": ("jobs wait and no live worker listens (threshold unused)", True),
    "workers_below": ("fewer than N live workers", False),
    "dead_workers": ("more than N workers with an expired heartbeat", False),
    "pool_utilisation": ("a process role's Redis pool use above R (0..1)", False),
    "pool_exhausted": ("Redis pools found no free connection more than N times since the last publication", False),
    "redis_clients": ("Redis connected clients above R of maxclients", False),
    "redis_rejected_connections": ("Redis rejected connections since start above N", False),
    "redis_memory": ("Redis used memory above R of maxmemory", False),
    "redis_down": ("Redis unreachable (threshold unused)", False),
    "rate_limit_held": ("a job held back by an rq concurrency limit has waited more than S seconds", False),
    "cron_overdue": ("a cron job more than S seconds past its due run (or the run its dead scheduler missed)", False),
}
SEVERITIES = ("critical", "warning", "info")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
RULE_FIELDS = {"name", "kind", "threshold", "for", "window", "severity", "labels", "summary", "queues"}


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    threshold: float = 0.0
    for_seconds: float = 0.0
    window_seconds: float = 300.0
    severity: str = "warning"
    labels: tuple[tuple[str, str], ...] = ()
    summary: str = ""
    queues: tuple[str, ...] = ()  # globs; empty means every queue

    @property
    def per_queue(self) -> bool:
        return KINDS[self.kind][1]

    def applies_to(self, queue: str) -> bool:
        return not self.queues or any(fnmatch.fnmatchcase(queue, pattern) for pattern in self.queues)


def parse_duration(text: Any) -> float:
    """'30s', '5m', '1h', '250ms' or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like 30s, 5m or 1h")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    match = DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h")
    return float(match.group(1)) * UNITS[match.group(2)]


def _problem(path: str, node: yaml.Node, field_name: str, message: str) -> SettingsError:
    return SettingsError(f"{path}:{node.start_mark.line + 1}: {field_name}: {message}")


def _rule(path: str, node: yaml.Node, data: Any) -> Rule:
    if not isinstance(data, dict):
        raise _problem(path, node, "rule", "each rule must be a mapping")
    fields = {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}

    def where(name: str) -> yaml.Node:
        return fields.get(name, node)  # type: ignore[no-any-return]

    unknown = sorted(set(data) - RULE_FIELDS)
    if unknown:
        known = ", ".join(sorted(RULE_FIELDS))
        raise _problem(path, where(unknown[0]), unknown[0], f"unknown field; rules have {known}")
    for required in ("name", "kind"):
        if not data.get(required):
            raise _problem(path, node, required, "is required")
    if data["kind"] not in KINDS:
        raise _problem(path, where("kind"), "kind", f"unknown kind {data['kind']!r}; kinds: {', '.join(KINDS)}")
    try:
        threshold = float(data.get("threshold", 0))
    except (TypeError, ValueError):
        raise _problem(path, where("threshold"), "threshold", "must be a number") from None
    durations = {}
    for key, default in (("for", 0), ("window", 300)):
        try:
            durations[key] = parse_duration(data.get(key, default))
        except ValueError as exc:
            raise _problem(path, where(key), key, str(exc)) from None
    severity = data.get("severity", "warning")
    if severity not in SEVERITIES:
        raise _problem(path, where("severity"), "severity", f"must be one of {', '.join(SEVERITIES)}")
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise _problem(path, where("labels"), "labels", "must map names to strings")
    queues = data.get("queues") or []
    queues = [queues] if isinstance(queues, str) else queues
    if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
        raise _problem(path, where("queues"), "queues", "must be a glob or a list of globs")
    return Rule(
        name=str(data["name"]),
        kind=data["kind"],
        threshold=threshold,
        for_seconds=durations["for"],
        window_seconds=durations["window"],
        severity=severity,
        labels=tuple(sorted(labels.items())),
        summary=str(data.get("summary", "")),
        queues=tuple(queues),
    )


def load_rules(path: str | Path = DEFAULT_RULES) -> tuple[Rule, ...]:
    """Rules from a YAML file with a top-level `rules:` list; a bad file fails with file, line and field."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read the rules file: {exc.strerror}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"{name}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or root is None:
        raise SettingsError(f"{name}:1: rules: the file must hold a mapping with a `rules:` list")
    rules_node = next(v for k, v in root.value if k.value == "rules")
    rules = tuple(_rule(name, node, item) for node, item in zip(rules_node.value, data["rules"], strict=True))
    names = [r.name for r in rules]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SettingsError(f"{name}: name: {duplicate!r} is used by two rules")
    return rules
