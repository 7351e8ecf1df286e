"""The simulator on its own, driven by real python-socketio clients and a real aiortc WHEP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription

from server.simulator import SimulatorConfig, create_app
from tests.support import ServerThread, eventually_async


class Caller:
    """Plays the Socket SDK's side of the protocol and records what the service says."""

    def __init__(self, client_id: str = "c1", flow_id: str = "f1") -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.query = {"client": client_id, "flowId": flow_id, "stickyId": "s" * 16, "level": "published"}
        self.events: list[tuple[str, Any]] = []
        self.changed = asyncio.Event()
        self.connected_before_greeting: bool | None = None
        self.client.on("connect", self._connected)
        self.client.on("*", self._record)

    async def _connected(self) -> None:
        self.connected_before_greeting = not self.events

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None))
        self.changed.set()
        if event == "onServerConnected":
            await self.client.emit("isValidSession", {"client": self.query["client"], "room": "r"})
            await self.client.emit("join", {"client": self.query["client"], "room": "r"})
        elif event == "joinComplete":
            await self.client.emit("stvNewSession", {"client": self.query["client"], "room_id": "r"})

    async def connect(self, url: str) -> None:
        await self.client.connect(
            f"{url}/?{httpx.QueryParams(self.query)}", socketio_path="socket.io", transports=["websocket"]
        )

    async def wait_for(self, event: str, count: int = 1, within: float = 20) -> Any:
        async def until() -> Any:
            while True:
                found = [data for name, data in self.events if name == event]
                if len(found) >= count:
                    return found[count - 1]
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(until(), within)

    async def say(self, text: str) -> None:
        await self.client.emit("onTextEntered", {"isSpeechStart": True, "text": "", "isFinal": False})
        await self.client.emit("onTextEntered", {"text": text, "isFinal": True})

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture(scope="module")
def sim() -> Iterator[ServerThread]:
    with ServerThread(create_app(SimulatorConfig(time_scale=0.01))) as server:
        yield server


async def conversation(url: str, dpp: dict[str, Any] | None = None) -> Caller:
    caller = Caller()
    await caller.connect(url)
    await caller.wait_for("showAgent")
    if dpp is not None:
        await caller.client.emit("setDynamicPrompt", {"message": json.dumps(dpp)})
    await caller.client.emit("approvedPermissions", {})
    await caller.wait_for("stvFinishedTalking")
    return caller


