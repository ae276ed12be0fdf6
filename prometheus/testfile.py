"""promtool's test file: one sample step for every rule, the series in expanding notation, a case per rule."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.names import metric_label

from prometheus.annotate import DASHBOARD_URL, annotation_parts, render
from prometheus.cases import SCENARIOS, Timeline
from prometheus.promql import ALERT_PREFIX, duration, number

# one sidecar watching two Redis instances that hold queues of the same names: only `redis` tells them apart
HOT = {"job": "rqscope", "instance": "web:9190", "redis": "east"}
COLD = {"job": "rqscope", "instance": "web:9190", "redis": "west"}


def step_ms(rules: tuple[Rule, ...]) -> int:
    """One sample and evaluation step dividing every `for:` and window (at most 1m, windows of 2+ steps)."""
    spans = [round(r.for_seconds * 1000) for r in rules]
    for rule in rules:
        if SCENARIOS[rule.kind][1]:
            window = round(rule.window_seconds * 1000)
            spans += [window, window // 2]
    return math.gcd(60_000, *spans)


def encode(values: list[float]) -> str:
    """promtool's expanding notation: each run of a constant step as `a+bxn` (a, a+b, ..., a+n*b)."""
    out, i = [], 0
    while i < len(values):
        j = i
        diff = values[i + 1] - values[i] if i + 1 < len(values) else 0.0
        while j + 1 < len(values) and values[j + 1] - values[j] == diff:
            j += 1
        if diff and j - i < 2:  # two values with a step read better as they are
            j = i
        first = number(values[i])
        if j == i:
            out.append(first)
        elif diff == 0:
            out.append(f"{first}x{j - i}")
        else:
            out.append(f"{first}{'+' if diff > 0 else '-'}{number(abs(diff))}x{j - i}")
        i = j + 1
    return " ".join(out)


# the label of a queue named with the byte ff, a space and a backslash (names.metric_label): promtool checks that
# the dashboard link leads to that name's page
EXAMPLE_QUEUE = metric_label("emails\udcff a\\b")


def example_queue(rule: Rule) -> str:
    if not rule.queues:
        return EXAMPLE_QUEUE
    name = re.sub(r"\[!?(.).*?\]", r"\1", rule.queues[0]).replace("*", "").replace("?", "x") or "q"
    if not rule.applies_to(name):
        raise ValueError(f"rule {rule.name}: cannot derive a queue name matching {rule.queues[0]!r}")
    return name


def input_series(rule: Rule, tl: Timeline, samples: int, queue: str | None = None) -> list[dict[str, str]]:
    """The hot series on Redis `east`, the cold ones on Redis `west`, and a hot one in a queue the rule leaves out."""
    queue = (example_queue(rule) if queue is None else queue) if rule.per_queue else None
    targets = [(HOT, queue, True), (COLD, queue, False)]
    if rule.queues and not rule.applies_to("unmatched"):
        targets.append((HOT, "unmatched", True))
    out = []
    for target, name, hot in targets:
        for metric, labels, values in SCENARIOS[rule.kind][0](rule, tl, hot).series:
            labels = {**target, **({"queue": name} if name else {}), **labels}
            body = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in labels.items())
            out.append({"series": f"{metric}{{{body}}}", "values": encode([values(i) for i in range(samples)])})
    return out


def promtool_case(
    rule: Rule, step: int, dashboard_url: str = DASHBOARD_URL, queue: str | None = None
) -> dict[str, Any]:
    """Quiet before the condition and while pending, firing once `for:` has elapsed, resolved after; a per-queue
    rule's queue label is `queue`, or one its rule applies to."""
    queue = example_queue(rule) if queue is None else queue
    # the hot series fire, the cold ones never do; windowed kinds also fire while the window holds the increase
    build, windowed = SCENARIOS[rule.kind]
    tl = Timeline(hold=round(rule.for_seconds * 1000) // step, window=round(rule.window_seconds * 1000) // step)
    clear = tl.fire + (tl.window if windowed else 1)
    fired = build(rule, tl, True)
    labels = {**HOT, **({"queue": queue} if rule.per_queue else {}), **fired.keep}
    # Prometheus has no empty label: a label set to "" is no label
    alert_labels = {k: v for k, v in {**labels, "severity": rule.severity, **dict(rule.labels)}.items() if v}
    parts = annotation_parts(rule, dashboard_url)

    def check(index: int, value: float | None = None) -> dict[str, Any]:
        alerts = (
            []
            if value is None
            else [
                {
                    "exp_labels": dict(alert_labels),
                    "exp_annotations": {key: render(p, labels, value) for key, p in parts.items()},
                }
            ]
        )
        return {"eval_time": duration(index * step / 1000), "alertname": ALERT_PREFIX + rule.name, "exp_alerts": alerts}

    checks = [check(tl.start - 1)] + ([check(tl.fire - 1)] if tl.hold else []) + [check(tl.fire, fired.value)]
    if windowed and fired.late is not None and clear - 2 > tl.fire:
        checks.append(check(clear - 2, fired.late))
    checks.append(check(clear))
    series = input_series(rule, tl, clear + 1, queue)
    return {"name": rule.name, "interval": duration(step / 1000), "input_series": series, "alert_rule_test": checks}
