"""Shared fixtures: fakeredis for unit tests, a throwaway redis-server for integration tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import rqscope.tasks.examples  # noqa: F401 - registers the example tasks
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.settings import Settings
from rqscope.web import create_app

import tests.sample_tasks  # noqa: F401 - registers the test tasks

REPO = Path(__file__).resolve().parent.parent
DEBIAN_REDIS = "/usr/bin/redis-server"


def redis_binary() -> str | None:
    if os.access(DEBIAN_REDIS, os.X_OK):
        return DEBIAN_REDIS
    return shutil.which("redis-server")


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url="redis://127.0.0.1:1/0", task_modules=("rqscope.tasks.examples", "tests.sample_tasks"))


@pytest.fixture
def app(settings: Settings, redis: Redis) -> Flask:
    return create_app(settings, redis=redis, testing=True)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    binary = redis_binary()
    if binary is None:
        pytest.fail("redis-server is not installed; run .ci/run or apt-get install redis-server")
    server = EmbeddedRedis(binary=binary, extra_args=("--enable-debug-command", "local"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def real_redis(redis_server: EmbeddedRedis) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=2)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def real_settings(redis_server: EmbeddedRedis) -> Settings:
    return Settings(redis_url=redis_server.url, task_modules=("rqscope.tasks.examples", "tests.sample_tasks"))


@pytest.fixture
def real_app(real_settings: Settings, real_redis: Redis) -> Flask:
    return create_app(real_settings, testing=True)


@pytest.fixture
def real_client(real_app: Flask) -> FlaskClient:
    return real_app.test_client()
