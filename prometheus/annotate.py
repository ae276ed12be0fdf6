"""Alert annotations: rqscope's summary, a description and the dashboard link, as Prometheus templates."""

from __future__ import annotations

import math
import re
import string
import urllib.parse

from rqscope.monitor.alerts.rules import Rule
from rqscope.monitor.names import DOT_NAMES, MARKER

from prometheus.promql import duration, number, template

# Prometheus scrapes the sidecar on the port that also serves its dashboard, so the target is a usable default
DASHBOARD_URL = "http://{instance}"

# An annotation is a list of parts: ("text", s), ("label", name), ("query", label name, URL-escaped: a space as %20),
# ("segment", label name, URL-escaped as a path segment: as a query value, and a name of dots or the empty name marked
# as the sidecar's own links mark it, so that no browser drops the segment), ("value", spec)
Part = tuple[str, str]
INSTANCE = "redis"  # the label naming the Redis instance on every series rqscope exports, so on every alert


def parse(text: str, rule: Rule) -> list[Part]:
    """Parts of an rqscope format string: {queue} and other labels, {value} with an optional .Nf or .N% spec."""
    parts: list[Part] = []
    for literal, field, spec, conversion in string.Formatter().parse(text):
        if literal:
            parts.append(("text", literal))
        if field is None:
            continue
        if conversion or (field == "value" and spec and not (spec.endswith("%") or spec.endswith("f"))):
            raise ValueError(f"rule {rule.name}: {{{field}!{conversion}:{spec}}} has no Prometheus template")
        if field != "value" and (spec or not field.isidentifier()):
            raise ValueError(f"rule {rule.name}: {{{field}:{spec}}} is not a label or the value")
        parts.append(("value", spec or "") if field == "value" else ("label", field))
    return parts


def go_template(parts: list[Part]) -> str:
    """The parts as a Prometheus annotation template."""
    out = []
    for kind, arg in parts:
        if kind == "text":
            out.append(arg.replace("{{", '{{ "{{" }}'))
        elif kind == "label":
            out.append(f"{{{{ $labels.{arg} }}}}")
        elif kind in ("query", "segment"):
            out.append(f"{{{{ {_escaped(arg, segment=kind == 'segment')} }}}}")
        elif arg.endswith("%"):
            out.append("{{ $value | humanizePercentage }}")
        else:
            out.append(f'{{{{ printf "%{arg}" $value }}}}' if arg else "{{ $value }}")
    return "".join(out)


def render(parts: list[Part], labels: dict[str, str], value: float) -> str:
    """What Prometheus writes for go_template(parts), for promtool's expected annotations."""
    out = []
    for kind, arg in parts:
        if kind == "text":
            out.append(arg)
        elif kind == "label":
            out.append(labels.get(arg, ""))
        elif kind in ("query", "segment"):
            out.append(url_escaped(labels.get(arg, ""), segment=kind == "segment"))
        elif arg.endswith("%"):
            out.append(f"{value * 100:.4g}%")  # humanizePercentage is Go's %.4g of value * 100
        elif arg:
            out.append(format(value, arg))
        else:
            out.append(number(value) if math.isfinite(value) else str(value))
    return "".join(out)


def _escaped(label: str, segment: bool) -> str:
    """The Go template pipeline that URL-escapes a label (see url_escaped)."""
    # urlquery writes a space as +, a path segment wants %20 (a literal + is %2B by then)
    escaped = f'reReplaceAll "\\\\+" "%20" ($labels.{label} | urlquery)'
    # then the label's form of a name (names.metric_label) back to the name's bytes: a doubled backslash is one
    # (through "!", which urlquery never writes), and \xff is the byte ff
    escaped = f'reReplaceAll "%5C%5C" "!" ({escaped})'
    escaped = f'reReplaceAll "!" "%5C" (reReplaceAll "%5Cx([0-9a-f]{{2}})" "%${{1}}" ({escaped}))'
    if segment:  # names.encode_segment: urlquery leaves dots as they are
        for dots in DOT_NAMES:
            escaped = f'reReplaceAll "^{"[.]" * len(dots)}$" "{"%2E" * len(dots)}{MARKER}" ({escaped})'
    return escaped


def url_escaped(label: str, segment: bool = False) -> str:
    """What _escaped's template writes for a label: the URL-escaped name the label stands for."""
    quoted = urllib.parse.quote(label, safe="").replace("%5C%5C", "!")
    quoted = re.sub("%5Cx([0-9a-f]{2})", r"%\1", quoted).replace("!", "%5C")
    return "%2E" * len(quoted) + MARKER if segment and quoted in DOT_NAMES else quoted


def describe(rule: Rule) -> str:
    spec = template(rule)
    shown = {
        "count": number(rule.threshold),
        "seconds": f"{number(rule.threshold)} s",
        "ratio": f"{rule.threshold * 100:.10g}%",
        "": "",
    }[spec.unit]
    meaning = spec.meaning.format(threshold=shown, window=duration(rule.window_seconds))
    held = f", for at least {duration(rule.for_seconds)}" if rule.for_seconds else ""
    return f"{meaning[0].upper()}{meaning[1:]}{held} (rqscope rule {rule.name}, kind {rule.kind})."


def summary_parts(rule: Rule) -> list[Part]:
    """rqscope's summary, after the instance's name unless the rule's summary names it already."""
    summary = parse(rule.summary or rule.name, rule)
    if ("label", INSTANCE) in summary:
        return summary
    return [("text", "["), ("label", INSTANCE), ("text", "] "), *summary]


def annotation_parts(rule: Rule, dashboard_url: str = DASHBOARD_URL) -> dict[str, list[Part]]:
    """summary, description and dashboard_url, as parts; the link opens the page rqscope's own alerts link to."""
    link = parse(dashboard_url.rstrip("/") + "/", rule)
    page = template(rule).page
    if "{queue}" in page:
        before, after = page.split("{queue}")
        link += [("text", before), ("segment", "queue"), ("text", after)]
    else:
        link.append(("text", page))
    # one sidecar may watch several Redis instances: every page takes ?redis=<name> to pick the alert's
    link += [("text", f"?{INSTANCE}="), ("query", INSTANCE)]
    return {
        "summary": summary_parts(rule),
        "description": [("text", describe(rule))],
        "dashboard_url": link,
    }
