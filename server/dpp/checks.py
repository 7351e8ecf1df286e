"""What a DPP template must pass before it is saved, imported or previewed.

Three checks, each reporting where: the JSON text parses (line and column), the declared variables and the
JSON Schema are well formed, and the template renders (the pages' own renderer, in a worker kept for checks)
with the variables' examples into a DPP the schema accepts (each error with its JSON path).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from server.dpp.render import DppError, page_context, render_bounded, text_value, visitor_values

VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # the names a page's query string may carry
VARIABLE_TYPES = ("string", "integer", "number", "boolean")
VARIABLE_SOURCES = ("query", "fixed")
VARIABLE_FIELDS = frozenset({"name", "type", "required", "default", "example", "source", "description"})
MAX_VARIABLES = 20
MAX_VALUE_CHARS = 200
MAX_ERRORS = 20
RENDER_PATH = re.compile(r"^(\$(?:\.[^.\[:]+|\[[0-9]+\])*): ")
# The flow a template is checked with when no flow is named (slug, display name, page URL).
SAMPLE_FLOW = ("sample", "Sample avatar", "https://example.com/a/sample")


@dataclass(frozen=True)
class Problem:
    """One reason a template is refused: which field, what, and where (line/column or JSON path)."""

    field: str  # "body", "variables", "schema" or "sample"
    message: str
    line: int | None = None
    column: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.message}"


class TemplateInvalid(Exception):
    """The template cannot be saved or previewed; `problems` says every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p}" for p in problems))
        self.problems = problems


def parse_json(text: str, field: str) -> Any:
    """The JSON value of `text`, or TemplateInvalid with the line and column of the first mistake."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateInvalid([Problem(field, f"{exc.msg}", exc.lineno, exc.colno)]) from None


def _value_fits(value: Any, kind: str) -> bool:
    text = value if isinstance(value, str) else json.dumps(value)
    if kind == "integer":
        return re.fullmatch(r"-?[0-9]+", text) is not None
    if kind == "number":
        return re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", text) is not None
    if kind == "boolean":
        return text in ("true", "false")
    return True


def check_variables(value: Any) -> list[dict[str, Any]]:
    """The declared variables in their stored form: [{name, type, required, default, example, source}]."""
    if value is None:
        return []
    problems: list[Problem] = []

    def refuse(where: str, message: str) -> None:
        problems.append(Problem("variables", message, path=where))

    if not isinstance(value, list):
        raise TemplateInvalid([Problem("variables", "must be a JSON list of variables", path="$")])
    if len(value) > MAX_VARIABLES:
        raise TemplateInvalid([Problem("variables", f"at most {MAX_VARIABLES} variables", path="$")])
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"$[{i}]"
        if not isinstance(item, dict):
            refuse(where, f"{where}: each variable is an object with a name")
            continue
        unknown = sorted(set(item) - VARIABLE_FIELDS)
        if unknown:
            refuse(where, f"{where}: unknown field(s) {', '.join(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not VARIABLE_NAME.match(name):
            refuse(f"{where}.name", f"{where}.name: a lower-case name like first_name (letters, digits, _)")
            continue
        if name in seen:
            refuse(f"{where}.name", f"{where}.name: {name!r} is declared twice")
        seen.add(name)
        kind = item.get("type", "string")
        source = item.get("source", "query")
        required = item.get("required", False)
        if kind not in VARIABLE_TYPES:
            refuse(f"{where}.type", f"{where}.type: one of {', '.join(VARIABLE_TYPES)}")
        if source not in VARIABLE_SOURCES:
            refuse(f"{where}.source", f"{where}.source: one of {', '.join(VARIABLE_SOURCES)}")
        if not isinstance(required, bool):
            refuse(f"{where}.required", f"{where}.required: true or false")
        entry: dict[str, Any] = {"name": name, "type": kind, "required": required, "source": source}
        for key in ("default", "example", "description"):
            given = item.get(key)
            if given is None:
                continue
            if not isinstance(given, str | int | float | bool) or len(str(given)) > MAX_VALUE_CHARS:
                refuse(f"{where}.{key}", f"{where}.{key}: a value of at most {MAX_VALUE_CHARS} characters")
                continue
            if key != "description" and kind in VARIABLE_TYPES and not _value_fits(given, kind):
                refuse(f"{where}.{key}", f"{where}.{key}: {given!r} is not a {kind}")
            entry[key] = given
        if source == "fixed" and "default" not in entry:
            refuse(f"{where}.default", f"{where}.default: a fixed variable needs its value as default")
        cleaned.append(entry)
    if problems:
        raise TemplateInvalid(problems)
    return cleaned


def example_values(variables: list[dict[str, Any]]) -> dict[str, str]:
    """The sample visitor a template is checked with: each variable's example, else its default."""
    sample: dict[str, str] = {}
    for variable in variables:
        value = variable.get("example", variable.get("default"))
        if value is not None and variable.get("source") != "fixed":
            sample[variable["name"]] = text_value(value)
    return visitor_values(variables, sample)


