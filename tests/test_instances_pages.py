"""Pages with several Redis instances: the header's switcher, titles, /instances, and links that stay scoped."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rqscope.monitor.names import encode_segment
from rqscope.tasks.registry import enqueue
from rqscope.web.app import create_app

from tests import test_instances
from tests.test_instances import _fill, _sleeping
from tests.test_retry import make_failed

pytestmark = pytest.mark.redis
HTML = {"Accept": "text/html"}
OPERATOR = "operator-token-0123456789ab"
VIEWER = "viewer-token-0123456789ab"
HOSTILE = "a/b %2F..\n<script>x</script>"
west_server, west, both = test_instances.west_server, test_instances.west, test_instances.both  # shared fixtures


class Elements(HTMLParser):
    """Every start tag's attributes, and the text inside <title>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.title = ""
        self._in_title = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def attr(self, name: str, value: str | None = None) -> list[dict[str, str]]:
        return [a for _, a in self.tags if name in a and (value is None or a[name] == value)]


def page(client: FlaskClient, path: str, status: int = 200) -> Elements:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, (path, response.status_code)
    return Elements(response.get_data(as_text=True))


def switch_link(found: Elements, name: str) -> str:
    (link,) = found.attr("data-instance-switch", name)
    return link["href"]


def test_one_instance_has_no_switcher_and_keeps_its_titles(real_client: FlaskClient, real_redis: Redis) -> None:
    found = page(real_client, "/")
    assert found.title == "Overview · rqscope"
    assert not found.attr("data-instance-switch") and not found.attr("data-instance-current")
    assert "/instances" not in [a.get("href") for a in found.attr("href")]
    assert not found.attr("data-redis")


