"""Per-flow options of the avatar SDKs and spoken commands, validated before they reach a page.

Every value here ends up in a hosted page's SDK configuration (server/pages/config.py maps them), so each is
bounded and checked: colours, CSS lengths and regular expressions a browser will run are refused at import
time with a message naming the field, not discovered by a visitor.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The Socket SDK's built-in GenUI content types (its GENUI_EVENTS at the pinned tag), plus contact forms.
GenuiType = Literal[
    "showMedia",
    "showHtml",
    "showCode",
    "showDiagram",
    "showChart",
    "showIFrame",
    "showLatex",
    "showGeneratedImages",
    "showVisualChart",
    "showVisualItems",
    "showVisualLink",
    "showVisualPhoto",
    "showVisualTable",
    "showVisualVideo",
]

# Colours: #rgb/#rrggbb/#rrggbbaa, rgb()/rgba() with numbers only, or a plain colour keyword.
_COLOUR = re.compile(
    r"#[0-9a-fA-F]{3,4}|#[0-9a-fA-F]{6}|#[0-9a-fA-F]{8}"
    r"|rgba?\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*(,\s*(0|1|0?\.\d{1,3})\s*)?\)"
    r"|[a-zA-Z]{3,20}"
)
_FONT_FAMILY = re.compile(r"[A-Za-z0-9 ,'\"-]{1,120}")
# What an iframe style may say: a number with a unit, a keyword, or a short border shorthand.
_CSS_VALUE = re.compile(r"[A-Za-z0-9 #.%(),-]{1,80}")
IFRAME_STYLE_PROPERTIES = (
    "width",
    "height",
    "minHeight",
    "maxWidth",
    "aspectRatio",
    "border",
    "borderRadius",
    "boxShadow",
    "background",
)
_CSS_CLASS = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}( [A-Za-z_][A-Za-z0-9_-]{0,63}){0,3}$"
_VISITOR_FIELD = r"^[a-z][a-z0-9_]{0,39}$"
MAX_PATTERN = 200


class CaptionStyle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    font_size: int | None = Field(default=None, ge=10, le=48)
    font_family: str | None = None
    text_color: str | None = None
    background_color: str | None = None

    @field_validator("text_color", "background_color")
    @classmethod
    def _colour(cls, value: str | None) -> str | None:
        if value is not None and not _COLOUR.fullmatch(value):
            raise ValueError(f"{value!r} is not a colour like #fff, #112233 or rgba(0,0,0,0.8)")
        return value

    @field_validator("font_family")
    @classmethod
    def _font(cls, value: str | None) -> str | None:
        if value is not None and not _FONT_FAMILY.fullmatch(value):
            raise ValueError(f"{value!r} is not a font list (letters, digits, spaces, commas, quotes)")
        return value


class CaptionOptions(BaseModel):
    """Closed captions of the avatar's speech (Socket SDK)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    position: Literal["top", "bottom"] = "bottom"
    style: CaptionStyle = Field(default_factory=CaptionStyle)
    replacements: dict[str, str] = Field(default_factory=dict, max_length=100)

    @field_validator("replacements")
    @classmethod
    def _replacements(cls, values: dict[str, str]) -> dict[str, str]:
        for source, target in values.items():
            if not 1 <= len(source.strip()) <= 100:
                raise ValueError(f"replacement {source!r}: the text to replace must be 1 to 100 characters")
            if len(target) > 200:
                raise ValueError(f"replacement {source!r}: the replacement is longer than 200 characters")
        return values


class QueueOptions(BaseModel):
    """Waiting for a free avatar when the service (or our relay) is at capacity."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    max_wait_seconds: int = Field(default=0, ge=0, le=3600)  # 0: wait as long as the visitor stays
    # The waits between availability checks, used in turn and round again; None: the SDK's (30 s, 45 s, …).
    poll_seconds: list[Annotated[int, Field(ge=1, le=600)]] | None = Field(
        default=None, min_length=1, max_length=10
    )


class ReconnectOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auto: bool = True
    attempts: int = Field(default=5, ge=1, le=10)
    base_delay_ms: int = Field(default=1000, ge=250, le=30000)


class GenuiOptions(BaseModel):
    """Which GenUI kinds stay up through the avatar's hide events, and which pause the conversation."""

    model_config = ConfigDict(extra="forbid")
    sticky_types: list[GenuiType] | None = None  # None: the SDK's default (all of them)
    pause_types: list[GenuiType] | None = None  # None: the SDK's default (showVisualVideo)


