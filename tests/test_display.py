"""The restricted display decoder: plain types come back, anything else is named, never built or run."""

from __future__ import annotations

import collections
import datetime
import decimal
import os
import pickle
import uuid
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
from rqscope.monitor.display import MAX_ITEMS, DisplayError, Opaque, loads, plain
from rqscope.monitor.jobview import inflate

PLAIN = {
    "when": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    "day": datetime.date(2024, 5, 1),
    "span": datetime.timedelta(seconds=90),
    "price": decimal.Decimal("9.99"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "raw": b"\x00\xff",
    "buffer": bytearray(b"ab"),
    "tags": {"a"},
    "frozen": frozenset({1}),
    "ordered": collections.OrderedDict(a=1),
    "counts": collections.Counter(a=2),
    "queue": collections.deque([1, 2]),
    "pair": (1, 2.5, None, True),
    "complex": 1j,
}


class Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_types_decode_as_themselves_in_every_protocol(protocol: int) -> None:
    assert loads(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_reduce_payload_is_named_and_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    value = loads(pickle.dumps([Marker(marker), Point(3)], protocol=protocol))
    assert not marker.exists()
    assert [repr(v) for v in value] == ["<posix.system object>", f"<{__name__}.Point object>"]
    assert all(isinstance(v, Opaque) for v in value) and not hasattr(value[1], "x")


def test_configured_types_are_built() -> None:
    data = pickle.dumps(Fraction(1, 3))
    assert repr(loads(data)) == "<fractions.Fraction object>"
    assert loads(data, ["fractions.Fraction"]) == Fraction(1, 3)
    assert loads(data, ["fractions:Fraction"]) == Fraction(1, 3)


def test_python_2_names_map_to_the_allowed_set() -> None:
    assert loads(b"c__builtin__\nset\n((lp0\nI1\natp1\nRp2\n.") == {1}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x80\x05\x95",
        pickle.dumps(1)[:-1],
        b"cbuiltins\nbytes\n(I99999999999\ntR.",
        b"c_codecs\nencode\n(Vx\nVrot13\ntR.",
    ],
)
def test_garbage_and_refused_shapes_raise_display_error(data: bytes) -> None:
    with pytest.raises(DisplayError):
        loads(data)


def test_a_compression_bomb_is_refused_before_it_is_inflated() -> None:
    with pytest.raises(DisplayError):
        inflate(zlib.compress(b"\x00" * (64 << 20)))
    assert inflate(b"not compressed") == b"not compressed"  # RQ reads such data as the pickle itself


def test_shared_references_cannot_multiply_what_is_shown() -> None:
    nested: list[object] = []
    for _ in range(60):
        nested = [nested, nested]  # 2**60 leaves when walked naively
    shown = plain(loads(pickle.dumps(nested)))
    assert len(repr(shown)) < 20 * MAX_ITEMS


def test_plain_makes_json_safe_values() -> None:
    shown = plain({1: float("nan"), (1, 2): "\udcff", "b": b"x" * 20_000})
    assert shown["1"] == "nan" and shown["[1, 2]"] == "\\udcff" and len(shown["b"]) < 10_100
