"""`rqscope demo`: embedded Redis, instrumented workers, the sidecar and example traffic."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from types import FrameType

from redis import Redis, RedisError
from rqscope.monitor.embedded import EmbeddedRedis, demo_state_dir, demo_url_file, free_port
from rqscope.monitor.settings import DEFAULT_PORT
from rqscope.tasks import examples
from rqscope.tasks.errors import RqscopeError
from rqscope.tasks.registry import enqueue
from rqscope.web.children import cli_command

log = logging.getLogger(__name__)

# (task name, args maker, extra kwargs); fail rates give about 10% failed runs overall
TRAFFIC = (
    ("generate_report", lambda n: (f"r-{n}",), {"duration": 0.3, "fail_rate": 0.08}),
    ("send_email", lambda n: (f"user{n}@example.com", "Your receipt", f"Receipt #{n}"), {"fail_rate": 0.1}),
    ("process_upload", lambda n: (f"/uploads/{n}.csv",), {"fail_rate": 0.12}),
)


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Demo:
    """Starts and stops every demo process; Ctrl-C leaves nothing running."""

    def __init__(self, workers: int = 2, rate: float = 5.0, port: int | None = None) -> None:
        self.workers = workers
        self.rate = rate
        self.port = port or (DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port())
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = threading.Event()
        self.redis: EmbeddedRedis | None = None

    def _spawn(self, *args: str, env: dict[str, str], log_name: str) -> None:
        """Start an rqscope command whose output goes to a log file, so the terminal keeps the URL."""
        command = cli_command(*args)
        with open(demo_state_dir() / log_name, "wb") as log_file:
            # a session of its own: a terminal's Ctrl-C reaches only the demo, which stops the workers
            # and the sidecar first and Redis last, so no worker is left holding a job without Redis
            self.children.append(subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                                  start_new_session=True))  # fmt: skip

    def start(self) -> str:
        self.redis = EmbeddedRedis().start()
        env = {
            **os.environ,
            "RQSCOPE_REDIS_URL": self.redis.url,
            "RQSCOPE_PUBLISH_INTERVAL": "2",
            "RQSCOPE_LOG_LEVEL": "WARNING",
        }
        for credential in ("RQSCOPE_API_TOKEN", "RQSCOPE_VIEWER_TOKEN", "RQSCOPE_USERS", "RQSCOPE_METRICS_TOKEN"):
            env.pop(credential, None)  # the demo's sidecar runs --no-auth, which refuses to start beside credentials
        demo_state_dir().mkdir(mode=0o700, exist_ok=True)
        demo_url_file().write_text(self.redis.url)
        for n in range(self.workers):
            self._spawn("worker", "high", "default", "low", "--with-scheduler", "--name", f"demo-{n + 1}", env=env,
                        log_name=f"worker-{n + 1}.log")  # fmt: skip
        self._spawn("serve", "--port", str(self.port), "--no-auth", "--web-workers", "1", env=env, log_name="serve.log")
        return f"http://127.0.0.1:{self.port}/"

    def traffic(self, client: Redis) -> None:
        n = 0
        while not self.stopping.is_set():
            if self.rate <= 0:
                self.stopping.wait(1.0)
                continue
            name, make_args, kwargs = random.choice(TRAFFIC)
            n += 1
            try:
                enqueue(name, *make_args(n), connection=client, **kwargs)
            except RedisError as exc:
                log.warning("demo traffic paused: %s", exc)
                self.stopping.wait(1.0)
            self.stopping.wait(random.expovariate(self.rate))

    def stop(self) -> None:
        self.stopping.set()
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        if self.redis is not None:
            self.redis.stop()
        demo_url_file().unlink(missing_ok=True)

    def run(self, duration: float | None = None) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        assert examples  # the example tasks must be registered before traffic starts
        try:
            url = self.start()
            assert self.redis is not None
            print(f"rqscope demo: dashboard and API at {url} (no auth: loopback only)", flush=True)
            print(f"rqscope demo: metrics at {url}metrics; Redis at {self.redis.url}", flush=True)
            print(f"rqscope demo: process logs in {demo_state_dir()}; press Ctrl-C to stop", flush=True)
            client = Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=2)
            generator = threading.Thread(target=self.traffic, args=(client,), daemon=True)
            generator.start()
            deadline = None if duration is None else time.monotonic() + duration
            while not self.stopping.is_set():
                if any(child.poll() is not None for child in self.children):
                    raise RqscopeError("a demo process exited unexpectedly; stopping the demo")
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.stopping.wait(0.5)
            return 0
        finally:
            self.stop()
            print("rqscope demo: stopped", flush=True)
