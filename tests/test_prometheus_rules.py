"""The shipped Prometheus files: generated from rqscope's rules, equal to them, valid, and their promtool tests pass."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from rqscope.monitor.alerts.evaluate import Observation
from rqscope.monitor.alerts.notifiers import dashboard_link
from rqscope.monitor.alerts.rules import KINDS, Rule, load_rules
from rqscope.monitor.alerts.state import Alert, Notification, _summary
from rqscope.monitor.names import decode_segment, metric_label

from prometheus import annotate, cases, generate, promql, testfile
from tests.helpers import REPO

PROMETHEUS = REPO / "prometheus"
WINDOWED = {"failed_jobs", "failure_ratio"}  # the kinds whose rqscope rules count over `window`


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed; .ci/run installs Debian's prometheus package")
    return subprocess.run([binary, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_rules_file_is_valid() -> None:
    result = promtool("check", "rules", "prometheus/rqscope.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "prometheus/rqscope.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((REPO / "prometheus.yml").read_text())
    assert config["rule_files"] == ["prometheus/rqscope.rules.yml"]
    # every series carries the sidecar's own `redis`: a target label of that name would rename it to exported_redis
    for scrape in config["scrape_configs"]:
        assert all("redis" not in static.get("labels", {}) for static in scrape["static_configs"]), scrape
        relabels = scrape.get("relabel_configs", []) + scrape.get("metric_relabel_configs", [])
        assert all(relabel.get("target_label") != "redis" for relabel in relabels), scrape


def prometheus_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rqscope.rules.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def prom_seconds(text: str) -> float:
    """A Prometheus duration (5m, 1m30s, 250ms) in seconds, read independently of the generator."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert text and "".join(n + u for n, u in parts) == text, f"{text!r} is not a Prometheus duration"
    return sum(int(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


def test_checked_in_rules_and_tests_match_the_generator() -> None:
    for name, text in generate.generate().items():
        assert (PROMETHEUS / name).read_text() == text, f"prometheus/{name}: run python -m prometheus.generate"


def test_every_rule_has_rqscopes_threshold_window_for_severity_and_labels_in_prometheus() -> None:
    """Both files parsed on their own and compared field by field: a hand edit to either one fails here."""
    prom = prometheus_rules()
    ours = load_rules()
    assert sorted(prom) == sorted(f"Rqscope{rule.name}" for rule in ours)
    for rule in ours:
        alert = prom[f"Rqscope{rule.name}"]
        expr, where = " ".join(alert["expr"].split()), rule.name
        if "threshold unused" not in KINDS[rule.kind][0]:
            comparison = re.search(r"(>|<) (-?[0-9.e+]+)$", expr)
            assert comparison, f"{where}: {expr!r} does not end in a comparison with the threshold"
            assert float(comparison.group(2)) == rule.threshold, f"{where}: threshold"
            assert comparison.group(1) == ("<" if rule.kind == "workers_below" else ">"), f"{where}: comparison"
        ranges = re.findall(r"\[([0-9a-z]+)\]", expr)
        assert ranges or rule.kind not in WINDOWED, f"{where}: no range over the window"
        assert all(prom_seconds(r) == rule.window_seconds for r in ranges), f"{where}: window {ranges}"
        assert prom_seconds(alert.get("for", "0s")) == rule.for_seconds, f"{where}: for"
        assert alert["labels"] == {"severity": rule.severity, **dict(rule.labels)}, f"{where}: labels"
        assert {"summary", "description", "dashboard_url"} <= set(alert["annotations"]), f"{where}: annotations"


def test_every_rule_fires_in_its_promtool_case_with_its_severity_and_the_redis_label() -> None:
    tests = yaml.safe_load((PROMETHEUS / "rqscope.rules.test.yml").read_text())
    assert tests["rule_files"] == ["rqscope.rules.yml"]
    for rule in load_rules():
        (case,) = [t for t in tests["tests"] if t["name"] == rule.name]
        checks = case["alert_rule_test"]
        assert {c["alertname"] for c in checks} == {f"Rqscope{rule.name}"}
        firing = [(prom_seconds(c["eval_time"]), c["exp_alerts"]) for c in checks if c["exp_alerts"]]
        quiet = [prom_seconds(c["eval_time"]) for c in checks if not c["exp_alerts"]]
        fired_at, (alert,) = firing[0]
        assert alert["exp_labels"]["severity"] == rule.severity
        assert alert["exp_labels"]["redis"] == "east"  # the series on Redis `west` stays at the threshold
        assert all(alerts == [] or alerts[0]["exp_labels"]["redis"] == "east" for _, alerts in firing), rule.name
        # the same sidecar, the same series names and queue: only `redis` tells west's series from east's
        series = {re.sub(r',redis="(east|west)"', "", s["series"]) for s in case["input_series"]}
        assert len(series) < len(case["input_series"]) and 'instance="web:9190"' in case["input_series"][0]["series"]
        assert any('redis="west"' in s["series"] for s in case["input_series"]), rule.name
        assert min(quiet) < fired_at < max(quiet), f"{rule.name}: quiet before it fires and after it resolves"
        if rule.for_seconds:  # still pending one step before `for:` has elapsed
            assert fired_at - prom_seconds(case["interval"]) in quiet, rule.name


AGGREGATIONS = r"\b(sum|min|max|avg|group|count|count_values|stddev|stdvar|topk|bottomk|quantile|limitk)\s*(\w*)\s*\("


def test_no_expression_merges_two_redis_instances_or_drops_their_label() -> None:
    """by/on name what they keep, so they must name `redis`; without/ignoring name what they drop, so they must not."""
    for name, alert in prometheus_rules().items():
        expr = alert["expr"]
        for operator, modifier in re.findall(AGGREGATIONS, expr):
            assert modifier in ("by", "without"), f"{name}: {operator} without a grouping keeps no label: {expr}"
        for modifier, names in re.findall(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr):
            kept = "redis" in {n.strip() for n in names.split(",")}
            assert kept == (modifier in ("by", "on")), f"{name}: {modifier} ({names}) in {expr}"


def test_a_rule_that_sums_across_instances_fails_its_promtool_case(tmp_path: Path) -> None:
    """The cases have teeth: summing two instances' runs of one queue loses `redis` and moves the ratio."""
    shipped = (PROMETHEUS / "rqscope.rules.yml").read_text()
    merged = shipped.replace("sum without (task, outcome)", "sum by (job, instance, queue)")
    assert merged != shipped
    (tmp_path / "rqscope.rules.yml").write_text(merged)
    (tmp_path / "rqscope.rules.test.yml").write_text((PROMETHEUS / "rqscope.rules.test.yml").read_text())
    result = promtool("test", "rules", str(tmp_path / "rqscope.rules.test.yml"))
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == {"RqscopeFailedJobsSpike", "RqscopeFailureRatioHigh"}, result.stdout + result.stderr


def test_every_kind_has_a_promql_template_and_a_promtool_scenario() -> None:
    assert set(promql.TEMPLATES) == set(KINDS)
    assert set(cases.SCENARIOS) == set(KINDS)
    assert {kind for kind, (_, windowed) in cases.SCENARIOS.items() if windowed} == WINDOWED | {
        "pool_exhausted",
        "redis_rejected_connections",
    }
    with pytest.raises(ValueError, match="no PromQL template"):
        promql.expression(Rule(name="New", kind="a_new_kind"))


def test_summaries_read_as_rqscopes_own_notifications() -> None:
    labels = {
        "job": "rqscope",
        "instance": "web:9190",
        "redis": "east",
        "queue": "emails",
        "role": "worker",
        "key": "partner-api",
        "cron_job": "nightly clean-up",
    }
    for rule in load_rules():
        for value in (0.0, 0.25, 0.5, 7.0):  # values on which Python's and Go's formats agree
            mine = annotate.render(annotate.annotation_parts(rule)["summary"], labels, value)
            kept = tuple((k, labels[k]) for k in ("queue", "role", "key", "cron_job") if k in labels)
            # rqscope's own summary, after the instance it was read from
            assert mine == "[east] " + _summary(Observation(rule, kept, value, True)), rule.name


@pytest.mark.parametrize(
    ("queue", "redis"),
    [
        ("emails", "default"),
        ("a b/c+d%é", "eu west&x=1"),
        ("q\udcff a\\b\\xff", "default"),
        ("..", ".."),
        (".", "."),
        ("...", "default"),
    ],
)
def test_dashboard_links_open_the_page_rqscopes_own_alerts_link_to_on_their_instance(queue: str, redis: str) -> None:
    # Prometheus knows the queue by its label (bytes that are not UTF-8 as \xff, a backslash doubled)
    labels = {"instance": "web:9190", "queue": metric_label(queue), "redis": redis}
    for rule in load_rules():
        link = annotate.render(annotate.annotation_parts(rule)["dashboard_url"], labels, 1.0)
        link = re.sub("%[0-9a-f]{2}", lambda escape: escape.group().upper(), link)  # Go writes the byte ff %ff
        alert = Alert(
            "f",
            rule.name,
            rule.kind,
            rule.severity,
            ((("queue", queue),) if rule.per_queue else ()) + (("redis", redis),),
            "",
            1.0,
            "firing",
            0.0,
        )
        assert link == dashboard_link("http://web:9190/", Notification("firing", alert)), rule.name
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(link).query) == {"redis": [redis]}, rule.name


@pytest.mark.parametrize("queue", ["..", ".", "", "...", ".%2E", "%2E;", "..;", " .."])
def test_a_queue_named_with_dots_only_links_to_its_page_in_prometheus_own_template(tmp_path: Path, queue: str) -> None:
    """Browsers drop a path segment `..` or `.`: Prometheus's links mark it as the sidecar's own links do, names
    near those stay unmarked, and promtool checks the link Prometheus writes against the one the sidecar's
    notifier writes."""
    rule = next(r for r in load_rules() if r.per_queue and r.kind == "queue_depth")
    (tmp_path / "rqscope.rules.yml").write_text(generate.rules_yaml((rule,), "test"))
    case = testfile.promtool_case(rule, testfile.step_ms((rule,)), queue=queue)
    body = {"rule_files": ["rqscope.rules.yml"], "evaluation_interval": "1m", "tests": [case]}
    (tmp_path / "rqscope.rules.test.yml").write_text(yaml.safe_dump(body))
    links = [a["exp_annotations"]["dashboard_url"] for t in case["alert_rule_test"] for a in t["exp_alerts"]]
    assert links and all(decode_segment(urllib.parse.urlsplit(x).path.split("/")[2]) == queue for x in links)
    if queue in ("..", ".", ""):
        assert all(link.startswith(f"http://web:9190/queues/{'%2E' * len(queue)};/") for link in links), links
    else:
        assert all(";/" not in x for x in links) or queue.endswith(";")  # not marked as a dot name
    result = promtool("test", "rules", str(tmp_path / "rqscope.rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generate_check_fails_on_a_hand_edited_or_missing_file(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "prometheus.generate", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert run("--check").returncode == 0
    assert run("--check", "--out", str(tmp_path)).returncode == 1
    assert run("--out", str(tmp_path)).returncode == 0
    assert run("--check", "--out", str(tmp_path)).returncode == 0
    rules = tmp_path / "rqscope.rules.yml"
    rules.write_text(rules.read_text().replace("> 1000", "> 2000"))
    result = run("--check", "--out", str(tmp_path))
    assert result.returncode == 1 and "rqscope.rules.yml differs" in result.stderr


CUSTOM_RULES = """
rules:
  - {name: Backlog, kind: queue_depth, threshold: 10.5, for: 90s, severity: info, queues: ["mail q+1*", sms],
     labels: {team: mail}, summary: "Queue {queue}: {value} jobs"}
  - {name: Latency, kind: queue_latency, threshold: 0, summary: "{queue} waited {value:.1f} s"}
  - {name: Failed, kind: failed_jobs, threshold: 3, window: 2m, for: 1m, queues: ["e[a-m]ails"]}
  - {name: Ratio, kind: failure_ratio, threshold: 0.5, window: 3m, for: 30s, summary: "{value:.1%} failed"}
  - {name: Orphans, kind: queue_without_workers}
  - {name: FewWorkers, kind: workers_below, threshold: 3, for: 2m, summary: "{value:.0f} live"}
  - {name: Dead, kind: dead_workers, threshold: 2, for: 45s}
  - {name: Pool, kind: pool_utilisation, threshold: 0.29, summary: "{role} at {value:.0%}"}
  - {name: Exhausted, kind: pool_exhausted, threshold: 5, window: 1m, for: 1m, summary: "{value:.0f}"}
  - {name: Clients, kind: redis_clients, threshold: 0.5, for: 1m}
  - {name: Rejected, kind: redis_rejected_connections, threshold: 2, window: 10m, for: 3m, summary: "{value:.0f}"}
  - {name: Memory, kind: redis_memory, threshold: 0.755, for: 15s, summary: "{value:.0%} of {{maxmemory}}"}
  - {name: Down, kind: redis_down, severity: info}
"""


def test_other_thresholds_windows_queue_globs_and_labels_generate_rules_that_pass_their_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The templates and scenarios hold for any rule, not only the shipped ones: promtool runs the generated cases."""
    # an instance name that needs escaping in a URL: Prometheus's templates and ours must write it alike
    monkeypatch.setitem(testfile.HOT, "redis", "eu west+1&x")
    (tmp_path / "rules.yml").write_text(CUSTOM_RULES)
    files = generate.generate(tmp_path / "rules.yml", "https://{job}.example.com")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    check = promtool("check", "rules", str(tmp_path / "rqscope.rules.yml"))
    assert check.returncode == 0 and "SUCCESS: 13 rules found" in check.stdout, check.stdout + check.stderr
    result = promtool("test", "rules", str(tmp_path / "rqscope.rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    backlog = yaml.safe_load(files["rqscope.rules.yml"])["groups"][0]["rules"][0]
    assert backlog["expr"] == 'rqscope_queue_jobs{state="queued", queue=~"mail\\\\ q\\\\+1.*|sms"} > 10.5'
    assert backlog["labels"] == {"severity": "info", "team": "mail"}
    link = "https://rqscope.example.com/queues/mail%20q%2B1/queued?redis=eu%20west%2B1%26x"
    assert link in files["rqscope.rules.test.yml"]
    assert "summary: '[eu west+1&x] Queue mail q+1: 11 jobs'" in files["rqscope.rules.test.yml"]
    assert 'queue="unmatched"' in files["rqscope.rules.test.yml"]  # crosses the threshold outside the globs


def test_alertmanager_example_is_valid() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed; .ci/run installs Debian's prometheus-alertmanager package")
    result = subprocess.run(
        [amtool, "check-config", "prometheus/alertmanager.yml"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    assert "redis" in config["route"]["group_by"]  # east's and west's backlog in `emails` are two incidents
    assert all("redis" in rule["equal"] for rule in config["inhibit_rules"])  # west down mutes only west's alerts


def test_compose_commands_and_variables_match_the_cli_and_settings() -> None:
    from rqscope.monitor.settings import Settings, env_name
    from rqscope.web.cli import build_parser

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    known = {env_name(name) for name in vars(Settings())}
    for name in ("web", "worker"):
        service = compose["services"][name]
        build_parser().parse_args(service["command"])  # exits (and fails the test) on an unknown flag
        assert set(service["environment"]) <= known, set(service["environment"]) - known
    assert compose["services"]["worker"]["deploy"]["replicas"] == 2
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] in ("service_healthy", "service_started"), name
        for value in (service.get("environment") or {}).values():
            assert not str(value) or str(value).startswith("${") or "PASSWORD" not in str(value)
    assert "${GRAFANA_ADMIN_PASSWORD" in compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def _compose_check(path: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("check-jsonschema")
    if binary is None:
        pytest.fail("check-jsonschema is not installed; it comes with the dev extra")
    # the Compose Specification's schema as the check-jsonschema package vendors it: no network needed
    return subprocess.run(
        [binary, "--builtin-schema", "vendor.compose-spec", path], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_compose_file_validates_against_the_compose_specification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _compose_check("docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text().replace("service_healthy", "whenever_ready"))
    assert _compose_check(str(broken)).returncode != 0
