"""Queue and worker names as RQ stores them: any bytes. One exact form for keys, one safe form to show.

A name read from Redis is decoded with surrogateescape, so bytes that are not UTF-8 survive as lone
surrogates and `exact()` gives the key's bytes back. Text that leaves the process (HTML, metric
labels, notifications, a terminal) goes through `display()` or `label()` first: no encoder accepts
a lone surrogate. In a URL path a name is one percent-encoded segment (`encode_segment`); the names
that browsers would drop ('', '.', '..') are written with their dots encoded and a ';' after them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, unquote_to_bytes

T = TypeVar("T")
KEPT_NAME_LENGTH = 256
MARKER = ";"
DOT_NAMES = ("", ".", "..")


def exact(name: str) -> bytes:
    """A name's exact bytes for a Redis key."""
    return name.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def as_name(value: Any) -> str:
    """A name read from Redis, exact: its bytes come back with `exact()`."""
    return from_bytes(value) if isinstance(value, bytes) else str(value)


def from_json(text: str) -> str:
    """A name read from JSON, which may spell a lone surrogate no byte stands for ("\\ud800"): such a name is
    taken as the UTF-8 bytes Python writes for it, so that it has an exact form like any name read from Redis."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return from_bytes(text.encode("utf-8", "surrogatepass"))
    return text


def display(text: str) -> str:
    """Text without lone surrogates (bytes that are not UTF-8 become U+FFFD), which any encoder accepts."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def label(name: str) -> str:
    """A name as printable text: bytes that are not UTF-8 shown as \\xff escapes."""
    return exact(name).decode("utf-8", "backslashreplace")


def metric_label(name: str) -> str:
    """A name as a metric label value, one per name: bytes that are not UTF-8 as \\xff escapes, and each
    backslash doubled, so that the bytes ff and the four characters `\\xff` give two labels; a lone surrogate
    that stands for no byte (JSON's `\\ud800`) as a \\ud800 escape."""
    if name.isascii() and "\\" not in name:
        return name
    try:
        raw = exact(name)
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte (JSON may spell one): written \ud800
        return "".join(_char_label(char) for char in name)
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _char_label(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:  # U+DC80-U+DCFF stand for the bytes 80-ff (surrogateescape); the others for none
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
    return "\\\\" if char == "\\" else char


def kept_for_short_names(function: Callable[[str], T], count: int) -> Callable[[str], T]:
    """`function` of a name, its results kept for the last `count` names of at most KEPT_NAME_LENGTH characters.

    A scrape names the same queues, workers and hosts as the one before; a longer name (RQ takes 5,000 bytes) is
    worked out at each use, so that names that come and go cannot keep hundreds of MB in every process.
    """
    cached = functools.lru_cache(maxsize=count)(function)

    @functools.wraps(function)
    def call(name: str) -> T:
        return cached(name) if len(name) <= KEPT_NAME_LENGTH else function(name)

    return call


def encode_segment(name: str) -> str:
    if name in DOT_NAMES:
        return "%2E" * len(name) + MARKER
    return quote(exact(name), safe="")


def decode_segment(segment: str) -> str:
    if segment.endswith(MARKER) and (head := unquote_to_bytes(segment[:-1]).decode("latin-1")) in DOT_NAMES:
        return head
    return from_bytes(unquote_to_bytes(segment))
