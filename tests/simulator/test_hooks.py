"""The simulator's test hooks (/_sim/…), seen by a real python-socketio client listening like the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection

from server.simulator import SimulatorConfig, create_app
from server.simulator.conversation import SHOW_EVENTS
from tests.simulator.test_simulator import Caller, conversation
from tests.support import ServerThread

LONG_SPEECH = " ".join(f"word{n}" for n in range(400))  # ~2 s at this time scale: long enough to cut short


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerThread]:
    with ServerThread(create_app(SimulatorConfig(time_scale=0.01))) as server:
        yield server


def session_of(sim: ServerThread, caller: Caller) -> str:
    sid = caller.client.get_sid()
    return str(next(s["id"] for s in httpx.get(f"{sim.url}/_sim/sessions").json() if s["socket_sid"] == sid))


def hook(sim: ServerThread, session_id: str, name: str, body: Any = None) -> httpx.Response:
    return httpx.post(f"{sim.url}/_sim/sessions/{session_id}/{name}", json=body)


async def test_hear_reports_voice_then_the_words_so_far_then_the_turn_and_the_reply(
    sim: ServerThread,
) -> None:
    caller = await conversation(sim.url)
    assert hook(sim, session_of(sim, caller), "hear", {"text": "show me a chart please"}).json() == {
        "ok": True
    }
    assert (await caller.wait_for("agentTurnToTalk"))["userTranscription"] == "show me a chart please"
    await caller.wait_for("stvFinishedTalking", 2)
    names = caller.names()
    heard = names[names.index("userStartedTalking") : names.index("agentTurnToTalk")]
    assert heard == ["userStartedTalking"] + ["debug_vad_speech_detected"] * 4
    interim = [data for name, data in caller.events if name == "debug_vad_speech_detected"]
    assert [d["transcript"] for d in interim] == ["show", "show me", "show me a", "show me a chart"]
    assert all(d["segmentType"] != "final" for d in interim)  # the SDK shows only non-final ones as interim
    assert names.index("showChart") > names.index("agentTurnToTalk")
    await caller.client.disconnect()


async def test_talking_over_the_avatar_cuts_it_short(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    session_id = session_of(sim, caller)
    hook(sim, session_id, "say", {"text": LONG_SPEECH})
    await caller.wait_for("stvStartedTalking", 2)
    await caller.say("stop")  # the SDK's typed turn opens with onTextEntered {isSpeechStart}
    said = (await caller.wait_for("stvFinishedTalking", 2))["agentContent"]
    assert LONG_SPEECH.startswith(said) and 0 < len(said) < len(LONG_SPEECH) // 2
    assert (await caller.wait_for("stvFinishedTalking", 3))["agentContent"].startswith("You said: stop.")
    # The cut utterance ends before the typed turn that cut it: the SDK's transcript follows this order.
    names = caller.names()
    finished = [i for i, name in enumerate(names) if name == "stvFinishedTalking"]
    assert finished[1] < names.index("agentTurnToTalk") < finished[2]

    hook(sim, session_id, "say", {"text": LONG_SPEECH})
    await caller.wait_for("stvStartedTalking", 4)
    hook(sim, session_id, "hear", {"text": "wait", "interim": False})  # voice: the service's own detection
    said = (await caller.wait_for("stvFinishedTalking", 4))["agentContent"]
    assert LONG_SPEECH.startswith(said) and 0 < len(said) < len(LONG_SPEECH) // 2
    assert (await caller.wait_for("stvFinishedTalking", 5))["agentContent"].startswith("You said: wait.")
    await caller.client.disconnect()


async def test_time_warning_and_the_two_endings(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    session_id = session_of(sim, caller)
    hook(sim, session_id, "time-warning", {"remaining_seconds": 30})
    assert await caller.wait_for("conversationTimeWarning") == {"remainingTime": 30}
    assert hook(sim, session_id, "time-warning", {"remaining_seconds": "soon"}).status_code == 400
    hook(sim, session_id, "end", {"reason": "expired"})
    await caller.wait_for("conversationTimeExpired")
    other = await conversation(sim.url)
    assert hook(sim, session_of(sim, other), "end", {"reason": "bored"}).status_code == 400
    hook(sim, session_of(sim, other), "end", {})
    await other.wait_for("conversationEnded")
    for done in (caller, other):
        await done.client.disconnect()


async def test_admission_queues_callers_until_a_slot_frees_and_can_refuse_the_tier(sim: ServerThread) -> None:
    admission = f"{sim.url}/_sim/admission"
    assert httpx.post(admission, json={"mode": "full", "flow_id": "queued"}).status_code == 200
    queued = Caller(flow_id="queued")
    await queued.connect(sim.url)
    await queued.wait_for("throwToNoAgent")
    await queued.client.emit("checkAvailability", {})
    assert (await queued.wait_for("availabilityResult"))["available"] is False
    httpx.post(admission, json={"mode": "open", "flow_id": "queued"})
    await queued.client.emit("checkAvailability", {})
    assert (await queued.wait_for("availabilityResult", 2))["available"] is True
    await queued.client.emit("join", {"client": "c1"})  # the SDK's rejoin: on from there
    await queued.wait_for("showAgent")

    httpx.post(admission, json={"mode": "tier-exceeded", "flow_id": "small-plan"})
    refused = Caller(flow_id="small-plan")
    await refused.connect(sim.url)
    await refused.wait_for("throwToExceededTier")
    assert "onServerConnected" not in refused.names()
    httpx.post(admission, json={"mode": "open", "flow_id": "small-plan"})
    assert httpx.post(admission, json={"mode": "closed"}).status_code == 400
    for caller in (queued, refused):
        await caller.client.disconnect()


async def test_a_session_can_be_told_what_to_answer_on_availability(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    hook(sim, session_of(sim, caller), "availability", {"available": False})
    await caller.client.emit("checkAvailability", {})
    assert (await caller.wait_for("availabilityResult"))["available"] is False
    assert hook(sim, session_of(sim, caller), "availability", {"available": "no"}).status_code == 400
    await caller.client.disconnect()


async def test_genui_shows_every_builtin_kind_and_hides(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    session_id = session_of(sim, caller)
    for kind in SHOW_EVENTS:
        answer = hook(sim, session_id, "genui", {"show": kind}).json()
        assert answer["event"] == kind and answer["data"]
        await caller.wait_for(kind)
    code = json.loads((await caller.wait_for("showCode"))["mediaUrl"])
    assert set(code) == {"code", "question"} and code["question"]
    frame = (await caller.wait_for("showVisualVideo"))["videoUrl"]
    assert frame.endswith("/_sim/genui/frame")
    assert "frame" in httpx.get(f"{sim.url}/_sim/genui/frame").text
    hook(sim, session_id, "genui", {"show": "contactCollector"})
    assert (await caller.wait_for("contactCollector")) == {"contact_type": "email"}
    hook(sim, session_id, "genui", {"hide": "hideCode"})
    await caller.wait_for("hideCode")
    custom = hook(sim, session_id, "genui", {"show": "showLatex", "data": {"mediaUrl": "a^2"}})
    assert custom.json()["data"] == {"mediaUrl": "a^2"}
    for bad in ({"show": "showNothing"}, {"hide": "hideAll"}, {}, {"show": "showHtml", "data": []}):
        assert hook(sim, session_id, "genui", bad).status_code == 400
    assert hook(sim, "nope", "genui", {"show": "showHtml"}).status_code == 404
    assert httpx.post(f"{sim.url}/_sim/sessions/{session_id}/genui", content=b"{").status_code == 400
    await caller.client.disconnect()


async def test_the_asr_answer_is_followed_by_trickled_candidates_in_the_sdks_shape(sim: ServerThread) -> None:
    caller = Caller()
    await caller.connect(sim.url)
    await caller.wait_for("showAgent")
    peer = RTCPeerConnection()
    peer.addTrack(AudioStreamTrack())
    await peer.setLocalDescription(await peer.createOffer())
    offer = {"type": "offer", "sdp": peer.localDescription.sdp}
    await caller.client.emit("asr-webrtc-offer", {"offer": offer, "is_reconnect": False})
    answer = (await caller.wait_for("asr-webrtc-answer"))["answer"]["sdp"]
    candidate = await caller.wait_for("asr-ice-candidate")
    assert candidate["candidate"].startswith("candidate:") and candidate["sdpMLineIndex"] == 0
    assert f"a={candidate['candidate']}" in answer
    await peer.close()
    await caller.client.disconnect()


async def test_media_hook_can_leave_the_audio_fallback_unanswered(sim: ServerThread) -> None:
    media = f"{sim.url}/_sim/media"
    assert httpx.post(media, json={"video": False, "fallback": "no"}).status_code == 400
    answer = httpx.post(media, json={"video": False, "fallback": False, "flow_id": "f1"})
    assert answer.json() == {"ok": True, "no_video": ["f1"], "no_fallback": ["f1"]}
    try:
        caller = await conversation(sim.url)
        await caller.client.emit("webrtc-create-offer")
        httpx.post(media, json={"video": True, "flow_id": "f1"})  # answered again from now on
        await caller.client.emit("webrtc-create-offer")
        await caller.wait_for("webrtc-offer")
        assert caller.names().count("webrtc-offer") == 1  # the first request went unanswered
    finally:
        httpx.post(media, json={"video": True, "flow_id": "f1"})
    await caller.client.disconnect()
