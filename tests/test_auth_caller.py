"""Anonymous access means a loopback caller, not a loopback bind: `rqscope serve` under gunicorn with a
real Redis, reached directly, through forwarding headers, from a non-loopback address and with foreign
Host headers (DNS rebinding). Also the sidecar helpers the other test_auth_* modules share."""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis, free_port
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import enqueue
from rqscope.web import create_app
from werkzeug.security import generate_password_hash

from tests.helpers import http_status, rqscope_command, spawn, stop, wait_for

pytestmark = pytest.mark.redis

TOKEN = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
PASSWORD = "correct horse battery"
USERS = f"ops:operator:{generate_password_hash(PASSWORD)},watcher:viewer:{generate_password_hash(PASSWORD)}"
SECRET_ARG = "secret-argument-7c1d"


@dataclass
class Sidecar:
    """A running `rqscope serve`: its URL, port and combined log."""

    url: str
    port: int
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def open(self, method: str, path: str, base: str | None = None, **kwargs: object) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", 10)
        return requests.request(method, (base or self.url) + path, **kwargs)  # type: ignore[arg-type]

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return self.open("GET", path, **kwargs)

    def post(self, path: str, **kwargs: object) -> requests.Response:
        return self.open("POST", path, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def sidecar(
    redis_url: str, env: dict[str, str] | None = None, *args: str, host: str = "127.0.0.1", workers: int = 1
) -> Iterator[Sidecar]:
    """`rqscope serve` on a free port with the given RQSCOPE_* variables, stopped by pid afterwards."""
    port = free_port()
    full_env = {
        "RQSCOPE_REDIS_URL": redis_url,
        "RQSCOPE_TASK_MODULES": "tests.sample_tasks",
        "RQSCOPE_SNAPSHOT_TTL": "0.1",
        "RQSCOPE_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    log = Path(tempfile.mkstemp(prefix="rqscope-auth-", suffix=".log")[1])
    with log.open("wb") as out:
        command = rqscope_command("serve", "--host", host, "--port", str(port), "--web-workers", str(workers), *args)
        process = spawn(command, full_env, stdout=out, stderr=out)
    served = Sidecar(f"http://127.0.0.1:{port}", port, log)
    try:
        wait_for(lambda: process.poll() is not None or http_status(served.url + "/healthz") == 200, timeout=30)
        assert process.poll() is None, served.output()
        yield served
    finally:
        stop(process)
        log.unlink(missing_ok=True)


def local_address() -> str | None:
    """This machine's address on its default route, to reach a sidecar as a non-loopback caller."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("203.0.113.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def sign_in(
    served: Sidecar, headers: dict[str, str] | None = None, next_path: str = "/", **form: str
) -> tuple[requests.Session, requests.Response]:
    """A browser-like session that fetched the sign-in form and posted `form` with its CSRF token."""
    browser = requests.Session()
    browser.headers.update(headers or {})
    page = browser.get(served.url + "/login", timeout=10)
    assert page.status_code == 200, page.text[:300]
    plain_http(browser)
    response = browser.post(
        served.url + "/login",
        data={"csrf_token": csrf_of(page.text), "next": next_path, **form},
        allow_redirects=False,
        timeout=10,
    )
    plain_http(browser)
    return browser, response


def plain_http(browser: requests.Session) -> None:
    """Send Secure cookies over this plain connection too: here the test plays the TLS-terminating proxy."""
    for cookie in browser.cookies:
        cookie.secure = False


@pytest.fixture(scope="module")
def open_sidecar(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    """No credentials, bound to 127.0.0.1: the default `rqscope serve`."""
    with sidecar(redis_server.url) as served:
        yield served


def test_a_rebinding_host_is_refused_before_any_read_or_write(open_sidecar: Sidecar, real_redis: Redis) -> None:
    job = enqueue("t_ok", SECRET_ARG, connection=real_redis)
    rebinding = {"Host": f"attacker.example:{open_sidecar.port}", "Sec-Fetch-Site": "same-origin"}
    created = open_sidecar.post("/api/silences", headers=rebinding, json={"matchers": {"queue": "default"}})
    assert created.status_code == 400 and "RQSCOPE_ALLOWED_HOSTS" in created.json()["error"]
    read = open_sidecar.get(f"/api/jobs/{job.id}", headers=rebinding)
    assert read.status_code == 400 and SECRET_ARG not in read.text
    for path in ("/", "/healthz", "/metrics", "/login", f"/api/tasks/{job.id}"):
        assert open_sidecar.get(path, headers=rebinding).status_code == 400, path
    assert real_redis.keys("rqscope:silence*") == [] and real_redis.xlen("rqscope:audit") == 0
    for host in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST."):  # the loopback names, any case, a trailing dot
        response = open_sidecar.get(f"/api/jobs/{job.id}", headers={"Host": f"{host}:{open_sidecar.port}"})
        assert response.status_code == 200 and SECRET_ARG in response.text, host


FORWARDING = [
    {"X-Forwarded-For": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9;proto=https"},
    {"X-Forwarded-Host": "localhost"},
    {"X-Forwarded-Proto": "https"},
    {"X-Real-IP": "203.0.113.9"},
    {"X-Forwarded": "for=203.0.113.9"},
    {"X-Original-Forwarded-For": "203.0.113.9"},
    {"Fastly-Client-IP": "203.0.113.9"},
    {"X-Envoy-External-Address": "203.0.113.9"},
    {"x-forwarded-port": "443"},  # any case, and any X-Forwarded-* name
    {"X-Forwarded-Anything": "1"},
    {"via": "1.1 proxy"},
]


@pytest.mark.parametrize("header", FORWARDING, ids=lambda h: next(iter(h)))
def test_a_request_relayed_by_a_local_proxy_is_not_anonymous(
    open_sidecar: Sidecar, real_redis: Redis, header: dict[str, str]
) -> None:
    job = enqueue("t_ok", SECRET_ARG, connection=real_redis)
    read = open_sidecar.get(f"/api/jobs/{job.id}", headers=header)
    assert read.status_code == 401 and SECRET_ARG not in read.text
    assert "credentials required" in read.json()["error"] and "RQSCOPE_API_TOKEN" in read.json()["error"]
    write = open_sidecar.post("/api/silences", headers=header, json={"matchers": {"queue": "default"}})
    assert write.status_code == 401 and real_redis.keys("rqscope:silence*") == []
    page = open_sidecar.get("/", headers={**header, "Accept": "text/html"})
    assert page.status_code == 401 and "credentials required" in page.text
    assert open_sidecar.get(f"/api/jobs/{job.id}").status_code == 200  # the same sidecar, asked directly


def test_a_non_loopback_caller_is_refused_on_a_sidecar_without_credentials(redis_server: EmbeddedRedis) -> None:
    address = local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    with sidecar(redis_server.url, {"RQSCOPE_ALLOWED_HOSTS": address}, host="0.0.0.0") as served:
        remote = f"http://{address}:{served.port}"
        refused = served.get("/api/queues", base=remote)
        assert refused.status_code == 401 and "RQSCOPE_API_TOKEN" in refused.json()["error"]
        assert served.post("/api/tasks", base=remote, json={"task": "t_ok"}).status_code == 401
        assert served.get("/healthz", base=remote).status_code == 200  # open, and the address is an allowed Host
        assert served.get("/api/queues", base=remote, headers={"Host": "attacker.example"}).status_code == 400
        assert served.get("/api/queues").status_code == 200  # a loopback caller of the same sidecar


@pytest.fixture(scope="module")
def proxied(redis_server: EmbeddedRedis) -> Iterator[Sidecar]:
    """Behind one TLS-terminating reverse proxy that forwards X-Forwarded-For/-Proto/-Host."""
    env = {
        "RQSCOPE_TRUSTED_PROXIES": "1",
        "RQSCOPE_ALLOWED_HOSTS": "ops.example.com",
        "RQSCOPE_USERS": USERS,
        "RQSCOPE_API_TOKEN": TOKEN,
    }
    with sidecar(redis_server.url, env) as served:
        yield served


def test_behind_a_trusted_proxy_the_cookie_is_secure_over_https_and_the_public_host_is_checked(
    proxied: Sidecar, real_redis: Redis
) -> None:
    via_https = {"X-Forwarded-For": "198.51.100.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "ops.example.com"}
    browser, response = sign_in(proxied, via_https, username="ops", password=PASSWORD)
    assert response.status_code in (302, 303)
    cookie = response.headers["Set-Cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert browser.get(proxied.url + "/api/queues", timeout=10).status_code == 200
    via_http = {**via_https, "X-Forwarded-Proto": "http"}
    _, plain = sign_in(proxied, via_http, username="ops", password=PASSWORD)
    assert plain.status_code in (302, 303) and "Secure" not in plain.headers["Set-Cookie"]
    foreign = {**via_https, "X-Forwarded-Host": "attacker.example"}
    assert proxied.get("/login", headers=foreign).status_code == 400
    assert proxied.get("/api/queues", headers={**via_https, "Host": "localhost"}).status_code == 401
    # a client's own X-Forwarded-Prefix, passed through by the proxy, moves no link or redirect off the site
    prefixed = proxied.get(
        "/", headers={**via_https, "X-Forwarded-Prefix": "//evil.example", "Accept": "text/html"}, allow_redirects=False
    )
    assert prefixed.status_code in (302, 303) and "evil.example" not in prefixed.headers["Location"]


# The same rules through the app factory, for the cases a socket cannot produce from this machine.


def local(settings: Settings, redis: Redis, remote: str = "127.0.0.1") -> FlaskClient:
    client = create_app(settings, redis=redis, testing=True).test_client()
    client.environ_base["REMOTE_ADDR"] = remote
    return client


@pytest.mark.parametrize(
    "remote, expected",
    [("127.0.0.1", 200), ("127.8.9.1", 200), ("::1", 200), ("10.0.0.7", 401), ("::ffff:10.0.0.7", 401), ("", 401)],
)
def test_only_a_loopback_remote_address_is_anonymous(
    settings: Settings, redis: Redis, remote: str, expected: int
) -> None:
    assert local(settings, redis, remote).get("/api/queues").status_code == expected


@pytest.mark.parametrize(
    "host, expected",
    [
        ("localhost", 200),
        ("localhost:9190", 200),
        ("127.0.0.1:1", 200),
        ("[::1]:9190", 200),
        ("[::1]", 200),
        ("ops.internal:9190", 200),
        ("OPS.internal", 200),
        ("attacker.example", 400),
        ("localhost.attacker.example", 400),
        ("127.0.0.1.nip.io", 400),
        ("localhost:bad", 400),
        ("[::1", 400),
        ("", 400),
        ("0.0.0.0", 400),
        ("localhost@attacker.example", 400),
        ("::1", 400),
    ],
)
def test_the_host_allow_list(settings: Settings, redis: Redis, host: str, expected: int) -> None:
    client = local(settings.replace(allowed_hosts=("ops.internal",)), redis)
    assert client.get("/healthz", environ_overrides={"HTTP_HOST": host}).status_code == expected


def test_the_bound_address_is_an_allowed_host(settings: Settings, redis: Redis) -> None:
    client = local(settings.replace(host="10.1.2.3", api_token=TOKEN), redis)
    assert client.get("/healthz", environ_overrides={"HTTP_HOST": "10.1.2.3:9190"}).status_code == 200
    assert client.get("/healthz", environ_overrides={"HTTP_HOST": "10.1.2.4:9190"}).status_code == 400
