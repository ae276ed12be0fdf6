"""The benchmark's peers, rq-exporter and rq-dashboard, in a virtualenv of their own, run as their users run them.

rq-exporter needs rq < 3 and redis < 6, and rq-dashboard 0.9.0 imports `six` without declaring it, so the
peers never share the product's environment: they get a venv without system site-packages, built once and
reused, at $RQSCOPE_BENCH_PEERS (default ~/.cache/rqscope-bench/peers). Nothing here installs into the
Python that runs the benchmark.

Run: python -m bench.peers   (builds or checks the venv and prints the peers' versions)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import machine

REQUIREMENTS = ("rq-exporter>=3.0", "rq-dashboard==0.9.0", "six", "rq<3", "redis<6")
ENV_VAR = "RQSCOPE_BENCH_PEERS"
DEFAULT_ROOT = "~/.cache/rqscope-bench/peers"
MARKER = "rqscope-bench-requirements.txt"
# what would point the venv's Python or pip back at the product's environment or another prefix
LEAKING_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PIP_USER",
    "PIP_PREFIX",
    "PIP_TARGET",
    "PIP_ROOT",
    "PIP_SYSTEM_SITE_PACKAGES",
)
INSTALL_TIMEOUT = 900


def peers_root(env: Mapping[str, str]) -> Path:
    """Where the peers' venv lives: $RQSCOPE_BENCH_PEERS, or a cache folder in the user's home."""
    return Path(env.get(ENV_VAR) or DEFAULT_ROOT).expanduser().resolve()


@dataclass(frozen=True)
class PeersEnv:
    """The peers' virtualenv: how to build it, and how to run its programs isolated from the product's."""

    root: Path
    base_python: str = sys.executable

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.root / "bin" / name

    def create_command(self) -> list[str]:
        return [self.base_python, "-m", "venv", str(self.root)]

    def install_command(self) -> list[str]:
        # the venv's own pip, so the install lands in the venv whatever the calling interpreter is
        return [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS]

    def environ(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """`base` (default: this process's environment) without what leaks the product in, with the venv first."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in LEAKING_VARIABLES}
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", os.defpath)])
        env["VIRTUAL_ENV"] = str(self.root)
        env["PYTHONNOUSERSITE"] = "1"
        return {**env, **extra}

    def marker_text(self) -> str:
        return "\n".join(REQUIREMENTS) + "\n"

    def ready(self) -> bool:
        marker = self.root / MARKER
        return self.python.exists() and marker.exists() and marker.read_text() == self.marker_text()

    def ensure(self, log: bool = True) -> PeersEnv:
        """Build the venv and install the peers unless a previous run already did, with the same requirements."""
        if self.ready():
            return self
        if not self.python.exists():
            if log:
                print(f"peers: creating a virtualenv at {self.root}", file=sys.stderr)
            self.root.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(self.create_command(), check=True, env=self.environ(), timeout=300)
        if log:
            print(f"peers: pip install {' '.join(REQUIREMENTS)}", file=sys.stderr)
        subprocess.run(self.install_command(), check=True, env=self.environ(), timeout=INSTALL_TIMEOUT)
        (self.root / MARKER).write_text(self.marker_text())
        return self

    def versions(self, *distributions: str) -> dict[str, str]:
        """Installed versions in the venv, read by the venv's own Python."""
        code = "import sys, importlib.metadata as m; print('\\n'.join(m.version(d) for d in sys.argv[1:]))"
        out = subprocess.run(
            [str(self.python), "-c", code, *distributions],
            check=True,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return dict(zip(distributions, out.split(), strict=True))


def peers_env(env: Mapping[str, str] | None = None) -> PeersEnv:
    return PeersEnv(peers_root(os.environ if env is None else env))


# the Redis state both headline benchmarks read: 50 queues and 100 workers with these jobs (bench.fill)
HEADLINE_JOBS = {"queued": 100_000, "failed": 20_000, "finished": 20_000, "started": 200}


def ready_peers(peer: str, scale: float = 1.0) -> tuple[PeersEnv, dict[str, int]]:
    """The peers' environment, built or reused, with a line naming the machine, date and versions;
    and the headline job counts, times `scale`."""
    peers = peers_env().ensure()
    versions = peers.versions(peer, "rq", "redis")
    print(
        f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}; peers' venv: {peer} {versions[peer]}, "
        f"rq {versions['rq']}, redis-py {versions['redis']}"
    )
    return peers, {state: int(count * scale) for state, count in HEADLINE_JOBS.items()}


def rq_exporter_command(peers: PeersEnv, redis_url: str, port: int) -> list[str]:
    """rq-exporter's own HTTP server, as its console script starts it."""
    return [
        str(peers.script("rq-exporter")),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--redis-url",
        redis_url,
        "--log-level",
        "WARNING",
    ]


def rq_dashboard_command(peers: PeersEnv, redis_url: str, port: int) -> list[str]:
    """rq-dashboard's own server, as its console script starts it."""
    return [str(peers.script("rq-dashboard")), "--bind", "127.0.0.1", "--port", str(port), "--redis-url", redis_url]


def main() -> None:
    peers = peers_env().ensure()
    print(f"peers' virtualenv: {peers.root}")
    for name, version in peers.versions("rq-exporter", "rq-dashboard", "rq", "redis", "six").items():
        print(f"  {name} {version}")


if __name__ == "__main__":
    main()