async def test_handshake_follows_the_sdk_order(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    assert caller.connected_before_greeting is True  # onServerConnected came after the connect ack
    names = caller.names()
    handshake = [
        "onServerConnected",
        "validSession",
        "clientConfiguration",
        "joinComplete",
        "stvNewSession",
        "askPermissions",
        "showAgent",
    ]
    assert names[: len(handshake)] == handshake
    utterance = names[len(handshake) :]
    assert utterance[0] == "generatingSpeech" and utterance[-1] == "stvFinishedTalking"
    assert utterance.index("stvStartedTalking") < utterance.index("stvSpeechChunk")
    assert "stvFinishedGenerating" in utterance
    await caller.client.disconnect()


async def test_dpp_drives_greeting_questions_and_the_end(sim: ServerThread) -> None:
    caller = await conversation(sim.url, {"user": {"first_name": "Ana"}, "questions": ["First?", "Second?"]})
    greeting = (await caller.wait_for("stvFinishedTalking"))["agentContent"]
    assert greeting.startswith("Hello Ana!") and greeting.endswith("First?")
    await caller.say("show me a chart")
    assert (await caller.wait_for("agentTurnToTalk"))["userTranscription"] == "show me a chart"
    chart = json.loads((await caller.wait_for("showChart"))["mediaUrl"])
    assert chart["type"] == "bar" and chart["data"]["datasets"]
    assert (await caller.wait_for("stvFinishedTalking", 2))["agentContent"] == "Here is a chart. Second?"
    await caller.say("a code example please")
    assert (await caller.wait_for("stvFinishedTalking", 3))["agentContent"].endswith("Ending call now.")
    await caller.wait_for("conversationEnded")
    await caller.client.disconnect()


async def test_closing_phrase_ends_the_call(sim: ServerThread) -> None:
    caller = await conversation(sim.url)
    await caller.say("that's all, thanks")
    assert (await caller.wait_for("stvFinishedTalking", 2))["agentContent"].endswith("Ending call now.")
    await caller.wait_for("conversationEnded")


async def test_introspection_and_say(sim: ServerThread) -> None:
    caller = await conversation(sim.url, {"questions": ["Q?"]})
    sid = caller.client.get_sid()
    session = next(s for s in httpx.get(f"{sim.url}/_sim/sessions").json() if s["socket_sid"] == sid)
    assert (session["client_id"], session["flow_id"], session["dpp"]) == ("c1", "f1", {"questions": ["Q?"]})
    assert {"in", "out"} == {event["dir"] for event in session["events"]}
    httpx.post(f"{sim.url}/_sim/sessions/{session['id']}/say", json={"text": "A line from the test."})
    assert (await caller.wait_for("stvFinishedTalking", 2))["agentContent"] == "A line from the test."
    httpx.post(
        f"{sim.url}/_sim/sessions/{session['id']}/say",
        json={"event": "contactCollector", "data": {"contact_type": "email"}},
    )
    assert (await caller.wait_for("contactCollector"))["contact_type"] == "email"
    assert httpx.post(f"{sim.url}/_sim/sessions/nope/say", json={"text": "x"}).status_code == 404
    await caller.client.disconnect()


async def test_capacity_time_limit_and_unknown_ids() -> None:
    config = SimulatorConfig(
        time_scale=0.01, max_sessions=1, conversation_seconds=61, known_clients={"c1": {"f1"}}
    )
    with ServerThread(create_app(config)) as server:
        first = await conversation(server.url)
        second = Caller()
        await second.connect(server.url)
        await second.wait_for("throwToNoAgent")
        await second.client.emit("checkAvailability", {})
        assert (await second.wait_for("availabilityResult"))["available"] is False
        assert (await first.wait_for("conversationTimeWarning"))["remainingTime"] == 60
        await first.wait_for("conversationTimeExpired")
        stranger = Caller(client_id="c1", flow_id="other")
        await stranger.connect(server.url)
        await stranger.wait_for("flowConfigError")
        for caller in (first, second, stranger):
            await caller.client.disconnect()


async def test_fifty_sessions_finish_while_one_sends_garbage(sim: ServerThread) -> None:
    async def garbage() -> None:
        caller = Caller()
        await caller.connect(sim.url)
        await caller.wait_for("showAgent")
        junk: list[tuple[str, Any]] = [
            ("onTextEntered", {"text": 42, "isFinal": True}),
            ("onTextEntered", "not an object"),
            ("setDynamicPrompt", {"message": "{not json"}),
            ("setDynamicPrompt", {"message": "x" * 1_000_000}),
            ("asr-webrtc-offer", {"offer": "nonsense"}),
            ("asr-webrtc-ice-candidate", {"candidate": {"x": 1}}),
            ("join", None),
            ("made-up-event", {"a": [1, 2]}),
            ("userCameraShot", {"image": "d" * 1_500_000}),
        ]
        for _ in range(3):
            for event, payload in junk:
                await caller.client.emit(event, payload)
        await caller.wait_for("stvTaskFail")

    async def polite() -> list[str]:
        caller = await conversation(sim.url)
        await caller.say("bye")
        await caller.wait_for("conversationEnded", within=60)
        return caller.names()

    sender = asyncio.ensure_future(garbage())
    finished = await asyncio.gather(*(polite() for _ in range(50)))
    await sender
    assert len(finished) == 50 and all("conversationEnded" in names for names in finished)
    assert httpx.get(f"{sim.url}/_sim/health").status_code == 200


async def test_whep_answers_with_real_video_and_voice() -> None:
    with ServerThread(create_app(SimulatorConfig(time_scale=1.0))) as server:
        caller = Caller()
        await caller.connect(server.url)
        webrtc_url = (await caller.wait_for("stvNewSession"))["webrtc_url"].replace(
            "http://127.0.0.1:9100", server.url
        )
        peer = RTCPeerConnection()
        peer.addTransceiver("audio", direction="recvonly")
        peer.addTransceiver("video", direction="recvonly")
        tracks: dict[str, Any] = {}
        peer.on("track", lambda track: tracks.__setitem__(track.kind, track))
        await peer.setLocalDescription(await peer.createOffer())
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                webrtc_url, content=peer.localDescription.sdp, headers={"content-type": "application/sdp"}
            )
        assert answer.status_code == 201 and answer.headers["content-type"].startswith("application/sdp")
        assert answer.headers["location"].startswith("/rtc/v1/whep/resource/")
        await peer.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
        await caller.client.emit("approvedPermissions", {})  # the greeting starts speaking
        frame = await asyncio.wait_for(tracks["video"].recv(), 10)
        assert frame.to_ndarray(format="rgb24").mean() > 30  # a drawn face, not black
        loudest = 0.0
        for _ in range(200):
            samples = (await asyncio.wait_for(tracks["audio"].recv(), 5)).to_ndarray()
            loudest = max(loudest, float(np.abs(samples).max()))
            if loudest > 500:
                break
        assert loudest > 500  # the voice is audible
        async with httpx.AsyncClient() as http:
            assert (await http.delete(f"{server.url}{answer.headers['location']}")).status_code == 200
        await peer.close()
        await caller.client.disconnect()


