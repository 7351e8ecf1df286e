"""The diagnostics timeline as the relay and the pages record it, through the simulator and real sockets."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from fastapi import FastAPI

from server.app import create_app
from server.conversations import timeline
from server.conversations.listing import detail_of
from server.models import utcnow
from server.security.signing import Signer
from server.settings import Settings
from server.transcripts.ingest import IngestLimits, PageBatch, ingest_page_batch
from tests.admin.console_client import ConsoleClient, create_admin
from tests.factories import start_conversation
from tests.integration.test_relay import FakeSdk, page_session
from tests.support import (
    ServerThread,
    database,
    eventually_async,
    prepared_settings,
    run_async,
)

SDP_OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
Relay = tuple[ServerThread, FastAPI, Settings]


async def events(settings: Settings, conversation_id: str) -> list[timeline.Event]:
    async with database(settings) as db:
        return await timeline.events_of(db, conversation_id)


async def kinds_once(settings: Settings, conversation_id: str, *wanted: str) -> list[timeline.Event]:
    """The timeline, once every wanted kind is on it (the recorder writes in batches)."""
    return await eventually_async(
        lambda: events(settings, conversation_id),
        lambda found: set(wanted) <= {e.kind for e in found},
        what=f"timeline events {wanted}",
    )


async def test_a_relayed_conversation_leaves_its_connects_whep_refusal_and_end(
    relay: Relay, simulator: ServerThread
) -> None:
    server, _, settings = relay
    conversation_id, token = page_session(server)
    sdk = FakeSdk()
    await sdk.connect(server.url, token)
    new_session = await sdk.wait_for("stvNewSession")
    whep = httpx.post(
        server.url + new_session["webrtc_url"],
        content=SDP_OFFER,
        headers={"content-type": "application/sdp"},
    )
    await sdk.wait_for("showAgent")
    await sdk.client.emit("approvedPermissions", {})
    await sdk.wait_for("stvFinishedTalking")
    await sdk.client.emit("onTextEntered", {"isFinal": True, "text": "bye"})
    await sdk.wait_for("conversationEnded")
    await sdk.client.disconnect()

    # This simulator hands out a WHEP address on a host the relay does not allow: refused, and recorded.
    assert whep.status_code == 403
    found = await kinds_once(
        settings, conversation_id, "relay_connect", "upstream_connect", "whep_failed", "end"
    )
    kinds = [e.kind for e in found]
    assert kinds.index("relay_connect") < kinds.index("upstream_connect") < kinds.index("end")
    upstream = next(e for e in found if e.kind == "upstream_connect")
    assert isinstance(upstream.detail["latency_ms"], int) and upstream.detail["latency_ms"] >= 0
    answered = next(e for e in found if e.kind == "whep_failed")
    assert answered.detail["status"] == 403 and answered.detail["error"] == whep.json()["code"]
    assert isinstance(answered.detail["latency_ms"], int)
    assert next(e for e in found if e.kind == "end").detail["reason"] == "conversation_ended"
    # Never transcript text: the greeting and the visitor's words are nowhere in it.
    assert "Hello" not in json.dumps([e.detail for e in found]) and "bye" not in json.dumps(
        [e.detail for e in found]
    )


async def test_a_capacity_refusal_and_a_reconnect_are_on_the_timeline(
    tmp_path: Path, simulator: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline, "UNSTARTED_INTERVAL", 0.2)  # counted refusals written at once
    settings = prepared_settings(tmp_path, simulator_url=simulator.url, relay_max_per_flow=1)
    with ServerThread(create_app(settings)) as server:
        conversation_id, token = page_session(server)
        first = FakeSdk()
        await first.connect(server.url, token)
        await first.wait_for("showAgent")
        await first.client.disconnect()
        await kinds_once(settings, conversation_id, "upstream_connect")

        other = FakeSdk()
        await other.connect(server.url, page_session(server)[1])  # takes the flow's only slot
        await other.wait_for("showAgent")
        again = FakeSdk()
        await again.connect(server.url, token)
        await again.wait_for("throwToNoAgent")
        refused = await kinds_once(settings, conversation_id, "refused")
        assert [e.detail for e in refused if e.kind == "refused"] == [{"reason": "capacity"}]
        # A page whose conversation never started: on no timeline, but counted on its flow, for the overview.
        unstarted_id, unstarted_token = page_session(server)
        stranger = FakeSdk()
        await stranger.connect(server.url, unstarted_token)
        await stranger.wait_for("throwToNoAgent")
        await stranger.client.disconnect()  # it waited in the queue; the visitor left
        assert await events(settings, unstarted_id) == []
        with ConsoleClient(server.url) as console:
            assert console.sign_in(create_admin(settings, "ops@example.com")).status_code == 303

            def unstarted_row() -> str | None:
                rows = re.findall(r"<tr>(.*?)</tr>", console.get("/admin").text, re.S)
                found = [
                    " ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in rows if "not started" in row
                ]
                return found[0] if found else None

            row = await eventually_async(
                unstarted_row, lambda found: found is not None, what="the unstarted refusal on the overview"
            )
        assert row is not None and "demo refused reason capacity count 1 not started" in row

        await other.client.disconnect()
        back = FakeSdk()  # the SDK reconnects: its queued socket is let go, the new one bridged
        await back.connect(server.url, token)
        await back.wait_for("showAgent")
        await again.disconnected.wait()
        found = await kinds_once(settings, conversation_id, "reconnect")
        assert [e.kind for e in found].count("relay_connect") == 1
        await back.client.disconnect()


async def test_a_connect_to_an_ended_conversation_is_recorded_as_refused(relay: Relay) -> None:
    server, _, settings = relay
    conversation_id, token = page_session(server)
    line = {"seq": 1, "role": "Avatar", "text": "Bye.", "timestamp": "2026-01-01T00:00:00Z"}
    ended = {"token": token, "entries": [line], "final": True}
    assert httpx.post(f"{server.url}/api/v1/page/transcript", json=ended).json()["status"] == "ended"
    sdk = FakeSdk()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sdk.connect(server.url, token)
    found = await kinds_once(settings, conversation_id, "refused")
    assert {"reason": "conversation_ended"} in [e.detail for e in found if e.kind == "refused"]
    assert [e.detail for e in found if e.kind == "end"] == [{"reason": "page_closed", "by": "page"}]


def report(server: ServerThread, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/page/diagnostics", json=body, **kwargs)


async def end_reason(settings: Settings, conversation_id: str) -> str | None:
    async with database(settings) as db:
        return (await detail_of(db, conversation_id)).conversation.end_reason


def final_flush(server: ServerThread, token: str) -> str:
    line = {"seq": 1, "role": "User", "text": "hello", "timestamp": "2026-01-01T00:00:00Z"}
    closed = {"token": token, "entries": [line], "final": True}
    status: str = httpx.post(f"{server.url}/api/v1/page/transcript", json=closed).json()["status"]
    return status


async def test_pages_report_sdk_errors_and_how_the_visitor_ended_in_either_order(relay: Relay) -> None:
    server, _, settings = relay
    conversation_id, token = page_session(server)
    error = {"token": token, "kind": "sdk_error", "code": "6001", "message": "No agent available"}
    assert report(server, error).status_code == 204  # an error report starts the conversation
    assert final_flush(server, token) == "ended"
    assert report(server, {"token": token, "kind": "end", "code": "visitor_ended"}).status_code == 204
    assert [(e.kind, e.detail) for e in await events(settings, conversation_id)] == [
        ("sdk_error", {"code": "6001", "message": "No agent available"}),
        ("end", {"reason": "page_closed", "by": "page"}),
        ("page_end", {"reason": "visitor_ended"}),
    ]
    assert await end_reason(settings, conversation_id) == "visitor_ended"

    # The report first: it ends nothing (the SDK's media teardown still finds the conversation active).
    conversation_id, token = page_session(server)
    assert report(server, {**error, "token": token}).status_code == 204
    assert report(server, {"token": token, "kind": "end", "code": "end_phrase"}).status_code == 204
    assert await end_reason(settings, conversation_id) is None
    assert final_flush(server, token) == "ended"
    assert [(e.kind, e.detail) for e in await events(settings, conversation_id)][1:] == [
        ("page_end", {"reason": "end_phrase"}),
        ("end", {"reason": "end_phrase", "by": "page"}),
    ]
    assert await end_reason(settings, conversation_id) == "end_phrase"


async def test_the_report_endpoint_refuses_bad_tokens_big_or_malformed_reports_and_floods(
    relay: Relay,
) -> None:
    server, _, settings = relay
    conversation_id, token = page_session(server)
    error = {"token": token, "kind": "sdk_error", "code": "4001", "message": "x"}
    forged = report(server, {**error, "token": token[:-4] + "AAAA"})
    assert forged.status_code == 401 and forged.json()["code"].startswith("token_")
    huge = report(server, {**error, "message": "x" * 3000})
    assert huge.status_code == 413 and "2048 bytes" in huge.json()["message"]
    long_message = report(server, {**error, "message": "x" * 201})
    assert long_message.status_code == 400 and "message" in long_message.json()["message"]
    assert report(server, {**error, "kind": "transcript"}).status_code == 400
    assert report(server, {**error, "kind": "end", "code": "whatever"}).status_code == 400
    assert report(server, {**error, "extra": 1}).status_code == 400
    as_text = httpx.post(f"{server.url}/api/v1/page/diagnostics", content=json.dumps(error))
    assert as_text.status_code == 415
    answers = [report(server, error).status_code for _ in range(12)]
    assert answers[:10] == [204] * 10 and answers[-1] == 429
    stored = await events(settings, conversation_id)
    assert len(stored) == 10  # nothing of the refused reports


def test_a_timeline_keeps_at_most_200_events_with_the_last_slot_for_the_end(tmp_path: Path) -> None:
    settings = prepared_settings(tmp_path)

    async def scenario() -> list[timeline.Event]:
        async with database(settings) as db:
            conversation = await start_conversation(db, Signer(settings.secret))
            recorder = timeline.TimelineRecorder(db)
            for n in range(250):
                recorder.note(conversation.id, "sdk_error", code=str(n), message="x" * 500, nested={"a": 1})
            recorder.note(conversation.id, "end", reason="idle_timeout")
            recorder.note("0" * 32, "refused", reason="capacity")  # never started: nothing to attach it to
            await recorder.flush()
            return await timeline.events_of(db, conversation.id)

    found = run_async(scenario)
    assert len(found) == timeline.MAX_EVENTS
    assert found[-1].kind == "end" and [e.kind for e in found].count("sdk_error") == timeline.MAX_EVENTS - 1
    assert found[0].detail == {"code": "0", "message": "x" * timeline.MAX_TEXT}  # no nested values


def test_a_flood_of_refusals_before_any_conversation_makes_one_row_per_flow_and_reason(
    tmp_path: Path,
) -> None:
    settings = prepared_settings(tmp_path)

    async def scenario() -> tuple[list[timeline.Problem], list[timeline.Problem]]:
        async with database(settings) as db:
            recorder = timeline.TimelineRecorder(db)
            for n in range(500):  # 500 refused sockets whose visitors never started a conversation
                recorder.refused(f"{n:032x}", "demo", "capacity")
            recorder.refused("f" * 32, "demo-iframe", "upstream_failed")
            await recorder.flush()  # within the interval: counted, not written yet
            assert await timeline.latest_problems(db) == []
            await recorder.flush(final=True)  # stopping writes what was counted
            written = await timeline.latest_problems(db)
            await timeline.forget_unstarted(db, utcnow() + timedelta(seconds=1))  # housekeeping, later on
            return written, await timeline.latest_problems(db)

    written, forgotten = run_async(scenario)
    assert sorted((p.flow_slug, p.detail["reason"], p.detail["count"]) for p in written) == [
        ("demo", "capacity", 500),
        ("demo-iframe", "upstream_failed", 1),
    ]
    assert all(p.conversation_id is None for p in written) and forgotten == []


def test_details_are_short_strings_and_numbers_within_a_kilobyte() -> None:
    detail = timeline.clean_detail({f"k{i}": "é" * 300 for i in range(10)} | {"n": 1.5, "list": [1]})
    assert len(json.dumps(detail, ensure_ascii=False).encode()) <= timeline.MAX_DETAIL_BYTES
    assert all(isinstance(v, str) and len(v) == timeline.MAX_TEXT for v in detail.values())
    assert timeline.clean_detail({"ok": True, "ms": 12, "none": None, "obj": object()}) == {
        "ok": True,
        "ms": 12,
        "none": None,
    }


@pytest.mark.parametrize("report_first", [True, False])
def test_the_page_end_report_and_the_final_flush_agree_on_the_reason_in_either_order(
    backend: Settings, report_first: bool
) -> None:
    async def scenario() -> str | None:
        async with database(backend) as db:
            signer = Signer(backend.secret)
            conversation = await start_conversation(db, signer)
            limits = IngestLimits(backend.transcript_max_lines, backend.transcript_max_bytes)
            final = PageBatch(token=conversation.token, final=True)
            steps = [
                lambda: timeline.page_report(db, signer, conversation.token, "end", "end_phrase", ""),
                lambda: ingest_page_batch(db, signer, final, limits),
            ]
            for step in steps if report_first else reversed(steps):
                await step()
            return (await detail_of(db, conversation.id)).conversation.end_reason

    assert run_async(scenario) == "end_phrase"
