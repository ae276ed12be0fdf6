"""The Prometheus text format (0.0.4), rendered fast for rqscope's own families.

prometheus_client's generate_latest validates and escapes every metric and label name on every
sample, which is most of a scrape's time at a few thousand samples. rqscope's names are fixed
and valid, so only label values need escaping. The output is byte-identical to generate_latest
for the same registry; a test holds it to that.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from rqscope.monitor.names import label

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


def _rows(metric: Rows, name: str) -> list[str]:
    order = sorted(range(len(metric.labels)), key=metric.labels.__getitem__)
    heads = [f'{metric.labels[i]}="' for i in order]
    number = _number
    if not order:
        return [f"{name} {number(value)}\n" for _, value in metric.rows]
    if len(order) == 1:
        return [f'{name}{{{heads[0]}{_escape(v[0])}"}} {number(value)}\n' for v, value in metric.rows]
    if len(order) == 2:
        (i, j), (h1, h2) = order, heads
        return [f'{name}{{{h1}{_escape(v[i])}",{h2}{_escape(v[j])}"}} {number(value)}\n' for v, value in metric.rows]
    lines = []
    for values, value in metric.rows:
        inner = '",'.join([head + _escape(values[i]) for head, i in zip(heads, order, strict=True)])
        lines.append(f'{name}{{{inner}"}} {number(value)}\n')
    return lines


def _escape(value: str) -> str:
    if not value.isascii():
        value = label(value)  # a name that is not UTF-8: its bytes as \xff escapes, distinct per name
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


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
    output: list[str] = []
    for metric in metrics:
        name = metric.name + ("_total" if metric.type == "counter" else "_info" if metric.type == "info" else "")
        output.append(f"# HELP {name} {_help(metric.documentation)}\n# TYPE {name} {TYPE_NAMES[metric.type]}\n")
        if isinstance(metric, Rows):
            output.extend(_rows(metric, name))
            continue
        extra: dict[str, list[str]] = {}
        for sample in metric.samples:
            suffix = next((s for s in OM_SUFFIXES if sample.name == metric.name + s), None)
            line = _line(sample.name, sample.labels, sample.value)
            if suffix is None:
                output.append(line)
            else:
                extra.setdefault(suffix, []).append(line)
        for suffix, lines in sorted(extra.items()):
            output.append(f"# HELP {metric.name}{suffix} {_help(metric.documentation)}\n")
            output.append(f"# TYPE {metric.name}{suffix} gauge\n")
            output.extend(lines)
    return "".join(output).encode("utf-8")
