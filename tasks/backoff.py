"""The one capped exponential backoff every retry loop uses."""

from __future__ import annotations


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt` (0 first): base doubled each time, at most cap."""
    return min(cap, base * 2 ** min(attempt, 32))