class IframeOptions(BaseModel):
    """The Iframe SDK's iframe element: a class for the site's stylesheet and a few inline styles."""

    model_config = ConfigDict(extra="forbid")
    class_name: str | None = Field(default=None, pattern=_CSS_CLASS)
    styles: dict[str, str] = Field(default_factory=dict, max_length=len(IFRAME_STYLE_PROPERTIES))

    @field_validator("styles")
    @classmethod
    def _styles(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if name not in IFRAME_STYLE_PROPERTIES:
                raise ValueError(f"style {name!r} is not one of {', '.join(IFRAME_STYLE_PROPERTIES)}")
            if not _CSS_VALUE.fullmatch(value):
                raise ValueError(f"style {name}: {value!r} is not a simple CSS value")
        return values


class SdkOptions(BaseModel):
    """What a flow turns on in the SDK; every field has the SDK's own default, so `{}` changes nothing."""

    model_config = ConfigDict(extra="forbid")
    captions: CaptionOptions = Field(default_factory=lambda: CaptionOptions(enabled=False))
    queue: QueueOptions = Field(default_factory=QueueOptions)
    reconnect: ReconnectOptions = Field(default_factory=ReconnectOptions)
    connection_timeout_ms: int = Field(default=15000, ge=2000, le=120000)
    audio_only: bool = False
    # Off: the SDK keeps no transcript, the page sends none, the relay stores none (privacy).
    record_transcript: bool = True
    peer_name_field: str | None = Field(default=None, pattern=_VISITOR_FIELD)
    genui: GenuiOptions = Field(default_factory=GenuiOptions)
    debug: bool = False
    iframe: IframeOptions = Field(default_factory=IframeOptions)


def stored_options(value: dict[str, Any] | None) -> SdkOptions:
    """A flow's stored options (None for flows from before they existed)."""
    return SdkOptions.model_validate(value or {})


# --- spoken commands ---------------------------------------------------------------------------------------

_JS_INCOMPATIBLE = re.compile(r"\(\?P|\(\?#|\(\?[aiLmsux-]+[:)]|\\[AZz]|\[\[:|\(\?>|[*+?}]\+")
_QUANTIFIER = re.compile(r"[*+?]|\{\d*,?\d*\}")


def _repeats_at(pattern: str, index: int) -> bool:
    """Whether a quantifier that can repeat more than once starts at `index`."""
    match = _QUANTIFIER.match(pattern, index)
    if match is None or match.group() == "?":
        return False
    text = match.group()
    if text.startswith("{"):
        bounds = text[1:-1].split(",")
        return len(bounds) == 2 or int(bounds[0] or 0) > 1
    return True


def _nested_repeat(pattern: str) -> bool:
    """A repeated group whose body repeats too, like (a+)+: backtracking on such a shape can take
    exponential time. A light scan of the pattern: escapes and character classes are skipped."""
    repeats_inside = [False]  # per open group: does something inside repeat?
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            if _repeats_at(pattern, index):
                repeats_inside[-1] = True
            continue
        if char == "[":
            close = index + 1
            while close < len(pattern) and (pattern[close] != "]" or close == index + 1):
                close += 2 if pattern[close] == "\\" else 1
            index = close + 1
            if _repeats_at(pattern, index):
                repeats_inside[-1] = True
            continue
        if char == "(":
            repeats_inside.append(False)
        elif char == ")" and len(repeats_inside) > 1:
            inner = repeats_inside.pop()
            if _repeats_at(pattern, index + 1):
                if inner:
                    return True
                repeats_inside[-1] = True
            elif inner:
                repeats_inside[-1] = True
        elif _repeats_at(pattern, index + 1) and char not in "|(":
            repeats_inside[-1] = True
        index += 1
    return False


def check_pattern(pattern: str) -> str:
    """A regular expression the page runs (as a JavaScript RegExp, case-insensitive) on what the avatar says:
    it must compile, use the syntax both languages share, and have no nested repeats."""
    if _JS_INCOMPATIBLE.search(pattern):
        raise ValueError(
            f"pattern {pattern!r} uses syntax JavaScript does not share (named groups, \\A, \\Z, …)"
        )
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if compiled.groups and re.search(r"\\[1-9]", pattern):
        raise ValueError(f"pattern {pattern!r} uses back-references, which are not allowed")
    if _nested_repeat(pattern):
        raise ValueError(
            f"pattern {pattern!r} nests repeats (like (a+)+): it could take exponential time on long text"
        )
    if compiled.search("") is not None:
        raise ValueError(f"pattern {pattern!r} matches empty text: it would fire on every sentence")
    return pattern


class SpokenCommand(BaseModel):
    """Something the avatar says that makes the page act: a phrase (case-insensitive substring) or a pattern
    (a regular expression, case-insensitive)."""

    model_config = ConfigDict(extra="forbid")
    phrase: str | None = Field(default=None, min_length=2, max_length=200)
    pattern: str | None = Field(default=None, min_length=2, max_length=MAX_PATTERN)
    action: Literal["end"] = "end"

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return None if value is None else check_pattern(value)

    @model_validator(mode="after")
    def _one_of(self) -> SpokenCommand:
        if (self.phrase is None) == (self.pattern is None):
            raise ValueError("a spoken command has either a phrase or a pattern (exactly one)")
        return self