def check_schema(value: Any) -> dict[str, Any] | None:
    """A JSON Schema (draft 2020-12) the rendered DPP must satisfy, checked against the metaschema."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TemplateInvalid([Problem("schema", "a JSON Schema is a JSON object", path="$")])
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        path = exc.json_path
        raise TemplateInvalid(
            [Problem("schema", f"not a valid JSON Schema at {path}: {exc.message}", path=path)]
        ) from None
    return value


def schema_problems(schema: dict[str, Any], dpp: Any) -> list[Problem]:
    """Each place the rendered DPP breaks the schema, by JSON path (the first MAX_ERRORS, in path order)."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dpp), key=lambda e: [str(p) for p in e.absolute_path])
    return [
        Problem("body", f"the rendered DPP at {error.json_path}: {error.message}", path=error.json_path)
        for error in errors[:MAX_ERRORS]
    ]


def render_checked(
    body: Any,
    variables: list[dict[str, Any]],
    schema: dict[str, Any] | None,
    visitor: dict[str, str],
    flow: tuple[str, str, str] = SAMPLE_FLOW,
) -> dict[str, Any]:
    """Render as a page does (the same context and renderer, in the checks' worker; blocking) and hold it to
    the schema."""
    context = page_context(visitor, *flow, variables)
    try:
        dpp = render_bounded(body, context, checking=True)
    except DppError as exc:
        # A leaf's failure reads "$.path: why": keep the path apart, so it can be pointed at.
        found = RENDER_PATH.match(str(exc))
        path = found.group(1) if found else None
        raise TemplateInvalid([Problem("body", f"the template does not render: {exc}", path=path)]) from None
    if schema is not None:
        problems = schema_problems(schema, dpp)
        if problems:
            raise TemplateInvalid(problems)
    return dpp


@dataclass(frozen=True)
class CheckedTemplate:
    body: dict[str, Any]
    variables: list[dict[str, Any]]
    schema: dict[str, Any] | None


def _checked_parts(body: Any, variables: Any, schema: Any) -> CheckedTemplate:
    problems: list[Problem] = []
    if not isinstance(body, dict):
        problems.append(Problem("body", "the DPP template must be a JSON object", path="$"))
    cleaned_variables: list[dict[str, Any]] = []
    cleaned_schema = None
    try:
        cleaned_variables = check_variables(variables)
    except TemplateInvalid as exc:
        problems.extend(exc.problems)
    try:
        cleaned_schema = check_schema(schema)
    except TemplateInvalid as exc:
        problems.extend(exc.problems)
    if problems:
        raise TemplateInvalid(problems)
    return CheckedTemplate(body, cleaned_variables, cleaned_schema)


def check_template(body: Any, variables: Any, schema: Any) -> CheckedTemplate:
    """Every check a saved or imported template passes, the sample render with the declared examples last
    (blocking: it renders in the worker)."""
    checked = _checked_parts(body, variables, schema)
    render_checked(checked.body, checked.variables, checked.schema, example_values(checked.variables))
    return checked


def dpp_text(dpp: Any) -> str:
    """The DPP as the avatar receives it: compact JSON, as the relay (and the SDK's JSON.stringify) sends."""
    return json.dumps(dpp, ensure_ascii=False, separators=(",", ":"))


def parse_texts(body: str, variables: str, schema: str) -> tuple[Any, Any, Any]:
    """The three JSON fields of the editor (variables and schema may be left empty); every mistake found."""
    values: list[Any] = []
    problems: list[Problem] = []
    for field, text in (("body", body), ("variables", variables), ("schema", schema)):
        if field != "body" and not text.strip():
            values.append(None)
            continue
        try:
            values.append(parse_json(text, field))
        except TemplateInvalid as exc:
            problems.extend(exc.problems)
            values.append(None)
    if problems:
        raise TemplateInvalid(problems)
    return values[0], values[1], values[2]


def preview(
    body: str,
    variables: str,
    schema: str,
    sample: dict[str, str],
    flow: tuple[str, str, str] = SAMPLE_FLOW,
) -> str:
    """The exact DPP text the avatar would receive for these sample visitor values (blocking)."""
    checked = _checked_parts(*parse_texts(body, variables, schema))
    visitor = {k: v for k, v in sample.items() if v and VARIABLE_NAME.match(k) and len(v) <= MAX_VALUE_CHARS}
    return dpp_text(render_checked(checked.body, checked.variables, checked.schema, visitor, flow))
