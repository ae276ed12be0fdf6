"""Queue and worker names in URL paths: one segment each, any bytes, round-tripped exactly.

RQ accepts any queue name, so a name may hold '/', '%', '..', spaces, newlines or bytes that are not
UTF-8. A name travels as one percent-encoded path segment (`<name:queue>`). WSGI servers decode the
path before routing, which would turn %2F into a separator and non-UTF-8 bytes into U+FFFD, so
`RoutingPath` re-derives PATH_INFO from the raw request target (gunicorn's RAW_URI, REQUEST_URI
elsewhere) with %25, %2F, %3B and non-UTF-8 bytes still encoded; `NameConverter` decodes them.

Browsers drop path segments that decode to '.' or '..' (also when written %2E), so those names,
and the empty name, are written with the dots encoded and a literal ';' after them ("%2E%2E;").
Ordinary encoders always write ';' as %3B, so the marker cannot be confused with a real name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.sansio.blueprints import BlueprintSetupState
from rqscope.monitor.names import decode_segment, encode_segment, exact, from_bytes, label
from werkzeug.routing import BaseConverter

KEEP_ENCODED = frozenset(b"%/;")  # decoding these would change how the path splits or decodes
HEX = re.compile(rb"%[0-9A-Fa-f]{2}")
SURROGATE = re.compile("[\udc80-\udcff]")
INSTALLED = "rqscope.names"


to_bytes = exact


class NameConverter(BaseConverter):
    """One path segment holding any name; see the module docstring for the encoding."""

    def to_python(self, value: str) -> str:
        return decode_segment(value)

    def to_url(self, value: str) -> str:
        return encode_segment(value)


def _units(raw: bytes) -> Iterable[tuple[int, bool]]:
    """(byte, was percent-encoded) for each byte a request target stands for."""
    position = 0
    for match in HEX.finditer(raw):
        yield from ((byte, False) for byte in raw[position : match.start()])
        yield int(match.group()[1:], 16), True
        position = match.end()
    yield from ((byte, False) for byte in raw[position:])


def _raw_path(environ: dict[str, Any]) -> bytes | None:
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        return None
    try:
        raw = target.encode("latin-1")  # WSGI strings carry the request's bytes as latin-1
    except UnicodeEncodeError:
        return None
    if not raw.startswith(b"/"):
        raw = urlsplit(raw).path or b"/"  # absolute-form: http://host/path
    return raw.split(b"?", 1)[0]


def _same_path(decoded: bytes, path: bytes) -> bool:
    """Whether the server decoded PATH_INFO from this target (some, like werkzeug's test client, lossily)."""
    return decoded == path or decoded.decode("utf-8", "replace") == path.decode("utf-8", "replace")


def routing_path(environ: dict[str, Any]) -> str:
    """PATH_INFO with the bytes in KEEP_ENCODED and every non-UTF-8 byte percent-encoded again."""
    script = environ.get("SCRIPT_NAME", "").encode("latin-1")
    path = environ.get("PATH_INFO", "").encode("latin-1")
    raw = _raw_path(environ)
    units = list(_units(raw)) if raw is not None else []
    if not _same_path(bytes(byte for byte, _ in units), script + path):
        # no raw target, or one this path was not decoded from (a rewriting proxy): every '/' is a
        # separator and every other byte is taken literally
        units = [(byte, byte != 0x2F) for byte in script + path]
    routed = bytearray()
    for byte, encoded in units[len(script) :]:
        routed += b"%%%02X" % byte if encoded and byte in KEEP_ENCODED else bytes((byte,))
    text = SURROGATE.sub(lambda m: "%%%02X" % (ord(m.group()) - 0xDC00), from_bytes(bytes(routed)))
    return text.encode("utf-8").decode("latin-1")


class RoutingPath:
    """WSGI middleware: route on routing_path(environ), so a name segment arrives still encoded."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["PATH_INFO"] = routing_path(environ)
        return self.app(environ, start_response)


def install(setup: BlueprintSetupState) -> None:
    """Once per app, before any `<name:...>` rule is added: the converter, the middleware, a label filter."""
    app: Flask = setup.app
    if app.extensions.get(INSTALLED):
        return
    app.url_map.converters["name"] = NameConverter
    app.wsgi_app = RoutingPath(app.wsgi_app)  # type: ignore[method-assign]
    app.jinja_env.filters["label"] = label
    app.extensions[INSTALLED] = True
