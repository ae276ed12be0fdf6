"""Merging the expositions of several sidecar processes into one /metrics: valid, complete, byte-exact."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from rqscope.monitor.exposition import Rows, render_labelled
from rqscope.monitor.exposition_merge import merge, merge_parts
from rqscope.monitor.families import snapshot_families
from rqscope.monitor.snapshot import JOB_STATES, QueueState, RedisState, Snapshot, WorkerState
from rqscope.tasks.metrics import BUCKET_LABELS, OUTCOMES, TaskStats
from rqscope.tasks.procstats import ProcessSample

PROMTOOL = "/usr/bin/promtool"
HOSTILE = ('q"\\\n<b>', "50%s %d", "x" * 5000, "caf\udcff\udcfe", "é\\n", "")


def snapshot(queues: list[str], workers: int = 4, hosts: int = 2, tasks: int = 2) -> Snapshot:
    """A Snapshot as the reader would build it, with every kind of family filled."""
    registries = {state: i for i, state in enumerate(JOB_STATES[1:])}
    queue_states = tuple(QueueState(name, 3, registries, None, 1.5, i % 2 == 0) for i, name in enumerate(queues))
    worker_states = tuple(
        WorkerState(
            name=f"w{i}",
            hostname=f"host-{i % hosts}",
            pid=i,
            state="busy" if i % 3 else "idle",
            queues=(queues[i % len(queues)],),
            current_job=None,
            heartbeat_age=2.0,
            birth_text=None,
            successful_jobs=10,
            failed_jobs=1,
            working_seconds=5.0,
            current_job_seconds=0.5,
            dead=i % 50 == 0,
        )
        for i in range(workers)
    )
    processes = tuple(
        ProcessSample("worker", f"host-{i % hosts}", i, f"w{i}", 1 << 20, 3.5, 1, 2, 10, 0.0, i % 2)
        for i in range(workers)
    )
    stats = {}
    for t in range(tasks):
        for queue in queues[:25]:
            entry = TaskStats(dict.fromkeys(OUTCOMES, 7), 12.5, dict.fromkeys(BUCKET_LABELS, 1), 40)
            stats[(f"app.tasks.job_{t}", queue)] = entry
    info = {"connected_clients": 5.0, "maxclients": 10000.0, "used_memory": 2.5e6}
    return Snapshot(
        taken_at=0.0,
        redis=RedisState(up=True, info=info),
        queues=queue_states,
        workers=worker_states,
        processes=processes,
        tasks=stats,
        paused=frozenset({queues[0], "gone"}),
    )


def samples(text: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return [
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    ]


def headers(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if line.startswith((b"# HELP ", b"# TYPE "))]


def extra(name: str) -> list[Metric]:
    """A family only one part has: a counter with created timestamps, so it also brings an `_created` block."""
    counter = CounterMetricFamily(name, "Only here", labels=["queue"])
    counter.add_metric(["a"], 3.0, created=1700000000.0)
    return [counter]


def two_parts() -> tuple[bytes, bytes]:
    east = render_labelled([("east", [*snapshot_families(snapshot(["default", "high"])), *extra("rqscope_east_only")])])
    down = Snapshot(taken_at=0.0, redis=RedisState(up=False))
    west = render_labelled(
        [
            ("west\n%s", snapshot_families(snapshot(["default", "low", *HOSTILE], tasks=1))),
            ("gone", snapshot_families(down)),
        ]
    )
    return east, west


def test_merge_is_the_union_of_the_parts_with_each_header_once() -> None:
    east, west = two_parts()
    merged = merge([east, west])
    assert sorted(samples(merged)) == sorted(samples(east) + samples(west))
    lines = headers(merged)
    assert len(lines) == len(set(lines)) == len(set(headers(east)) | set(headers(west)))
    assert b"# HELP rqscope_east_only_created Only here" in lines
    # a family both parts have: east's samples, then west's, contiguous under one header
    block = merged.split(b"# TYPE rqscope_queue_latency_seconds gauge\n")[1].split(b"# HELP")[0]
    assert block.startswith(b'rqscope_queue_latency_seconds{queue="default",redis="east"} 1.5\n')
    assert block.count(b'redis="east"') == 2 and block.count(b'redis="west\\n%s"') == 2 + len(HOSTILE)


def test_promtool_check_metrics_is_clean_on_the_merge() -> None:
    if shutil.which(PROMTOOL) is None:
        pytest.skip("promtool is not installed")
    east, west = two_parts()
    for parts in ([east, west], [west, east, west]):
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=merge(parts), capture_output=True, timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_hostile_label_values_survive_byte_identically() -> None:
    east, west = two_parts()
    merged = merge([east, west])
    west_lines = [line for line in west.splitlines() if not line.startswith(b"#")]
    assert all(line in merged.splitlines() for line in west_lines)
    values = {dict(labels).get("queue") for _, labels, _ in samples(merged)}
    # as metric labels: bytes that are not UTF-8 as \xff escapes, each backslash doubled (names.metric_label)
    assert {'q"\\\\\n<b>', "50%s %d", "x" * 5000, "caf\\xff\\xfe", "é\\\\n", ""} <= values


def test_part_that_is_not_utf8_is_kept_as_bytes() -> None:
    raw = b'# HELP g Raw\n# TYPE g gauge\ng{queue="\xff\xfe"} 1.0\n'
    other = b'# HELP g Raw\n# TYPE g gauge\ng{queue="ok"} 2.0\n'
    assert merge([raw, other]) == raw + b'g{queue="ok"} 2.0\n'


def test_type_conflict_keeps_the_first_type_and_drops_the_other_parts_samples() -> None:
    gauge = GaugeMetricFamily("rqscope_jobs", "Jobs", labels=["queue"])
    gauge.add_metric(["a"], 1.0)
    counter = Rows("rqscope_jobs", "Jobs", "counter", ("queue",))
    counter.add(("a",), 2.0)
    first = render_labelled([("east", [gauge])])
    other = b"# HELP rqscope_jobs Jobs\n# TYPE rqscope_jobs counter\nrqscope_jobs 2.0\nrqscope_jobs 3.0\n\n"
    result = merge_parts([first, other, render_labelled([("south", [gauge])])])
    assert samples(result.body) == [
        ("rqscope_jobs", (("queue", "a"), ("redis", "east")), 1.0),
        ("rqscope_jobs", (("queue", "a"), ("redis", "south")), 1.0),
    ]
    assert [(c.family, c.part, c.kept_type, c.dropped_type, c.samples) for c in result.conflicts] == [
        ("rqscope_jobs", 1, "gauge", "counter", 2)
    ]
    # rendered as a counter its HELP is rqscope_jobs_total: another family, merged alongside
    assert b"# TYPE rqscope_jobs_total counter" in merge([first, render_labelled([("west", [counter])])])


def test_empty_and_comment_only_parts_are_harmless() -> None:
    east, _ = two_parts()
    assert merge([b"", east, b"# a comment\n\n  # indented\n", b""]) == east
    assert merge([]) == b"" and merge([b"", b"\n# x\n"]) == b""


def test_one_well_formed_part_comes_back_unchanged() -> None:
    east, west = two_parts()
    assert merge([east]) == east
    assert merge([west]) == west
    # not well-formed: a blank line and a comment inside a block go, and the last line gets its newline
    assert merge([b"# HELP a A\n# TYPE a gauge\n\na 1\n# note\na 2"]) == b"# HELP a A\n# TYPE a gauge\na 1\na 2\n"


def test_a_family_split_within_one_part_is_made_contiguous() -> None:
    part = b"# TYPE a gauge\na 1\n# HELP b B\n# TYPE b gauge\nb 1\n# HELP a A\n# TYPE a gauge\na 2\n"
    assert merge([part]) == b"# HELP a A\n# TYPE a gauge\na 1\na 2\n# HELP b B\n# TYPE b gauge\nb 1\n"


def test_two_realistic_parts_merge_fast() -> None:
    big = snapshot([f"queue-{i:03d}" for i in range(500)], workers=1000, hosts=100, tasks=20)
    parts = [render_labelled([(name, snapshot_families(big))]) for name in ("a", "b")]
    assert sum(map(len, parts)) > 2_000_000
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        merged = merge(parts)
        timings.append(time.perf_counter() - started)
    assert len(merged.splitlines()) == sum(len(p.splitlines()) for p in parts) - len(headers(parts[1]))
    assert min(timings) < 0.25  # a scrape's budget; the merge itself takes a few milliseconds


def test_a_row_is_rendered_from_its_labels_and_value_of_this_scrape_whatever_the_last_one_was() -> None:
    def scrape(depths: dict[str, float], instance: str = "east") -> bytes:
        family = Rows("rqscope_queue_jobs", "Jobs", "gauge", ("queue", "state"))
        for queue, depth in depths.items():
            family.add((queue, "queued"), depth)
        return render_labelled([(instance, [family])])

    first = scrape({"a": 1, "b": 2})
    assert scrape({"a": 1, "b": 2}) == first  # the same rows: the same bytes
    changed = scrape({"a": 1, "b": 3, "c\n": 0.5})
    assert b'rqscope_queue_jobs{queue="b",redis="east",state="queued"} 3.0\n' in changed
    assert b'rqscope_queue_jobs{queue="c\\n",redis="east",state="queued"} 0.5\n' in changed
    assert b"} 2.0" not in changed
    # another instance's rows of the same family are its own, with its own label
    assert b'redis="west"' in scrape({"a": 1, "b": 2}, "west") and b'redis="east"' not in scrape({"a": 1}, "west")
    assert scrape({"b": 2}) == first.replace(b'rqscope_queue_jobs{queue="a",redis="east",state="queued"} 1.0\n', b"")
