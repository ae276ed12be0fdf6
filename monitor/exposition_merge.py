"""Several Prometheus text expositions (0.0.4) merged into one: each family's header once, its samples together.

The parts come from sidecar processes that each render their own instances with `render_labelled`, so a
family can appear in every part. Prometheus wants a family's lines contiguous under one HELP and TYPE.
Sample lines are never parsed or altered: label values may hold escaped newlines, quotes, backslashes
and any bytes, and the merge runs on every scrape, so it only slices the parts between comment lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# the newline before a comment or blank line: the one pass over the bytes, so kept this simple (~1 ns a byte)
_SPECIAL_LINE = re.compile(rb"\n(?=[ \t]*[#\n])")
_SPECIAL_START = re.compile(rb"[ \t]*[#\n]")
_HEADER = re.compile(rb"[ \t]*#[ \t]*(HELP|TYPE)[ \t]+([^ \t\n]+)[ \t]*([^ \t\n]*)")


@dataclass
class Conflict:
    """A part whose TYPE for a family differs from the first part's: its samples of that family were dropped."""

    family: str
    part: int
    kept_type: str
    dropped_type: str
    samples: int = 0


@dataclass
class _Family:
    help: bytes = b""
    type_line: bytes = b""
    type: bytes | None = None
    chunks: list[bytes | memoryview] = field(default_factory=list)


@dataclass(frozen=True)
class Merged:
    """The merged exposition, and the parts' families dropped for a TYPE conflict."""

    body: bytes
    conflicts: tuple[Conflict, ...] = ()


def merge(parts: Iterable[bytes]) -> bytes:
    """The parts as one exposition: families in first-seen order, samples in part order."""
    return merge_parts(parts).body


def merge_parts(parts: Iterable[bytes]) -> Merged:
    """Like `merge`, also telling which parts' samples were dropped for a TYPE that differs from the first."""
    families: dict[bytes | None, _Family] = {}
    conflicts: list[Conflict] = []
    for index, part in enumerate(parts):
        _add_part(families, conflicts, index, bytes(part))
    pieces: list[bytes | memoryview] = []
    for family in families.values():
        pieces.append(family.help)
        pieces.append(family.type_line)
        pieces.extend(family.chunks)
    return Merged(b"".join(pieces), tuple(conflicts))


def _add_part(families: dict[bytes | None, _Family], conflicts: list[Conflict], index: int, part: bytes) -> None:
    if not part:
        return
    if not part.endswith(b"\n"):  # a last line without its newline would run into the next part's first line
        part += b"\n"
    name: bytes | None = None
    family: _Family | None = None
    conflict: Conflict | None = None  # set while this part's block of a family is being dropped
    start = 0  # of the samples not yet taken
    for line_start, line_end in _special_lines(part):
        _take(families, family, conflict, part, start, line_start)
        start = line_end
        header = _HEADER.match(part, line_start, line_end)
        if header is None:
            continue  # a blank line or another comment
        kind, header_name, value = header.groups()
        if header_name != name:
            name, conflict = header_name, None
            family = families.setdefault(name, _Family())
        assert family is not None
        line = part[line_start:line_end]
        if kind == b"HELP":
            family.help = family.help or line
        elif family.type is None:
            family.type, family.type_line = value, line
        elif value != family.type and conflict is None:
            conflict = Conflict(_text(header_name), index, _text(family.type), _text(value))
            conflicts.append(conflict)
    _take(families, family, conflict, part, start, len(part))


def _special_lines(part: bytes) -> Iterator[tuple[int, int]]:
    """Where each comment or blank line starts and ends (after its newline); `part` ends with a newline."""
    if _SPECIAL_START.match(part):
        yield 0, part.index(b"\n") + 1
    for match in _SPECIAL_LINE.finditer(part):
        yield match.end(), part.index(b"\n", match.end()) + 1


def _take(
    families: dict[bytes | None, _Family],
    family: _Family | None,
    conflict: Conflict | None,
    part: bytes,
    start: int,
    end: int,
) -> None:
    """The sample lines part[start:end] into their family, or counted as dropped."""
    if end <= start:
        return
    if conflict is not None:
        conflict.samples += part.count(b"\n", start, end)
        return
    chunk = memoryview(part)[start:end]  # a view: the samples' bytes are copied once, into the result
    if family is None:  # samples before any header: kept, untyped, in a block of their own
        family = families.setdefault(None, _Family())
    family.chunks.append(chunk)


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")
