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

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_schema(redis_server: EmbeddedRedis):  # type: ignore[no-untyped-def]
    client = Redis.from_url(redis_server.url)
    client.flushall()
    for i in range(3):
        enqueue("t_ok", i, connection=client)
    settings = Settings(
        redis_url=redis_server.url, task_modules=("tests.sample_tasks", "rqscope.tasks.examples"), api_token=TOKEN
    )
    app = create_app(settings, testing=True)
    # every check runs; one allowance: a task's arguments are checked against its Python signature, and 'at'
    # against the clock, which no JSON schema states, so a schema-valid enqueue body may earn a 400 naming the problem
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {
            "operations": [
                {
                    "include-name": name,
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403"]}},
                }
                for name in ("POST /api/tasks", "POST /api/tasks/batch")  # and the clock: 'at' may be past
            ]
        }
    )
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app, headers=AUTH, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.redis
@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers=AUTH)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}"
    case.validate_response(response, headers=AUTH)  # every check in schemathesis's suite
