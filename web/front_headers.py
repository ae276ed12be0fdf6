"""What a front and the sidecar it started for another RQ prefix tell each other in headers (web.children).

Every request to a child carries the run's token. A relayed one names the caller the front let in, the front's
CSRF token for the forms of a page, and the messages flashed for the page, which the child hands back with
its reply when it did not show them: the front's session cookie is the caller's, never the child's.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, unquote

FRONT_TOKEN_HEADER = "X-Rqscope-Front"
FRONT_USER_HEADER = "X-Rqscope-Front-User"
FRONT_CSRF_HEADER = "X-Rqscope-Front-Csrf"
FRONT_FLASHES_HEADER = "X-Rqscope-Front-Flashes"  # flashed messages, both ways: the front's session keeps them
FLASHES = "_flashes"  # where Flask's flash() keeps them in the session
MAX_FLASHES = 20
# a header a child accepts: a flashed message names a queue, and a name may be 5,000 characters
MAX_HEADER_BYTES = 64 * 1024


def caller_header(who: Any) -> str:
    """An Identity as the front tells it to a child: role, how they signed in, and the name, quoted."""
    return f"{who.role} {who.via} {quote(who.name, safe='')}" if who is not None else ""


def caller_from(header: str) -> tuple[str, str, str]:
    """(role, via, name) from caller_header's text; empty strings for what is missing."""
    role, _, rest = header.partition(" ")
    via, _, name = rest.partition(" ")
    return role, via, unquote(name)


def flashes_header(pending: list[Any]) -> str:
    """Flashed messages for a header: base64 of their UTF-8 JSON, so any text of any length fits in latin-1."""
    return base64.b64encode(json.dumps(pending[:MAX_FLASHES], ensure_ascii=False).encode()).decode()


def flashes(header: str) -> list[tuple[str, str]]:
    """Flashed (category, message) pairs from their header; none from anything malformed."""
    try:
        found = json.loads(base64.b64decode(header, validate=True).decode())
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(found, list):
        return []
    return [(str(p[0]), str(p[1])) for p in found if isinstance(p, list | tuple) and len(p) == 2][:MAX_FLASHES]
