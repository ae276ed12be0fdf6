"""The Prometheus text format (0.0.4), rendered fast for rqscope's own families.

prometheus_client's generate_latest validates and escapes every metric and label name on every
sample, which is most of a scrape's time at a few thousand samples. rqscope's names are fixed
and valid, so only label values need escaping. A label value is first made one per name
(names.metric_label: bytes that are not UTF-8 as \\xff escapes, a backslash doubled); for values
without either, the output is byte-identical to generate_latest for the same registry, and a test
holds it to that.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from rqscope.monitor.names import kept_for_short_names, metric_label

TYPE_NAMES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary",
              "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}  # fmt: skip
OM_SUFFIXES = ("_created", "_gsum", "_gcount")


class Rows(Metric):
    """A gauge or counter family kept as compact rows of label values; a Metric to every consumer."""

    def __init__(self, name: str, documentation: str, typ: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, typ)
        self.labels = labels
        self.rows: list[tuple[tuple[str, ...], float]] = []

    def add(self, values: tuple[str, ...], value: float) -> None:
        self.rows.append((values, value))

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        name = self.name + ("_total" if self.type == "counter" else "")
        return [Sample(name, dict(zip(self.labels, values, strict=True)), value, None) for values, value in self.rows]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:
            raise ValueError("add rows to a Rows family, not samples")


# (sample name, instance) -> (template, {(label values, value): line}) of the last render. A row whose labels and
# value are those of the last scrape, rendered from the same template (label names), is not formatted again; like
# the reader's parsed rows, only the last render's are kept.
_LAST_LINES: dict[tuple[str, str | None], tuple[str, dict[tuple[tuple[str, ...], float], str]]] = {}


def _rows(metric: Rows, name: str, redis: str | None = None) -> list[str]:
    """One line per row, from a %-template built once per family; `redis` is a label every row carries."""
    keys = (*metric.labels, "redis") if redis is not None else metric.labels
    order = sorted(range(len(keys)), key=keys.__getitem__)
    varying = [i for i in order if i < len(metric.labels)]
    constant = f'redis="{_percent(_escape(redis or ""))}"'
    pairs = [f'{keys[i]}="%s"' if i < len(metric.labels) else constant for i in order]
    template = _percent(name) + ("{" + ",".join(pairs) + "}" if pairs else "") + " %s\n"
    escape, number = _escape, _number

    def line(row: tuple[tuple[str, ...], float]) -> str:
        values, value = row
        return template % (*[escape(values[k]) for k in varying], number(value))

    rows = metric.rows
    last_template, known = _LAST_LINES.get((name, redis), ("", {}))
    if last_template != template:  # other label names: none of the last lines is this family's
        known = {}
    lines = [known.get(row) or line(row) for row in rows]
    _LAST_LINES[(name, redis)] = (template, dict(zip(rows, lines, strict=True)))
    return lines


def _percent(text: str) -> str:
    return text.replace("%", "%%")


def _escaped(value: str) -> str:
    value = metric_label(value)  # a name that is not UTF-8: its bytes as \xff escapes, distinct per name
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


# label values repeat from scrape to scrape (queue, state, host and task names): each is escaped once
_escape = kept_for_short_names(_escaped, 8192)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    # whole numbers are most samples (counts); below 1e6 floatToGoString writes them as "N.0"
    kind = value.__class__
    if kind is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    if kind is float and value.is_integer() and -1e6 < value < 1e6:
        return repr(value)
    return floatToGoString(value)


def _line(name: str, labels: dict[str, str], value: float) -> str:
    if labels:
        pairs = ",".join([f'{k}="{_escape(labels[k])}"' for k in sorted(labels)])
        return f"{name}{{{pairs}}} {_number(value)}\n"
    return f"{name} {_number(value)}\n"


def render(metrics: Iterable[Metric]) -> bytes:
    return render_labelled([(None, list(metrics))])


def render_labelled(groups: Iterable[tuple[str | None, Iterable[Metric]]]) -> bytes:
    """Families of several instances as one exposition: each family once, every sample with its `redis` label."""
    families: dict[str, list[tuple[str | None, Metric]]] = {}
    for redis, metrics in groups:
        for metric in metrics:
            families.setdefault(metric.name, []).append((redis, metric))
    output: list[str] = []
    for members in families.values():
        first = members[0][1]
        name = first.name + ("_total" if first.type == "counter" else "_info" if first.type == "info" else "")
        output.append(f"# HELP {name} {_help(first.documentation)}\n# TYPE {name} {TYPE_NAMES[first.type]}\n")
        extra: dict[str, list[str]] = {}
        for redis, metric in members:
            if isinstance(metric, Rows):
                output.extend(_rows(metric, name, redis))
                continue
            for sample in metric.samples:
                suffix = next((s for s in OM_SUFFIXES if sample.name == metric.name + s), None)
                labels = sample.labels if redis is None else {**sample.labels, "redis": redis}
                line = _line(sample.name, labels, sample.value)
                if suffix is None:
                    output.append(line)
                else:
                    extra.setdefault(suffix, []).append(line)
        for suffix, lines in sorted(extra.items()):
            output.append(f"# HELP {first.name}{suffix} {_help(first.documentation)}\n")
            output.append(f"# TYPE {first.name}{suffix} gauge\n")
            output.extend(lines)
    return "".join(output).encode("utf-8")
