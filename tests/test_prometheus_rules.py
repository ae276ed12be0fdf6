"""The shipped Prometheus files pass promtool, and the rules' unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from monitor.alert_rules import KINDS, load_rules
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
