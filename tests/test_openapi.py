"""schemathesis over /api/openapi.json against the app on a real Redis: no 5xx, responses as described."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from redis import Redis
from rqscope.monitor.embedded import EmbeddedRedis
from rqscope.monitor.settings import Settings
from rqscope.tasks.registry import enqueue
from rqscope.web import create_app
from schemathesis.specs.openapi.checks import positive_data_acceptance


@pytest.fixture(scope="module")
def api_schema(redis_server: EmbeddedRedis):  # type: ignore[no-untyped-def]
    client = Redis.from_url(redis_server.url)
    client.flushall()
    for i in range(3):
        enqueue("t_ok", i, connection=client)
    settings = Settings(redis_url=redis_server.url, task_modules=("tests.sample_tasks", "rqscope.tasks.examples"))
    app = create_app(settings, testing=True)
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.redis
@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"
    # arguments are checked against each task's Python signature, which no JSON schema can state, so a
    # schema-valid body may still earn a 400 naming the problem; every other check applies
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