async def test_the_audio_fallback_offer_carries_the_voice_and_takes_the_microphone() -> None:
    with ServerThread(create_app(SimulatorConfig(time_scale=1.0))) as server:
        caller = Caller()
        await caller.connect(server.url)
        await caller.wait_for("showAgent")
        # The SDK's side (S:2257-2297): it asks, the service offers, the SDK answers with its microphone.
        await caller.client.emit("webrtc-create-offer")
        offer = (await caller.wait_for("webrtc-offer"))["offer"]
        assert offer["type"] == "offer" and "m=audio" in offer["sdp"]
        peer = RTCPeerConnection()
        heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @peer.on("track")
        def on_track(track: Any) -> None:
            if not heard.done():
                heard.set_result(track)

        await peer.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        microphone = peer.getTransceivers()[0]
        microphone.direction = "sendrecv"
        microphone.sender.replaceTrack(AudioStreamTrack())  # silence, but frames all the same
        await peer.setLocalDescription(await peer.createAnswer())
        answer = {"type": "answer", "sdp": peer.localDescription.sdp}
        await caller.client.emit("webrtc-answer", {"answer": answer})
        track = await asyncio.wait_for(heard, 10)
        await caller.client.emit("approvedPermissions", {})  # the greeting starts speaking
        loudest = 0.0
        for _ in range(250):
            samples = (await asyncio.wait_for(track.recv(), 5)).to_ndarray()
            loudest = max(loudest, float(np.abs(samples).max()))
            if loudest > 500:
                break
        assert loudest > 500  # the avatar's voice comes down the fallback peer
        sid = caller.client.get_sid()

        async def microphone_frames() -> int:
            async with httpx.AsyncClient() as http:
                sessions = (await http.get(f"{server.url}/_sim/sessions")).json()
            return int(next(s for s in sessions if s["socket_sid"] == sid)["asr"].get("frames", 0))

        # And the microphone goes up it.
        await eventually_async(microphone_frames, lambda frames: frames > 0, what="microphone frames")
        await peer.close()
        await caller.client.disconnect()
