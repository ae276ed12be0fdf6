"""The benchmark's peers stay out of the product's environment, and its servers are measured and stopped by pid."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest
from packaging.requirements import Requirement
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis

from bench import peers
from bench.fill import fill_state
from bench.peers import MARKER, REQUIREMENTS, PeersEnv, peers_root
from bench.scrape import queued_total
from bench.servers import Reply, Server, alternate, cold_gap, rqscope_env, rqscope_serve, timed_request

REPO = Path(__file__).resolve().parent.parent
PEER_ONLY = {"rq", "redis", "rq-exporter", "rq-dashboard", "six"}


def extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_bench_extra_constrains_nothing_the_product_or_the_peers_pin() -> None:
    names = {Requirement(r).name.lower() for r in extras()["bench"]}
    assert names.isdisjoint(PEER_ONLY), names & PEER_ONLY


def test_peers_requirements_hold_what_rq_dashboard_and_rq_exporter_need() -> None:
    wanted = {Requirement(r).name: str(Requirement(r).specifier) for r in REQUIREMENTS}
    assert wanted == {"rq-exporter": ">=3.0", "rq-dashboard": "==0.9.0", "six": "", "rq": "<3", "redis": "<6"}


def test_root_is_the_env_variable_or_a_cache_folder_in_home(tmp_path: Path) -> None:
    assert peers_root({"RQSCOPE_BENCH_PEERS": str(tmp_path / "p")}) == tmp_path / "p"
    assert peers_root({}) == Path.home() / ".cache" / "rqscope-bench" / "peers"


def test_commands_run_the_venvs_python_never_the_products(tmp_path: Path) -> None:
    env = PeersEnv(tmp_path / "peers")
    assert env.create_command() == [sys.executable, "-m", "venv", str(tmp_path / "peers")]
    install = env.install_command()
    assert install[:4] == [str(tmp_path / "peers" / "bin" / "python"), "-m", "pip", "install"]
    assert install[-len(REQUIREMENTS) :] == list(REQUIREMENTS)
    assert not any(arg in ("--user", "--system-site-packages", "--target", "--prefix") for arg in install)


def test_environ_drops_what_points_back_at_the_product(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/work/main", "VIRTUAL_ENV": "/product", "PIP_USER": "1", "HOME": "/h"}
    env = PeersEnv(tmp_path).environ(base, EXTRA="x")
    assert env["PATH"].split(":") == [str(tmp_path / "bin"), "/usr/bin"]
    assert env["VIRTUAL_ENV"] == str(tmp_path)
    assert "PYTHONPATH" not in env and "PIP_USER" not in env
    assert env["PYTHONNOUSERSITE"] == "1" and env["HOME"] == "/h" and env["EXTRA"] == "x"


def fake_venv(root: Path, marker: str | None) -> PeersEnv:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    if marker is not None:
        (root / MARKER).write_text(marker)
    return PeersEnv(root)


def test_a_built_venv_is_reused_without_running_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fake_venv(tmp_path / "peers", PeersEnv(tmp_path).marker_text())
    monkeypatch.setattr(peers.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert env.ensure(log=False) is env


def test_changed_requirements_reinstall_into_the_venv_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fake_venv(tmp_path / "peers", "rq-exporter>=2\n")
    ran: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(peers.subprocess, "run", lambda command, **k: ran.append((command, k["env"])))
    env.ensure(log=False)
    assert [command for command, _ in ran] == [env.install_command()]  # the venv exists: no second venv
    assert ran[0][1]["VIRTUAL_ENV"] == str(tmp_path / "peers")
    assert env.ready()


def test_alternate_starts_each_request_a_gap_apart_in_turn() -> None:
    starts: list[tuple[str, float]] = []

    def send(name: str) -> Reply:
        starts.append((name, time.monotonic()))
        return Reply(200, b"", 0.001)

    seconds = alternate({"a": lambda: send("a"), "b": lambda: send("b")}, rounds=3, gap=0.05)
    assert [name for name, _ in starts] == ["a", "b"] * 3
    assert all(later - earlier >= 0.049 for (_, earlier), (_, later) in zip(starts, starts[1:], strict=False))
    assert seconds == {"a": [0.001] * 3, "b": [0.001] * 3}
    with pytest.raises(RuntimeError, match="HTTP 503"):
        alternate({"a": lambda: Reply(503, b"down", 0.0)}, rounds=1, gap=0)


def test_rqscope_env_drops_inherited_credentials() -> None:
    env = rqscope_env("redis://127.0.0.1:1/0", {"RQSCOPE_API_TOKEN": "t", "RQSCOPE_USERS": "u", "HOME": "/h"})
    assert env["RQSCOPE_REDIS_URL"] == "redis://127.0.0.1:1/0" and env["HOME"] == "/h"
    assert "RQSCOPE_API_TOKEN" not in env and "RQSCOPE_USERS" not in env


@pytest.mark.redis
@pytest.mark.slow
def test_rqscope_serve_is_scraped_over_http_and_stopped_by_pid(redis_server: EmbeddedRedis, real_redis: Redis) -> None:
    fill_state(real_redis, queues=3, queued=30, failed=6, finished=6, started=3, workers=2)
    with rqscope_serve(redis_server.url) as server:
        assert server.process is not None
        family = [server.process.pid, *(p.pid for p in psutil.Process(server.process.pid).children(recursive=True))]
        reply = timed_request(server.url, "/metrics")
        assert reply.status == 200 and reply.seconds > 0
        assert queued_total("rqscope", reply.body) == 30
    assert server.process.poll() is not None
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_bench_scripts_load_in_the_products_environment_without_the_peers() -> None:
    peers_loaded = "[m for m in ('rq_exporter', 'rq_dashboard', 'six') if m in sys.modules]"
    code = f"import sys, bench.scrape, bench.dashboard; print({peers_loaded})"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_server_that_dies_at_start_is_reported_with_its_log_and_cleaned_up() -> None:
    server = Server("broken", lambda port: [sys.executable, "-c", f"print('no port {port} for you'); exit(3)"], {}, "/")
    with pytest.raises(RuntimeError, match=r"(?s)broken exited with 3.*no port \d+ for you"):
        server.__enter__()
    assert not server.log.parent.exists()


def test_a_gap_short_enough_to_hit_rqscopes_cache_is_refused() -> None:
    assert cold_gap("1.2") == 1.2
    with pytest.raises(argparse.ArgumentTypeError, match="within its 1.0 s cache"):
        cold_gap("0.5")
