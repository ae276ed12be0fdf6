"""Tiny server-side SVG charts: no script, so the CSP stays strict and nothing loads from a CDN."""

from __future__ import annotations

from collections.abc import Sequence


def sparkline(values: Sequence[float], width: int = 240, height: int = 36) -> dict[str, object]:
    """Points for an SVG polyline of `values` (oldest first), scaled to the box."""
    if not values:
        return {"points": "", "width": width, "height": height, "peak": 0}
    peak = max(values) or 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / peak) * (height - 4):.1f}" for i, v in enumerate(values))
    return {"points": points, "width": width, "height": height, "peak": max(values)}
