"""Text from Redis made safe per channel: email headers, Slack markup, PagerDuty's summary limit."""

from __future__ import annotations

import unicodedata

from rqscope.monitor.names import display

SUBJECT_LENGTH = 200
PAGERDUTY_SUMMARY_LENGTH = 1024  # PagerDuty Events v2 rejects a longer summary


valid_text = display  # `text` without lone surrogates (undecodable bytes from Redis), which no encoder accepts


def shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header_text(text: str, limit: int = SUBJECT_LENGTH) -> str:
    """One line for an email header: every line break (CR, LF, U+2028...) and control character becomes a space."""
    line = " ".join(part for part in valid_text(text).splitlines() if part)
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in line)
    return shortened(cleaned, limit)


def slack_text(text: str) -> str:
    """Slack's escaping: `<!channel>`, `<@U123>` and links in a queue name stay plain text."""
    return valid_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
