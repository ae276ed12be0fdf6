"""The Grafana files: generated JSON in sync with its generator, sound layout, provisioned datasource."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

GRAFANA = REPO / "grafana"
CURRENT_PANEL_TYPES = {"timeseries", "stat", "table", "bargauge"}
REDIS = 'redis=~"$redis"'
# operators that drop labels; topk/bottomk keep every label of the series they pick
AGGREGATIONS = r"\b(sum|min|max|avg|group|count|count_values|stddev|stdvar|quantile)\s*(\w*)\s*\("


def boards() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        yield path, json.loads(path.read_text())


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, the alert annotation and every variable but `redis`."""
    for p in board["panels"]:
        for t in p["targets"]:
            yield f"{p['title']} {t['refId']}", t["expr"]
    for a in board["annotations"]["list"]:
        yield a["name"], a["expr"]
    for v in board["templating"]["list"]:
        if v["name"] != "redis":
            yield f"${v['name']}", v["query"]["query"]


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_checked_in_json_matches_the_generator() -> None:
    module = generator()
    boards = module.dashboards()
    files = sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json"))
    assert files == sorted(f"{name}.json" for name in boards)
    for name, board in boards.items():
        assert (GRAFANA / "dashboards" / f"{name}.json").read_text() == module.render(board), name


def test_dashboards_are_sound() -> None:
    uid = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())["datasources"][0]["uid"]
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        panels = board["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), path
        cells = set()
        for p in panels:
            assert p["type"] in CURRENT_PANEL_TYPES, (path, p["type"])
            assert p["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in p["targets"])
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{path.name}: panel {p['id']} overlaps another"
                    cells.add((x, y))
        names = {v["name"] for v in board["templating"]["list"]}
        assert {"job", "instance", "queue"} <= names
        assert all(v["datasource"]["uid"] == uid for v in board["templating"]["list"])
        assert board["annotations"]["list"][0]["expr"].startswith("ALERTS{")


def test_every_dashboard_metric_is_one_rqscope_exports() -> None:
    readme = (REPO / "README.md").read_text()
    for path in (GRAFANA / "dashboards").glob("*.json"):
        for p in json.loads(path.read_text())["panels"]:
            for t in p["targets"]:
                for name in re.findall(r"rqscope_[a-z_]+", t["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", name)
                    assert f"`{base}`" in readme, f"{path.name}: {name} is not in the README's metrics table"


def test_every_dashboard_has_a_redis_variable_first_all_instances_by_default() -> None:
    for path, board in boards():
        variables = board["templating"]["list"]
        redis = variables[0]
        assert redis["name"] == "redis", f"{path.name}: the redis variable comes before the others"
        assert redis["query"]["query"] == redis["definition"] == "label_values(rqscope_redis_up, redis)"
        assert redis["multi"] and redis["includeAll"] and redis["allValue"] == ".*"
        assert redis["current"]["value"] == ["$__all"], f"{path.name}: every instance is shown by default"
        assert [v["name"] for v in variables].count("redis") == 1


def test_every_expression_selects_the_chosen_redis_instances() -> None:
    for path, board in boards():
        for where, expr in expressions(board):
            selectors = re.findall(r"\b(rqscope_[a-z_]+|ALERTS)(\{[^}]*\})?", expr)
            assert selectors, f"{path.name} / {where}: {expr}"
            for metric, matchers in selectors:
                assert REDIS in matchers, f"{path.name} / {where}: {metric} without {REDIS}: {expr}"


def test_no_expression_merges_two_redis_instances() -> None:
    """Every aggregation keeps `redis` (by names it, without leaves it), every vector match compares it."""
    for path, board in boards():
        for where, expr in expressions(board):
            for operator, modifier in re.findall(AGGREGATIONS, expr):
                assert modifier in ("by", "without"), f"{path.name} / {where}: {operator} drops redis: {expr}"
            for modifier, names in re.findall(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", expr):
                kept = "redis" in {n.strip() for n in names.split(",")}
                assert kept == (modifier in ("by", "on")), f"{path.name} / {where}: {modifier} ({names}): {expr}"


def test_every_legend_names_the_instance() -> None:
    for path, board in boards():
        for p in board["panels"]:
            for t in p["targets"]:
                if p["type"] != "table":  # a table shows every label as a column
                    assert "{{redis}}" in t["legendFormat"], f"{path.name} / {p['title']}: {t['legendFormat']!r}"
        assert "{{redis}}" in board["annotations"]["list"][0]["textFormat"]


def test_every_expression_is_promql_that_promtool_accepts(tmp_path: Path) -> None:
    """Each panel's and annotation's query, variables filled in, as a recording rule: promtool parses every one."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed; .ci/run installs Debian's prometheus package")
    values = {"$redis": ".*", "$job": "rqscope", "$instance": ".*", "$queue": ".*"}
    rules: list[dict[str, str]] = []
    for path, board in boards():
        for _, expr in expressions(board):
            if not expr.startswith("label_values("):  # variable queries are Grafana's, not PromQL
                for name, value in values.items():
                    expr = expr.replace(name, value)
                rules.append({"record": f"grafana:{path.stem.replace('-', '_')}:{len(rules)}", "expr": expr})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    command = [binary, "check", "rules", str(tmp_path / "rules.yml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
