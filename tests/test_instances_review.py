"""Several Redis instances: the selected instance's Redis page, isolation under concurrent probes, secrets in errors."""

from __future__ import annotations

import threading

import pytest
from flask import Flask
from redis import Redis
from rqscope.monitor.errors import SettingsError
from rqscope.monitor.settings import from_env

from tests.test_instances import _sleeping, both, west, west_server  # noqa: F401 - fixtures shared with that module

pytestmark = pytest.mark.redis


def test_the_redis_page_shows_the_selected_instances_info(both: Flask, real_redis: Redis, west: Redis) -> None:  # noqa: F811
    west.mset({f"k{i}": i for i in range(7)})  # east (the first instance) holds no key at all
    client = both.test_client()
    body = client.get("/api/redis?redis=west").get_json()
    assert body["keyspace"].get("db0", {}).get("keys") == 7
    assert client.get("/api/redis").get_json()["keyspace"].get("db0") is None


def test_a_paused_instance_does_not_make_the_other_unready_under_concurrent_probes(
    both: Flask,  # noqa: F811
    real_redis: Redis,
    west: Redis,  # noqa: F811
) -> None:
    # west answers nothing; 24 probes arrive together, as from several kubelets and load balancers
    sleeper = _sleeping(west, 6)
    start = threading.Barrier(24)
    answers: list[dict[str, object]] = []

    def probe() -> None:
        client = both.test_client()
        start.wait()
        answers.append(client.get("/readyz").get_json())

    try:
        probes = [threading.Thread(target=probe) for _ in range(24)]
        for thread in probes:
            thread.start()
        for thread in probes:
            thread.join(30)
    finally:
        sleeper.join(15)
    assert len(answers) == 24
    east = [answer["instances"]["east"] for answer in answers]  # type: ignore[index]
    assert east == ["ok"] * 24, f"{east.count('ok')} of 24 probes saw the healthy east instance as reachable"


@pytest.mark.parametrize("password", ["Sekr1t,Pa55word", "Sekr1t#Pa55word"])
def test_no_part_of_a_password_appears_in_an_instance_error(password: str) -> None:
    try:
        from_env({"RQSCOPE_REDIS_URL": f"redis://:{password}@127.0.0.1:6379/0"})
    except SettingsError as error:
        assert "Sekr1t" not in str(error) and "Pa55word" not in str(error), str(error)
