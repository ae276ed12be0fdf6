"""A sidecar process per other RQ key prefix (RQ reads its prefix once per process, at import), or per instance.

`rqscope serve` watches the instances under its own RQ_KEY_PREFIX itself. For each other prefix it starts
`rqscope serve` again with RQ_KEY_PREFIX set to it and just that prefix's instances, listening on a Unix socket
in a directory only this user may enter, and serving only requests that carry a token made for this run.
With process_per_instance (RQSCOPE_PROCESS_PER_INSTANCE) it does the same for every instance after the first,
whatever its prefix: a process per instance, so that no two instances' reads and shaping share a process.
The front (web.front) relays every request for those instances to it, and asks it for its metrics,
instances and readiness.
A child that exits is started again, after a pause that grows while it keeps exiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from rqscope.monitor.instances import InstanceConfig, by_prefix, group_values
from rqscope.monitor.settings import Settings, env_name
from rqscope.tasks.errors import SettingsError
from rqscope.tasks.rq_internals.keys import rq_key_prefix, rq_reads_prefix
from rqscope.web.front_headers import FRONT_TOKEN_HEADER

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 64 * 1024 * 1024  # a /metrics of thousands of queues is a few MB
RESTART_PAUSE = (1.0, 30.0)  # seconds before a child that exited is started again: first, longest
RESTART_FORGIVEN = 60.0  # a child that ran this long before exiting is started again after the first pause
WATCH_INTERVAL = 0.5
PR_SET_PDEATHSIG = 1  # prctl(2)
# what the front's own settings must not pass on: the child names its own instances and listens elsewhere
NOT_PASSED = ("redis_url", "sentinel_master", "host", "port", "web_workers", "front_token", "front_socket")
# and, for a child that watches no Sentinel master, the Sentinel settings it would refuse without one
SENTINEL_ONLY = ("sentinel_hosts", "sentinel_password")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Child:
    """The sidecar process serving one other prefix's instances, or one instance (process_per_instance)."""

    prefix: str
    instances: tuple[InstanceConfig, ...]
    socket: str
    process: subprocess.Popen[bytes] | None = None
    exits: int = 0
    next_start: float = 0.0
    started: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.instances)

    @property
    def shown(self) -> str:
        """The child as logs and error messages name it."""
        return f"the sidecar of {', '.join(self.names)} (RQ key prefix {self.prefix!r})"


@dataclass
class Children:
    """Every child sidecar of one front, the token they trust and the directory of their sockets."""

    token: str
    directory: str
    children: list[Child]
    environ: dict[str, str] = field(repr=False, default_factory=dict)
    timeout: float = 5.0
    stopped: threading.Event = field(default_factory=threading.Event)
    owner: int = 0  # the process that started the children, the only one to stop them

    @functools.cached_property
    def by_name(self) -> dict[str, Child]:
        """The child serving each instance, by the instance's name (asked on every request naming one)."""
        return {name: child for child in self.children for name in child.names}

    def start(self) -> None:
        self.owner = os.getpid()
        for child in self.children:
            self._spawn(child)
        threading.Thread(target=self._watch, name="rqscope-children", daemon=True).start()

    def _spawn(self, child: Child) -> None:
        env = prefix_environ(self.environ, child.instances)
        env.update(
            {
                env_name("front_token"): self.token,
                env_name("front_socket"): child.socket,
                env_name("web_workers"): "1",
            }
        )
        with contextlib.suppress(FileNotFoundError):  # a socket file left by a child that was killed
            os.unlink(child.socket)
        child.process = subprocess.Popen(
            cli_command("serve"),
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=functools.partial(_ends_with, os.getpid()),  # noqa: PLW1509 - one prctl call, before exec
        )
        child.started = time.monotonic()
        log.info("started %s (pid %s)", child.shown, child.process.pid)

    def _watch(self) -> None:
        while not self.stopped.wait(WATCH_INTERVAL):
            for child in self.children:
                if child.process is None or child.process.poll() is None:
                    continue
                now = time.monotonic()
                if not child.next_start:
                    # a child that ran a while before exiting starts again after the first pause
                    child.exits = 1 if now - child.started > RESTART_FORGIVEN else child.exits + 1
                    pause = min(RESTART_PAUSE[1], RESTART_PAUSE[0] * 2 ** min(child.exits - 1, 5))
                    child.next_start = now + pause
                    log.warning(
                        "%s exited with %s; starting it again in %.0f s", child.shown, child.process.returncode, pause
                    )
                elif now >= child.next_start and not self.stopped.is_set():
                    child.next_start = 0.0
                    self._spawn(child)

    def stop(self) -> None:
        """Stop every child by its pid (SIGTERM, then SIGKILL), and remove the socket directory."""
        if os.getpid() != self.owner:  # a gunicorn worker leaving `serve` through its finally: not its children
            return
        self.stopped.set()
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)

    def request(
        self, child: Child, method: str, target: str, headers: Mapping[str, str] = {}, body: bytes | None = None
    ) -> Reply:
        """One request to a child; OSError or http.client.HTTPException when it does not answer in time."""
        connection = UnixConnection(child.socket, self.timeout)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            sent = {**headers, FRONT_TOKEN_HEADER: self.token}
            sent.setdefault("Host", "localhost")
            if body is not None:
                sent["Content-Length"] = str(len(body))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read(MAX_REPLY_BYTES + 1)
            if len(data) > MAX_REPLY_BYTES:
                raise http.client.HTTPException(f"the reply is over {MAX_REPLY_BYTES} bytes")
            return Reply(response.status, response.getheaders(), data)
        finally:
            connection.close()


