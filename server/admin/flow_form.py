"""The flow form: every field of the flow import format (FlowSpec) as a control, read back and validated by
FlowSpec itself, with each error placed beside the field it concerns.

Controls follow the model's annotations, so a field added to FlowSpec shows up without more work: booleans as
checkboxes, literals as selects, numbers and text as inputs, lists of strings one per line, and anything
structured (lists of models, nested models, mappings) as a small JSON text area.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from server.audit import SECRET_FIELDS, mask, masked
from server.flows import FlowSpec
from server.sdk import SUPPORTED_VERSIONS

Kind = Literal["text", "secret", "number", "checkbox", "select", "lines", "json"]
FORM_ERROR = "_form"  # an error no single field owns: shown above the form
WRITE_ONLY = ("client_id", "flow_id")  # shown masked once saved; an empty input keeps them
RESERVED_SLUGS = frozenset({"new"})  # /admin/flows/new is the form for a new flow
# A pattern's own words instead of the regular expression a refusal would quote.
PATTERN_WORDS = {
    "slug": "Use 1 to 64 lowercase letters, digits and dashes, starting with a letter or digit.",
    "client_id": "No spaces.",
    "flow_id": "No spaces.",
}

# Labels and hints of the fields we know; any other field gets its name as label and its description as hint.
WORDING: dict[str, tuple[str, str]] = {
    "slug": ("Address (slug)", "Lowercase letters, digits and dashes; the page lives at /a/<slug>."),
    "display_name": ("Display name", "The page's title, and what the avatar may call itself."),
    "client_id": ("Client id", "The Kaltura client id of the avatar."),
    "flow_id": ("Flow id", "The Kaltura flow id of the avatar."),
    "sdk_mode": ("SDK mode", "Socket: our page drives the avatar. Iframe: Kaltura's iframe inside our page."),
    "upstream": ("Upstream", "Where the avatar service runs; custom needs the endpoints below."),
    "custom_endpoints": (
        "Custom endpoints (JSON)",
        'Only with upstream "custom": {"socket": …, "whep": …, "api": …, "meet": …}, each a bare origin'
        " like https://host; hosts must be in AVATAR_BFF_ALLOWED_UPSTREAM_HOSTS.",
    ),
    "sdk_version": ("SDK version", "The pinned Kaltura SDK build the page loads."),
    "genui_enabled": ("Generative UI", "Let the avatar show generated visuals on the page."),
    "spoken_commands": (
        "Spoken commands (JSON)",
        "Phrases the avatar says that make the page act, e.g."
        ' [{"phrase": "Ending call now.", "action": "end"}]. Empty: the default end phrase; [] for none.',
    ),
    "turn_override": (
        "TURN override (JSON)",
        'ICE servers instead of the upstream\'s: {"urls": ["turn:…"], "username": …, "credential": …,'
        ' "iceTransportPolicy": "relay"}. Saved credentials show masked (••••); left so, they are kept.'
        " Empty: none.",
    ),
    "page_context": (
        "Page context (JSON)",
        'Let the page send live context itself, within limits: {"max_bytes": 8192, "per_minute": 6}.'
        " Empty: off.",
    ),
    "allowed_origins": (
        "Allowed origins",
        "One origin per line (https://example.com) that may embed the page. Empty: none but this server.",
    ),
    "genui_origins": ("Generative UI origins", "One origin per line that generated visuals may load from."),
    "dpp_template": ("DPP template", "The template whose published version the page renders."),
    "enabled": ("Enabled", "A disabled flow's page answers 404."),
    "retention_days": ("Retention (days)", "Delete conversations this many days old. Empty: keep forever."),
    "max_duration_seconds": (
        "Budget: longest conversation (seconds)",
        "A conversation is ended after this long, with a sentence to the visitor. Empty: no limit.",
    ),
    "idle_cut_seconds": (
        "Budget: idle cut (seconds)",
        "End a conversation when the visitor has not spoken, typed or clicked for this long. Empty: never.",
    ),
    "max_concurrent": (
        "Budget: conversations at once",
        "Across all instances; one more is refused with a sentence. Empty: only the server-wide limits.",
    ),
    "minutes_per_day": (
        "Budget: conversation minutes per day (UTC)",
        "Once used up, live conversations end and new ones are refused until midnight UTC. Empty: no limit.",
    ),
}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    hint: str
    kind: Kind
    optional: bool  # None is a value: an empty control means None rather than the default
    required: bool
    options: tuple[tuple[str, str], ...] = ()


def _kind(name: str, annotation: Any) -> tuple[Kind, bool, tuple[tuple[str, str], ...]]:
    args = get_args(annotation)
    optional = get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    if optional:
        rest = [arg for arg in args if arg is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    if name in WRITE_ONLY:
        return "secret", optional, ()
    if name == "sdk_version":
        return "select", optional, tuple((v, v) for v in SUPPORTED_VERSIONS)
    if annotation is bool:
        return "checkbox", optional, ()
    if get_origin(annotation) is Literal:
        return "select", optional, tuple((str(v), str(v)) for v in get_args(annotation))
    if annotation is int:
        return "number", optional, ()
    if annotation is str:
        return "text", optional, ()
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return "lines", optional, ()
    return "json", optional, ()


def form_fields(templates: Sequence[str]) -> list[FormField]:
    """The form's fields in the model's order; `templates` are the DPP template names to choose from."""
    fields = []
    for name, info in FlowSpec.model_fields.items():
        kind, optional, options = _kind(name, info.annotation)
        if name == "dpp_template":
            kind, options = "select", (("", "None"), *((t, t) for t in templates))
        plain = name.replace("_", " ").capitalize() + (" (JSON)" if kind == "json" else "")
        label, hint = WORDING.get(name, (plain, info.description or ""))
        fields.append(FormField(name, label, hint, kind, optional, info.is_required(), options))
    return fields


def _shown(field: FormField, value: Any) -> str | bool:
    """A stored value as its control shows it."""
    if field.kind == "checkbox":
        return bool(value)
    if field.kind == "secret" or value is None:
        return ""
    if field.kind == "lines":
        return "\n".join(str(v) for v in value)
    if field.kind == "json":  # TURN credentials and the like stay masked here too
        return json.dumps(masked(to_jsonable_python(value)), indent=2, ensure_ascii=False)
    return str(value)


def _unmasked(posted: Any, saved: Any) -> Any:
    """`posted` with each secret still showing its mask given back its saved value (a mask means "keep")."""
    if isinstance(posted, dict) and isinstance(saved, dict):
        return {
            key: saved[key]
            if key in SECRET_FIELDS and key in saved and saved[key] and value == mask(saved[key])
            else _unmasked(value, saved.get(key))
            for key, value in posted.items()
        }
    if isinstance(posted, list) and isinstance(saved, list):
        return [_unmasked(item, saved[i] if i < len(saved) else None) for i, item in enumerate(posted)]
    return posted


def form_values(fields: Sequence[FormField], spec: FlowSpec | None) -> dict[str, str | bool]:
    """What the controls show: a saved flow's values (never its ids), or for a new flow the defaults."""
    values: dict[str, str | bool] = {}
    for field in fields:
        if spec is not None:
            value = getattr(spec, field.name)
        else:
            info = FlowSpec.model_fields[field.name]
            value = None if info.is_required() else info.get_default(call_default_factory=True)
        values[field.name] = _shown(field, value)
    return values