def test_the_switcher_opens_the_same_page_on_the_other_instance(both: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    client = both.test_client()
    on_west = page(client, "/queues/default/queued?redis=west&order=oldest&q=x%20y")
    assert on_west.title == "default · queued · west · rqscope"
    # the first instance is the default: its URL drops redis= and keeps every other argument
    assert switch_link(on_west, "east") == "/queues/default/queued?order=oldest&q=x+y"
    assert not on_west.attr("data-instance-switch", "west")  # the current one is named, not linked
    on_east = page(client, switch_link(on_west, "east"))
    assert on_east.title == "default · queued · east · rqscope"
    assert switch_link(on_east, "west") == "/queues/default/queued?order=oldest&q=x+y&redis=west"
    assert page(client, switch_link(on_east, "west")).title == on_west.title


def test_a_hostile_queue_name_keeps_its_path_and_stays_text(both: Flask, real_redis: Redis, west: Redis) -> None:
    make_failed(west, 1, queue=HOSTILE)
    segment = encode_segment(HOSTILE)
    response = both.test_client().get(f"/queues/{segment}?redis=west", headers=HTML)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<script>x" not in html
    found = Elements(html)
    assert switch_link(found, "east") == f"/queues/{segment}"
    assert found.title == f"Queue {HOSTILE} · west · rqscope"  # the parser unescaped what the page escaped
    window = [a["href"] for a in found.attr("data-window-choice")]
    assert window and all(href.startswith(f"/queues/{segment}?redis=west&window=") for href in window)


def test_url_for_options_in_the_query_are_kept_as_plain_arguments(both: Flask) -> None:
    found = page(both.test_client(), "/workers?redis=west&_external=1&_scheme=javascript&_anchor=x")
    assert switch_link(found, "east") == "/workers?_external=1&_scheme=javascript&_anchor=x"


def test_every_title_names_the_instance(both: Flask, real_redis: Redis, west: Redis) -> None:
    client = both.test_client()
    titled = [
        ("/", "Overview"),
        ("/workers", "Workers"),
        ("/tasks", "Tasks"),
        ("/alerts", "Alerts"),
        ("/cron", None),
        ("/redis", None),
        ("/audit", None),
        ("/instances", "All instances"),
    ]
    for path, title in titled:
        east, on_west = page(client, path).title, page(client, path + "?redis=west").title
        assert east.endswith(" · east · rqscope") and on_west.endswith(" · west · rqscope"), path
        assert east.removesuffix(" · east · rqscope") == on_west.removesuffix(" · west · rqscope")
        assert title is None or on_west == f"{title} · west · rqscope"


def test_get_forms_and_relative_links_keep_the_instance(both: Flask, real_redis: Redis, west: Redis) -> None:
    client = both.test_client()
    make_failed(west, 1)
    listing = page(client, "/queues/default/failed?redis=west")
    hidden = [a for a in listing.attr("name", "redis") if a.get("type") == "hidden"]
    assert [a["value"] for a in hidden] == ["west", "west"]  # the job id search and the list's filters
    assert listing.attr("data-redis", "west")  # what the script adds to every request it makes
    sorts = [a["href"] for a in page(client, "/tasks?redis=west").attr("href") if "sort=" in a["href"]]
    assert sorts and all(href.startswith("/tasks?redis=west&sort=") for href in sorts)
    on_east = page(client, "/queues/default/failed")
    assert not on_east.attr("name", "redis") and not on_east.attr("data-redis")


def test_a_job_on_the_other_instance_is_one_click_away(both: Flask, real_redis: Redis, west: Redis) -> None:
    job = enqueue("t_ok", 1, connection=real_redis)
    client = both.test_client()
    missing = page(client, f"/jobs/{job.id}?redis=west", status=404)
    assert switch_link(missing, "east") == f"/jobs/{job.id}"
    assert client.get(switch_link(missing, "east"), headers=HTML).status_code == 200


def test_instances_page_groups_each_instances_figures(both: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    make_failed(west, 3)
    client = both.test_client()
    html = client.get("/instances", headers=HTML).get_data(as_text=True)
    found = Elements(html)
    assert [a["data-instance"] for a in found.attr("data-up")] == ["east", "west"]
    assert all(a["data-up"] == "true" for a in found.attr("data-up"))
    east, west_part = html.split('data-instance="west"')
    figures = re.compile(r'data-figure="(\w+)">(\d+)<')
    assert dict(figures.findall(east)) == {"queues": "1", "queued": "2", "failed": "0", "workers": "0"}
    assert dict(figures.findall(west_part)) == {"queues": "1", "queued": "5", "failed": "3", "workers": "0"}
    assert [a["href"] for a in found.attr("data-instance-link")] == ["/", "/?redis=west"]
    assert 'href="/queues/default?redis=west"' in west_part and 'href="/queues/default/failed?redis=west"' in west_part
    assert 'href="/queues/default"' in east
    assert found.attr("href", "/instances")  # the header links it
    assert page(client, "/").attr("href", "/instances")


def test_a_sleeping_instance_is_unreachable_and_delays_neither_page(
    both: Flask, real_redis: Redis, west: Redis
) -> None:
    _fill(real_redis, west)
    client = both.test_client()
    page(client, "/instances")  # connections made, templates compiled: what follows times the reads only
    thread = _sleeping(west, 5)
    try:
        started = time.monotonic()
        html = client.get("/instances", headers=HTML).get_data(as_text=True)
        took = time.monotonic() - started
        east = page(client, "/")
        east_took = time.monotonic() - started - took
    finally:
        thread.join(10)
    found = Elements(html)
    assert {a["data-instance"]: a["data-up"] for a in found.attr("data-up")} == {"east": "true", "west": "false"}
    west_part = html.split('data-instance="west"')[1]
    assert "unreachable" in west_part and "data-figure" not in west_part
    assert 'data-figure="queued">2<' in html.split('data-instance="west"')[0]
    assert took < 3.0, f"/instances waited {took:.1f} s for a sleeping instance"  # west sleeps 5 s
    assert east_took < 1.0 and switch_link(east, "west") == "/?redis=west"


@pytest.fixture
def secured(both: Flask) -> Flask:
    settings = both.extensions["rqscope"].settings.replace(api_token=OPERATOR, viewer_token=VIEWER, host="0.0.0.0")
    return create_app(settings, testing=True)


def test_a_viewer_reads_every_instance_and_changes_none(secured: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    [job_id] = make_failed(west, 1)
    client = secured.test_client()
    viewer = {**HTML, "Authorization": f"Bearer {VIEWER}"}
    assert client.get("/instances", headers=HTML).status_code in (302, 401)  # signed in or nothing
    signin = page(client, "/login?redis=west")
    assert not signin.attr("data-instance-switch") and not signin.attr("href", "/instances")  # nothing to switch yet
    listing = client.get("/instances", headers=viewer)
    assert listing.status_code == 200 and 'data-figure="queued">5<' in listing.get_data(as_text=True)
    on_west = client.get("/?redis=west", headers=viewer).get_data(as_text=True)
    assert 'data-instance-switch="east"' in on_west and "/queues/default/pause" not in on_west
    for path in (f"/jobs/{job_id}/retry?redis=west", "/queues/default/failed/bulk?redis=west"):
        assert client.post(path, headers=viewer, data={"ids": [job_id]}).status_code == 403, path
    assert west.zcard("rq:failed:default") == 1


def test_no_get_changes_any_instance(secured: Flask, real_redis: Redis, west: Redis) -> None:
    _fill(real_redis, west)
    [job_id] = make_failed(west, 1)
    client = secured.test_client()
    operator = {**HTML, "Authorization": f"Bearer {OPERATOR}"}
    values = {
        "queue": "default",
        "job_id": job_id,
        "name": "default",
        "state_name": "failed",
        "task": "t_ok",
        "action": "retry",
        "registry": "failed",
        "silence_id": "x",
    }
    paths = []
    for rule in secured.url_map.iter_rules():
        if "GET" in (rule.methods or ()) and rule.endpoint != "static":
            paths.append(re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), rule.rule))
    assert "/instances" in paths
    client.get("/?redis=west", headers=operator)  # the session key, made once, is not a change of RQ's data
    digests = [r.execute_command("DEBUG", "DIGEST") for r in (real_redis, west)]
    for path in paths:
        for query in ("", "?redis=west"):
            assert client.get(path + query, headers=operator).status_code < 500, path + query
    assert [r.execute_command("DEBUG", "DIGEST") for r in (real_redis, west)] == digests
