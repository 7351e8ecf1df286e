"""GenUI HTML from the avatar service, made inert on its way to the browser. Pure functions over plain data.

The Socket SDK puts `showHtml.mediaUrl` and `clientConfiguration.initialHtml` into the page with innerHTML
(docs/protocol.md). That HTML is model output: the CSP stops its scripts but not a `<meta http-equiv=refresh>`
sending the visitor elsewhere, a form, or a link replacing the page. nh3 (the Ammonia sanitiser) keeps text
and plain markup and drops the rest.
"""

from __future__ import annotations

from typing import Any

import nh3

# Events whose payload carries HTML the SDK inserts as markup.
HTML_EVENTS = frozenset(["showHtml", "clientConfiguration"])

# Ammonia's defaults (no script, style, meta, form, iframe, event handlers or javascript: URLs), plus buttons:
# GenUI boards offer choices as buttons, and a click reaches the avatar as the button's text.
_TAGS = nh3.ALLOWED_TAGS | {"button"}
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES, "button": {"type"}}


def sanitise_html(html: str) -> str:
    """The HTML with everything that could act (scripts, navigation, forms, handlers) removed."""
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        # A link opens a new tab: the visitor's page (and their conversation) stays where it is.
        set_tag_attribute_values={"a": {"target": "_blank"}},
        link_rel="noopener noreferrer",
    )


def _clean_field(payload: Any, field: str) -> Any:
    if isinstance(payload, dict) and isinstance(payload.get(field), str):
        return {**payload, field: sanitise_html(payload[field])}
    return payload


def sanitise_event(args: list[Any]) -> list[Any]:
    """A decoded upstream event `[name, payload, …]` with the HTML fields the SDK renders sanitised."""
    name, rest = args[0], args[1:]
    if not rest:
        return args
    payload = rest[0]
    if name == "showHtml":
        payload = _clean_field(payload, "mediaUrl")
    elif name == "clientConfiguration":  # the SDK reads the settings bare or under clientConfiguration
        payload = _clean_field(payload, "initialHtml")
        if isinstance(payload, dict) and isinstance(payload.get("clientConfiguration"), dict):
            payload = {
                **payload,
                "clientConfiguration": _clean_field(payload["clientConfiguration"], "initialHtml"),
            }
    return [name, payload, *rest[1:]]