def masked_secrets(spec: FlowSpec) -> dict[str, str]:
    """The saved ids as the form may show them: the last four characters at most."""
    return {name: str(mask(getattr(spec, name))) for name in WRITE_ONLY}


@dataclass
class FormResult:
    shown: dict[str, str | bool]  # the user's input, to show again
    errors: dict[str, str]
    spec: FlowSpec | None


def _parse(field: FormField, text: str, saved: FlowSpec | None) -> tuple[bool, Any]:
    """(present, value) of one control's text; absent means the model's default applies."""
    text = text.strip()
    if field.kind == "secret" and not text and saved is not None:
        return True, getattr(saved, field.name)  # empty keeps the saved id
    if not text:
        if field.optional:
            return True, None
        return (True, text) if field.required or field.kind in ("text", "secret") else (False, None)
    if field.kind == "number":
        try:
            return True, int(text)
        except ValueError:
            raise ValueError("Enter a whole number.") from None
    if field.kind == "lines":
        return True, [line.strip() for line in text.splitlines() if line.strip()]
    if field.kind == "json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise ValueError(f"This is not valid JSON: {exc.msg} ({where}).") from None
        if saved is not None:
            value = _unmasked(value, to_jsonable_python(getattr(saved, field.name)))
        return True, value
    return True, text


def _where(field: FormField | None, loc: Sequence[int | str]) -> str:
    if not loc:
        return ""
    if field is not None and field.kind == "lines" and isinstance(loc[0], int):
        return f"line {loc[0] + 1}: "
    return ".".join(str(part) for part in loc) + ": "


def read_form(
    form: Mapping[str, Any], fields: Sequence[FormField], saved: FlowSpec | None = None
) -> FormResult:
    """Validate the posted form with FlowSpec; `saved` is the flow being edited (ids left empty stay)."""
    by_name = {field.name: field for field in fields}
    shown: dict[str, str | bool] = {}
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields:
        posted = form.get(field.name)
        if field.kind == "checkbox":
            shown[field.name] = values[field.name] = posted is not None
            continue
        text = posted if isinstance(posted, str) else ""
        shown[field.name] = text
        try:
            present, value = _parse(field, text, saved)
        except ValueError as exc:
            errors[field.name] = str(exc)
            continue
        if present:
            values[field.name] = value
    try:
        spec = FlowSpec.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            message = error["msg"].removeprefix("Value error, ")
            if loc:
                name = str(loc[0])
                if error["type"] == "string_pattern_mismatch" and len(loc) == 1:
                    message = PATTERN_WORDS.get(name, message)
                message = _where(by_name.get(name), loc[1:]) + message
            else:  # a check across fields: the most specific (longest) field name its message names owns it
                named = [f.name for f in fields if re.search(rf"\b{f.name}\b", message)]
                name = max(named, key=len) if named else FORM_ERROR
            errors.setdefault(name, message)
        spec = None
    if spec is not None and spec.slug in RESERVED_SLUGS and (saved is None or saved.slug != spec.slug):
        errors["slug"] = f"{spec.slug!r} is reserved by the console; choose another address."
    return FormResult(shown, errors, None if errors else spec)
