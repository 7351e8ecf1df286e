"""What the simulated avatar says: driven by the injected DPP and keywords in the user's words. Pure."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

END_SENTENCE = "Ending call now."

# Sample payloads, valid for the SDK's built-in renderers.
_CHART = {
    "type": "bar",
    "data": {"labels": ["Mon", "Tue", "Wed"], "datasets": [{"label": "Visits", "data": [12, 19, 7]}]},
}
_PHOTO = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<circle cx="32" cy="32" r="30" fill="#fd6"/></svg>'
    ).decode()
)
_CODE = {"code": "def greet(name):\n    return f'Hello {name}'", "question": "What does greet('Ana') return?"}
_HTML = "<h2>Hello from the simulator</h2><p>Click me.</p>"
FRAME_PATH = "/_sim/genui/frame"  # a page of the simulator's own, for the kinds that show a URL in an iframe


def genui_sample(kind: str, public_url: str) -> dict[str, Any] | None:
    """A payload the SDK's built-in renderer for `kind` (one of SHOW_EVENTS) draws; None for other names."""
    frame = public_url.rstrip("/") + FRAME_PATH
    samples: dict[str, dict[str, Any]] = {
        "showMedia": {"mediaUrl": [_PHOTO]},
        "showHtml": {"mediaUrl": _HTML},
        "showCode": {"mediaUrl": json.dumps(_CODE)},
        "showDiagram": {"mediaUrl": "graph TD; Visitor-->Page; Page-->Avatar"},
        "showChart": {"mediaUrl": json.dumps(_CHART)},
        "showIFrame": {"iframeUrl": frame},
        "showLatex": {"mediaUrl": "E = mc^2"},
        "showGeneratedImages": {"mediaUrl": [_PHOTO]},
        "showVisualChart": {"mediaUrl": json.dumps(_CHART)},
        "showVisualItems": {"mediaUrl": json.dumps(["Yes", "No", "Maybe"])},
        "showVisualLink": {"linkUrl": "https://example.com/", "linkText": "Example"},
        "showVisualPhoto": {"photoUrl": _PHOTO},
        "showVisualTable": {"mediaUrl": json.dumps({"Plan": ["Basic", "Pro"], "Price": ["$0", "$20"]})},
        "showVisualVideo": {"videoUrl": frame},
    }
    return samples.get(kind)


# The Socket SDK's GenUI events (S:156-160), and the hides it listens for (S:182-184).
SHOW_EVENTS = (
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
)
# Keyword in the visitor's words → (event, what the avatar says about it).
GENUI: dict[str, tuple[str, str]] = {
    "chart": ("showChart", "Here is a chart."),
    "code": ("showCode", "Here is some code."),
    "diagram": ("showDiagram", "Here is a diagram."),
    "table": ("showVisualTable", "Here is a table."),
    "photo": ("showVisualPhoto", "Here is a photo."),
    "link": ("showVisualLink", "Here is a link."),
    "html": ("showHtml", "Here is some HTML."),
    "formula": ("showLatex", "Here is a formula."),
    "options": ("showVisualItems", "Here are some options."),
}
HIDE_EVENTS = ("hideVisuals", "hideCode", "hideDiagram", "hideIFrame", "hideMedia", "hideGeneratedImages")


@dataclass
class Reply:
    text: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # GenUI shown before speaking
    ends: bool = False


def parse_dpp(message: Any) -> dict[str, Any] | None:
    """The DPP carried by setDynamicPrompt: a JSON string (or, leniently, an object)."""
    if isinstance(message, dict):
        return message
    if isinstance(message, str) and len(message) <= 256 * 1024:
        try:
            value = json.loads(message)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


@dataclass
class Dialogue:
    """One conversation's state: the DPP and how far through its questions we are."""

    closing_phrases: tuple[str, ...]
    public_url: str = ""  # where browsers reach the simulator (GenUI frames)
    dpp: dict[str, Any] | None = None
    asked: int = 0

    @property
    def first_name(self) -> str:
        user = (self.dpp or {}).get("user")
        name = user.get("first_name") if isinstance(user, dict) else None
        return name.strip() if isinstance(name, str) else ""

    @property
    def questions(self) -> list[str]:
        questions = (self.dpp or {}).get("questions")
        return [q for q in questions if isinstance(q, str)] if isinstance(questions, list) else []

    def greeting(self) -> Reply:
        hello = f"Hello {self.first_name}!" if self.first_name else "Hello!"
        return Reply(f"{hello} I am the local simulator. {self._next_question()}".strip())

    def _next_question(self) -> str:
        if self.asked < len(self.questions):
            self.asked += 1
            return self.questions[self.asked - 1]
        return "How can I help you today?"

    def _follow_up(self) -> str:
        """The next question; once the last one has been answered, the closing sentence."""
        if self.asked < len(self.questions):
            return self._next_question()
        return END_SENTENCE if self.questions else "What else would you like to see?"

    def reply(self, user_text: str) -> Reply:
        lower = user_text.lower()
        if any(phrase in lower for phrase in self.closing_phrases):
            return Reply(f"Thank you for talking with me. {END_SENTENCE}", ends=True)
        if "hide" in lower:
            return Reply("I have hidden the visuals.", [(name, {}) for name in HIDE_EVENTS])
        shown = next((GENUI[keyword] for keyword in GENUI if keyword in lower), None)
        follow_up = self._follow_up()
        said = shown[1] if shown else f"You said: {user_text.strip()[:200]}."
        sample = genui_sample(shown[0], self.public_url) if shown else None
        events = [(shown[0], sample)] if shown and sample is not None else []
        return Reply(f"{said} {follow_up}", events, ends=follow_up == END_SENTENCE)
