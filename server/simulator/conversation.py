"""What the simulated avatar says: driven by the injected DPP and keywords in the user's words. Pure."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

END_SENTENCE = "Ending call now."

# Keyword → (event, payload, what the avatar says about it). Payloads are valid for the SDK's renderers.
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
_CODE = {"code": "def greet(name):\n    return f'Hello {name}'", "language": "python"}
GENUI: dict[str, tuple[str, dict[str, Any], str]] = {
    "chart": ("showChart", {"mediaUrl": json.dumps(_CHART)}, "Here is a chart."),
    "code": ("showCode", {"mediaUrl": json.dumps(_CODE)}, "Here is some code."),
    "diagram": ("showDiagram", {"mediaUrl": "graph TD; Visitor-->Page; Page-->Avatar"}, "Here is a diagram."),
    "table": (
        "showVisualTable",
        {"mediaUrl": json.dumps({"Plan": ["Basic", "Pro"], "Price": ["$0", "$20"]})},
        "Here is a table.",
    ),
    "photo": (
        "showVisualPhoto",
        {"photoUrl": _PHOTO},
        "Here is a photo.",
    ),
    "link": ("showVisualLink", {"linkUrl": "https://example.com/", "linkText": "Example"}, "Here is a link."),
    "html": (
        "showHtml",
        {"mediaUrl": "<h2>Hello from the simulator</h2><p>Click me.</p>"},
        "Here is some HTML.",
    ),
    "formula": ("showLatex", {"mediaUrl": "E = mc^2"}, "Here is a formula."),
    "options": (
        "showVisualItems",
        {"mediaUrl": json.dumps(["Yes", "No", "Maybe"])},
        "Here are some options.",
    ),
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
        said = shown[2] if shown else f"You said: {user_text.strip()[:200]}."
        events = [(shown[0], shown[1])] if shown else []
        return Reply(f"{said} {follow_up}", events, ends=follow_up == END_SENTENCE)
