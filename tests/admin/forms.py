"""Reading console pages as a browser would: a form's current values, and the error shown beside a field."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser


class _FormReader(HTMLParser):
    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside = action, False
        self.values: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("action") == self.action
        if not self.inside or "name" not in a:
            if tag == "option" and self.inside and self._select and "selected" in a:
                self.values[self._select] = a.get("value", "")
            return
        name = a["name"]
        if tag == "input":
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.values[name] = a.get("value", "on")
            else:
                self.values[name] = a.get("value", "")
        elif tag == "textarea":
            self._textarea, self.values[name] = name, ""
        elif tag == "select":
            self._select = name
            self.values.setdefault(name, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data


def form_values(page: str, action: str) -> dict[str, str]:
    """The values the form posting to `action` would send as it stands (checked boxes, selected options)."""
    reader = _FormReader(action)
    reader.feed(page)
    # A textarea's content starts after its tag's newline, which browsers drop.
    return {k: v[1:] if v.startswith("\n") else v for k, v in reader.values.items()}


def error_beside(page: str, field: str) -> str | None:
    """The error message shown beside `field` (its id is e-<field>), unescaped; None when there is none."""
    found = re.search(rf'<p class="error" id="e-{re.escape(field)}">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else None
