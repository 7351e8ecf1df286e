"""GenUI HTML is model output the SDK inserts with innerHTML: the relay passes on only inert markup."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.relay.events import RelayContext, parse_packet, upstream_packet_for_browser
from server.relay.genui import sanitise_event, sanitise_html

REFRESH = '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
CTX = RelayContext("real-client", "real-flow", "up-sid", lambda url: "/relay/whep/x")


@pytest.mark.parametrize(
    "html",
    [
        REFRESH,
        '<script>location="https://evil.example/"</script>',
        '<img src="x" onerror="location=\'https://evil.example/\'">',
        "<a href=\"javascript:location='https://evil.example/'\">go</a>",
        '<form action="https://evil.example/"><input name="q"></form>',
        '<iframe src="https://evil.example/"></iframe>',
        '<base href="https://evil.example/">',
        "<svg><animate onbegin=\"location='https://evil.example/'\"/></svg>",
    ],
)
def test_nothing_that_could_act_or_navigate_survives(html: str) -> None:
    cleaned = sanitise_html(f"<p>Hello</p>{html}")
    assert "evil.example" not in cleaned.replace('href="https://evil.example/"', "")
    for dangerous in ("<meta", "<script", "onerror", "javascript:", "<form", "<iframe", "<base", "onbegin"):
        assert dangerous not in cleaned
    assert cleaned.startswith("<p>Hello</p>")


def test_plain_markup_and_choices_are_kept_and_links_open_a_new_tab() -> None:
    html = '<h2>Plans</h2><ul><li><b>Pro</b></li></ul><button type="button">Yes</button><a href="https://x.example/">x</a>'
    cleaned = sanitise_html(html)
    assert cleaned.startswith('<h2>Plans</h2><ul><li><b>Pro</b></li></ul><button type="button">Yes</button>')
    assert 'href="https://x.example/"' in cleaned and 'target="_blank"' in cleaned
    assert "noopener" in cleaned


def test_show_html_and_both_spellings_of_initial_html_are_sanitised() -> None:
    show = sanitise_event(["showHtml", {"mediaUrl": REFRESH + "<p>hi</p>", "other": REFRESH}])
    assert show == ["showHtml", {"mediaUrl": "<p>hi</p>", "other": REFRESH}]  # only what the SDK renders
    bare = sanitise_event(["clientConfiguration", {"initialHtml": REFRESH, "languageCode": "en"}])
    assert bare == ["clientConfiguration", {"initialHtml": "", "languageCode": "en"}]
    nested = sanitise_event(["clientConfiguration", {"clientConfiguration": {"initialHtml": REFRESH + "ok"}}])
    assert nested == ["clientConfiguration", {"clientConfiguration": {"initialHtml": "ok"}}]
    assert sanitise_event(["showHtml", "not an object"]) == ["showHtml", "not an object"]
    assert sanitise_event(["showHtml"]) == ["showHtml"]


def browser_args(raw: str) -> Any:
    packet = parse_packet(raw)
    assert packet is not None
    sent, _ = upstream_packet_for_browser(packet, raw, CTX)
    return json.loads(sent[sent.index("[") :]), sent


def test_the_relay_rewrites_html_events_and_keeps_the_ack_id() -> None:
    raw = "217" + json.dumps(["showHtml", {"mediaUrl": REFRESH + "<p>hi</p>"}])
    args, sent = browser_args(raw)
    assert sent.startswith("217[") and args == ["showHtml", {"mediaUrl": "<p>hi</p>"}]
    other = '2["showChart",{"mediaUrl":"<meta>"}]'  # not HTML to the SDK: passes byte for byte
    assert browser_args(other)[1] == other
