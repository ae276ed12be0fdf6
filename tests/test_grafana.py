"""The Grafana files: generated JSON in sync with its generator, sound layout, provisioned datasource."""

from __future__ import annotations

import importlib.util
import json

import yaml

from tests.helpers import REPO

GRAFANA = REPO / "grafana"
CURRENT_PANEL_TYPES = {"timeseries", "stat", "table", "bargauge"}


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
    import re

    readme = (REPO / "README.md").read_text()
    for path in (GRAFANA / "dashboards").glob("*.json"):
        for p in json.loads(path.read_text())["panels"]:
            for t in p["targets"]:
                for name in re.findall(r"rqscope_[a-z_]+", t["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", name)
                    assert f"`{base}`" in readme, f"{path.name}: {name} is not in the README's metrics table"
