"""Showing job data without running it: a restricted unpickler that builds only plain types.

Job arguments, results and meta are pickles written by whoever can write to Redis. Plain
`pickle.loads` would import and call whatever they name, inside the process that holds the API
tokens and SMTP credentials. Here a name outside the allowed set is never imported: it becomes a
stand-in that is shown as `<module.Name object>`, whatever the pickle asks of it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import datetime
import decimal
import functools
import importlib
import io
import math
import pickle
import uuid
from collections.abc import Callable, Iterable
from typing import Any

MAX_PICKLE_BYTES = 4 << 20  # a bigger payload is described, not decoded
MAX_ITEMS = 10_000  # values shown per payload, so shared references cannot multiply the output
MAX_TEXT = 10_000
MAX_DEPTH = 32
MORE = "…"


class DisplayError(ValueError):
    """The payload cannot be shown: not a pickle, too large, or a shape that is not allowed."""


class Opaque:
    """Stands in for an object whose type is not allowed: made from nothing, shown by its type's name."""

    __slots__ = ()
    type_name = "object"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # the arguments the pickle passes are dropped: nothing of the real type runs

    # what the pickle machine may ask of a rebuilt object; each is a no-op
    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


@functools.lru_cache(maxsize=512)
def opaque_type(qualified: str) -> type[Opaque]:
    return type("Opaque", (Opaque,), {"__slots__": (), "type_name": qualified[:200]})


def _sized(kind: type) -> Callable[..., Any]:
    """bytes/bytearray from content only: bytes(10**12) would allocate a terabyte."""

    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise DisplayError(f"{kind.__name__} of a given size is not built")
        return kind(*args)

    return build


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """How protocols 0-2 pickle bytes: _codecs.encode(text, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DisplayError("only latin-1 text is encoded")
    return text.encode("latin-1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Protocols 0-1 rebuild plain objects through copyreg; a stand-in stays a stand-in."""
    if isinstance(cls, type) and issubclass(cls, Opaque):
        return cls()
    if isinstance(base, type) and issubclass(base, Opaque):
        return base()
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


SAFE: dict[tuple[str, str], Any] = {
    **{
        ("builtins", kind.__name__): kind
        for kind in (set, frozenset, list, tuple, dict, complex, slice, bool, float, object)
    },
    ("builtins", "int"): int,  # Python's own limit on digits bounds int('9' * n)
    ("builtins", "bytes"): _sized(bytes),
    ("builtins", "bytearray"): _sized(bytearray),
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    **{
        ("collections", kind.__name__): kind
        for kind in (collections.OrderedDict, collections.deque, collections.defaultdict, collections.Counter)
    },
    **{
        ("datetime", kind.__name__): kind
        for kind in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, datetime.timezone)
    },
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
}


def resolve(name: str) -> tuple[tuple[str, str], Any]:
    """(pickle's (module, qualname), the object) for a configured 'module.Name' or 'module:Name'."""
    module, sep, qualname = name.partition(":")
    if not sep:
        module, _, qualname = name.rpartition(".")
    if not module or not qualname:
        raise ValueError(f"{name!r} is not a module.Name")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return (module, qualname), found


@functools.lru_cache(maxsize=8)
def allowed_types(extra: tuple[str, ...] = ()) -> dict[tuple[str, str], Any]:
    """The built-in safe set plus the operator's configured types (RQSCOPE_DISPLAY_PICKLE_TYPES)."""
    return {**SAFE, **dict(resolve(name) for name in extra)}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only allowed types; every other global is a stand-in, never imported."""

    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles from Python 2 name __builtin__, copy_reg...; map as pickle itself does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self.allowed.get((module, name))
        return found if found is not None else opaque_type(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return opaque_type("persistent")()


def loads(data: bytes, extra: Iterable[str] = ()) -> Any:
    """Unpickle for display: allowed types are built, anything else is an Opaque stand-in."""
    if len(data) > MAX_PICKLE_BYTES:
        raise DisplayError(f"{len(data):,} bytes is more than the {MAX_PICKLE_BYTES:,} shown")
    try:
        return RestrictedUnpickler(data, allowed_types(tuple(extra))).load()
    except DisplayError:
        raise
    except (Exception, RecursionError) as exc:  # any shape of garbage: EOF, bad opcode, wrong arity...
        raise DisplayError(f"not a readable pickle ({type(exc).__name__})") from None


class DisplaySerializer:
    """An RQ serializer for the sidecar's own Job objects: reading never runs code from Redis."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra = tuple(extra)

    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return loads(data, self.extra)


def plain(value: Any) -> Any:
    """A JSON-safe copy of a decoded value for display, bounded in size and depth."""
    return _plain(value, [MAX_ITEMS], 0)


def _text(text: str) -> str:
    text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + MORE
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a pickled str may hold lone surrogates, which no page can encode
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _plain(value: Any, budget: list[int], depth: int) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        return MORE
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, (bytes, bytearray)):
        return _text(repr(bytes(value[: MAX_TEXT + 1])))
    if isinstance(value, dict):
        shown = {}
        for key, item in value.items():
            if budget[0] <= 0:
                shown[MORE] = MORE
                break
            label = key if isinstance(key, str) else str(_plain(key, budget, depth + 1))
            shown[_text(label)] = _plain(item, budget, depth + 1)
        return shown
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        items = []
        for item in value:
            if budget[0] <= 0:
                items.append(MORE)
                break
            items.append(_plain(item, budget, depth + 1))
        return items
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (Opaque, decimal.Decimal, uuid.UUID, datetime.timedelta, datetime.timezone, complex, slice)):
        return _text(str(value) if not isinstance(value, Opaque) else repr(value))
    return _text(repr(value))  # a type the operator allowed: its own repr
