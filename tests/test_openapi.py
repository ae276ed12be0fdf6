"""schemathesis over /api/openapi.json against the app on a real Redis: no 5xx, responses as described."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from redis import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from monitor.embedded import EmbeddedRedis
from monitor.settings import Settings
from tasks.registry import enqueue
from tests.conftest import redis_binary
from web import create_app

_server = EmbeddedRedis(binary=redis_binary(), extra_args=("--enable-debug-command", "local"))


def _app():  # type: ignore[no-untyped-def]
    _server.start()
    client = Redis.from_url(_server.url)
    for i in range(3):
        enqueue("t_ok", i, connection=client)
    settings_ = Settings(redis_url=_server.url, task_modules=("tests.sample_tasks", "tasks.examples"))
    return create_app(settings_, testing=True)


schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _app())


@pytest.fixture(scope="module", autouse=True)
def stop_redis():  # type: ignore[no-untyped-def]
    yield
    _server.stop()


@pytest.mark.redis
@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"
    # arguments are checked against each task's Python signature, which no JSON schema can state, so a
    # schema-valid body may still earn a 400 naming the problem; every other check applies
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
