"""Speech synthesis runs beside the simulator's event loop, not on it: other conversations carry on meanwhile.

A stand-in espeak-ng, first on PATH, holds every synthesis until the test releases it, so "synthesis is still
in progress" is a fact the test controls rather than a timing window.
"""

from __future__ import annotations

import asyncio
import os
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from server.simulator import SimulatorConfig, create_app
from server.simulator.speech import Synthesizer
from tests.simulator.test_simulator import Caller
from tests.support import ServerThread

HOLD_SECONDS = 5  # how long the stand-in waits for its release before answering anyway

# Marks its start, waits for the release (or HOLD_SECONDS), marks its end, then "speaks" a prepared WAV.
STAND_IN = f"""#!/bin/sh
dir=$(dirname "$0")
touch "$dir/started.$$"
n=0
while [ ! -e "$dir/release" ] && [ $n -lt {HOLD_SECONDS * 10} ]; do sleep 0.1; n=$((n + 1)); done
touch "$dir/finished.$$"
cat "$dir/voice.wav"
"""


class SlowEspeak:
    """The stand-in synthesizer's folder: how many syntheses started and finished, and the release switch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        script = folder / "espeak-ng"
        script.write_text(STAND_IN)
        script.chmod(0o755)
        with wave.open(str(folder / "voice.wav"), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(22_050)
            t = np.arange(4410) / 22_050
            writer.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes())

    def pids(self, mark: str) -> list[int]:
        return [int(path.suffix[1:]) for path in self.folder.glob(f"{mark}.*")]

    async def until_started(self, count: int = 1, within: float = 20) -> None:
        async def wait() -> None:
            while len(self.pids("started")) < count:  # noqa: ASYNC110 - the stand-in is another process
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait(), within)

    def release(self) -> None:
        (self.folder / "release").touch()


@pytest.fixture
def slow_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SlowEspeak:
    stand_in = SlowEspeak(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return stand_in


async def open_whep(caller: Caller, server_url: str) -> RTCPeerConnection:
    """Ask for the avatar's media, as the SDK does: the simulator only synthesizes when a peer listens."""
    webrtc_url = (await caller.wait_for("stvNewSession"))["webrtc_url"]
    peer = RTCPeerConnection()
    peer.addTransceiver("audio", direction="recvonly")
    peer.addTransceiver("video", direction="recvonly")
    await peer.setLocalDescription(await peer.createOffer())
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            webrtc_url.replace("http://127.0.0.1:9100", server_url),
            content=peer.localDescription.sdp,
            headers={"content-type": "application/sdp"},
        )
    assert answer.status_code == 201
    return peer


async def test_other_conversations_are_answered_while_a_sentence_is_synthesized(
    slow_espeak: SlowEspeak,
) -> None:
    with ServerThread(create_app(SimulatorConfig(time_scale=1.0, synthesis_timeout=60))) as server:
        speaking = Caller()
        await speaking.connect(server.url)
        peer = await open_whep(speaking, server.url)
        await speaking.client.emit("approvedPermissions", {})  # the greeting: its audio is being made
        await slow_espeak.until_started()

        other = Caller()
        await other.client.connect(
            f"{server.url}/?{httpx.QueryParams(other.query)}",
            socketio_path="socket.io",
            transports=["websocket"],
            wait_timeout=HOLD_SECONDS * 3,
        )
        await other.wait_for("showAgent", within=HOLD_SECONDS * 3)
        # The other conversation's whole handshake came back while the greeting's synthesis was still held.
        assert slow_espeak.pids("finished") == []
        assert "generatingSpeech" not in speaking.names()

        slow_espeak.release()
        assert (await speaking.wait_for("generatingSpeech"))["text"]
        await speaking.wait_for("stvStartedTalking")
        for caller in (speaking, other):
            await caller.client.disconnect()
        await peer.close()


async def test_a_flood_of_sentences_runs_a_bounded_number_of_synthesizers(slow_espeak: SlowEspeak) -> None:
    synthesizer = Synthesizer(limit=2, timeout=60)
    sentences = asyncio.gather(*(synthesizer.synthesize(f"Sentence {n}.", 170) for n in range(5)))
    await slow_espeak.until_started(2)
    with pytest.raises(TimeoutError):  # a third one never starts while two are running
        await slow_espeak.until_started(3, within=1)
    slow_espeak.release()
    voices = await asyncio.wait_for(sentences, HOLD_SECONDS * 2)
    assert len(slow_espeak.pids("started")) == 5
    assert all(voice is not None and voice.size > 0 for voice in voices)


async def test_a_stuck_synthesizer_is_stopped_and_its_slot_freed(slow_espeak: SlowEspeak) -> None:
    synthesizer = Synthesizer(limit=1, timeout=0.5)
    assert await synthesizer.synthesize("Never finishes.", 170) is None  # the caller falls back to a tone
    [stuck] = slow_espeak.pids("started")
    with pytest.raises(ProcessLookupError):
        os.kill(stuck, 0)  # killed and reaped, not left running
    slow_espeak.release()
    voice = await synthesizer.synthesize("The next sentence gets the slot.", 170)
    assert voice is not None and voice.size > 0