def cli_command(*args: str) -> list[str]:
    """The `rqscope` command line `args` as a process of this Python, importing what this process imports.

    -P: the working directory is not put first on the module path, as it is for `python -m`; there, a
    checkout of rqscope (its `rqscope/` folder) would shadow the installed package.
    """
    return [sys.executable, "-P", "-m", "rqscope.web.cli", *args]


def _ends_with(front: int) -> None:
    """In the child, before exec: Linux sends it SIGTERM when the front exits, even killed, so none is orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the front's own stop() is all there is
        return
    if os.getppid() != front:  # the front died before the prctl took hold
        os._exit(1)


def prefix_environ(environ: Mapping[str, str], instances: tuple[InstanceConfig, ...]) -> dict[str, str]:
    """`environ` for a process of these instances' RQ prefix: RQ_KEY_PREFIX set, and these instances only."""
    urls, masters = group_values(instances)
    dropped = {env_name(n) for n in NOT_PASSED + (() if masters else SENTINEL_ONLY)}
    env = {k: v for k, v in environ.items() if k not in dropped}
    env["RQ_KEY_PREFIX"] = instances[0].prefix
    env.update({env_name("redis_url"): urls} if urls else {})
    env.update({env_name("sentinel_master"): masters} if masters else {})
    return env


def groups(settings: Settings) -> list[tuple[str, tuple[InstanceConfig, ...]]]:
    """(RQ prefix, instances) of each child: one per other RQ prefix, or, with process_per_instance, one per
    instance after the first (which the front serves itself)."""
    _, by_other_prefix = by_prefix(env_name("redis_url"), settings.instances, rq_key_prefix())
    if settings.process_per_instance:
        return [(instance.prefix, (instance,)) for instance in settings.instances[1:]]
    return list(by_other_prefix.items())


def plan(settings: Settings, environ: Mapping[str, str]) -> Children | None:
    """The children `settings` need (None when this process serves every instance), not started."""
    members = groups(settings)
    if not members:
        return None
    others = dict.fromkeys(prefix for prefix, _ in members if prefix != rq_key_prefix())
    if others and not rq_reads_prefix():  # a sidecar started with another RQ_KEY_PREFIX would still read `rq:` keys
        raise SettingsError(
            f"{env_name('redis_url')}: instances under other RQ key prefixes ({', '.join(others)}) need rq 3.0 or "
            "later, the first RQ to read RQ_KEY_PREFIX"
        )
    directory = tempfile.mkdtemp(prefix="rqscope-children-")  # mode 0700: no other user reaches the sockets
    children = [
        Child(prefix, instances, os.path.join(directory, f"{index}.sock"))
        for index, (prefix, instances) in enumerate(members)
    ]
    names = ",".join(i.name for i in settings.instances)
    # a child's alerts link to the dashboard on-call engineers reach: the front's, not the child's socket
    environ = {**environ, env_name("front_instances"): names, env_name("public_url"): settings.dashboard_url}
    timeout = settings.redis_connect_timeout + settings.redis_timeout + 1.0
    return Children(secrets.token_urlsafe(32), directory, children, environ, timeout)
