"""The enqueue form's fields, one per parameter of a task's signature, and the arguments typed into them.

Each value is read as JSON (42, true, [1, 2], {"a": 1}, "text"); text that is not JSON is taken as a
plain string. An empty field leaves the parameter to its default.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rqscope.tasks.errors import TaskArgumentsError
from rqscope.tasks.registry import TaskSpec
from rqscope.web.bodies import value_problem

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
KIND_NAMES = {
    inspect.Parameter.POSITIONAL_ONLY: "positional only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "",
    inspect.Parameter.VAR_POSITIONAL: "more positional arguments, as a JSON list",
    inspect.Parameter.KEYWORD_ONLY: "keyword only",
    inspect.Parameter.VAR_KEYWORD: "more keyword arguments, as a JSON object",
}
# a task registered without a signature takes anything: one field for the list, one for the object
FREE = (
    inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
    inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
)


@dataclass(frozen=True)
class Field:
    """One parameter as the form shows it."""

    name: str
    kind: inspect._ParameterKind
    annotation: str
    default: str | None  # the default as it would be typed in; None when the parameter is required

    @property
    def input_name(self) -> str:
        return f"arg.{self.name}"

    @property
    def note(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def required(self) -> bool:
        return self.default is None and self.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )


def _shown_default(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def fields(spec: TaskSpec) -> list[Field]:
    parameters = spec.signature.parameters.values() if spec.signature is not None else FREE
    return [
        Field(
            name=p.name,
            kind=p.kind,
            annotation="" if p.annotation is inspect.Parameter.empty else inspect.formatannotation(p.annotation),
            default=_shown_default(p.default),
        )
        for p in parameters
    ]


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_value(name: str, text: str) -> Any:
    """A field's value: JSON when it parses as JSON, the text itself otherwise."""
    try:
        value = json.loads(text, parse_constant=_reject)
    except (ValueError, RecursionError):
        return text
    if problem := value_problem(value):  # the API's own checks of a JSON body
        raise TaskArgumentsError(f"{name}: {problem}")
    return value


def arguments(spec: TaskSpec, values: Mapping[str, str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments from the form's values (by parameter name); empty means default."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    gap = ""  # the first positional parameter left empty: later ones can only go by name
    for field in fields(spec):
        text = values.get(field.name, "")
        if not text.strip():
            if field.kind in POSITIONAL and not gap:
                gap = field.name
            continue
        value = parse_value(field.name, text)
        if field.kind in POSITIONAL and not gap:
            args.append(value)
        elif field.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD or field.kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[field.name] = value
        elif field.kind == inspect.Parameter.VAR_POSITIONAL:
            if not isinstance(value, list):
                raise TaskArgumentsError(f'{field.name}: write a JSON list, like [1, "two"]')
            if gap and value:
                raise TaskArgumentsError(f"{field.name}: give {gap} too, or leave {field.name} empty")
            args.extend(value)
        elif field.kind == inspect.Parameter.VAR_KEYWORD:
            if not isinstance(value, dict):
                raise TaskArgumentsError(f'{field.name}: write a JSON object, like {{"key": 1}}')
            if twice := sorted(set(value) & set(kwargs)):
                raise TaskArgumentsError(f"{field.name}: {', '.join(twice)} already has a field of its own")
            kwargs.update(value)
        else:  # positional only, after an empty one
            raise TaskArgumentsError(f"{field.name}: give {gap} too, or leave {field.name} empty")
    return args, kwargs
