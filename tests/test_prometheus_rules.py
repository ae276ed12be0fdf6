"""The shipped Prometheus files pass promtool, and the rules' unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from rqscope.monitor.alerts.rules import KINDS, load_rules

from tests.helpers import REPO


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed; .ci/run installs Debian's prometheus package")
    return subprocess.run([binary, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_rules_file_is_valid() -> None:
    result = promtool("check", "rules", "prometheus/rqscope.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "prometheus/rqscope.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_prometheus_rule_is_tested_and_matches_a_builtin_kind() -> None:
    import yaml

    rules = yaml.safe_load((REPO / "prometheus/rqscope.rules.yml").read_text())["groups"][0]["rules"]
    tests = (REPO / "prometheus/rqscope.rules.test.yml").read_text()
    assert all(f"alertname: {r['alert']}" in tests for r in rules)
    assert len(rules) == len(KINDS) == len(load_rules())


def test_alertmanager_example_is_valid() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed; .ci/run installs Debian's prometheus-alertmanager package")
    result = subprocess.run([amtool, "check-config", "prometheus/alertmanager.yml"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_commands_and_variables_match_the_cli_and_settings() -> None:
    import yaml
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
    return subprocess.run([binary, "--builtin-schema", "vendor.compose-spec", path], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_compose_file_validates_against_the_compose_specification(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _compose_check("docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text().replace("service_healthy", "whenever_ready"))
    assert _compose_check(str(broken)).returncode != 0
