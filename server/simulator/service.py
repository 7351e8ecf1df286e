"""The simulated conversation service: the Socket SDK's event protocol, in the order the SDK needs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from server.simulator.config import SimulatorConfig
from server.simulator.conversation import Dialogue, Reply, parse_dpp
from server.simulator.media import AvatarVoice
from server.simulator.session import SimSession
from server.simulator.speech import Synthesizer, chunks, tone

log = logging.getLogger("avatar_bff.simulator")
END_GRACE_SECONDS = 1.0


class Simulator:
    """Holds every simulated session; speaks for the avatar; answers the Socket SDK's events."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.sessions: dict[str, SimSession] = {}  # by session id
        self.by_sid: dict[str, SimSession] = {}
        self.waiting: set[str] = set()  # sockets told there is no agent, polling for one
        # What new connections are told, by upstream flow id ("*": any flow), set by a test hook.
        self.admission: dict[str, str] = {}
        self.no_video: set[str] = set()  # upstream flow ids ("*": any) whose WHEP offers fail, set by a test
        self.no_fallback: set[str] = set()  # upstream flow ids whose audio-fallback requests go unanswered
        self.synthesizer = Synthesizer(config.max_syntheses, config.synthesis_timeout)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins="*",
            max_http_buffer_size=config.max_payload_bytes,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            async_handlers=False,
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("*", self._event)

    def scaled(self, seconds: float) -> float:
        return seconds * self.config.time_scale

    # ---- lifecycle -------------------------------------------------------------------------------------
    def new_session(self, transport: str, send: Any, query: dict[str, str]) -> SimSession:
        session = SimSession(
            transport,
            send,
            Dialogue(self.config.closing_phrases, self.config.public_url),
            query=query,
            client_id=query.get("client", ""),
            flow_id=query.get("flowId", ""),
        )
        self.sessions[session.id] = session
        return session

    def known(self, client_id: str, flow_id: str) -> bool:
        known = self.config.known_clients
        return known is None or flow_id in known.get(client_id, set())

    async def end(self, session: SimSession, event: str = "conversationEnded") -> None:
        if session.ended:
            return
        await session.send(event)
        session.ended = True
        await asyncio.sleep(self.scaled(END_GRACE_SECONDS))
        if session.socket_sid is not None:
            await self.sio.disconnect(session.socket_sid)

    async def forget(self, session: SimSession) -> None:
        await session.close()
        self.sessions.pop(session.id, None)

    # ---- speaking --------------------------------------------------------------------------------------
    async def speak(self, session: SimSession, text: str) -> None:
        """One utterance as the service sends it: text first, then server-timed chunks paced in real time.

        The visitor talking over the avatar (`interrupt`) stops it after the chunk it is saying; what it had
        said by then is its `agentContent`.
        """
        async with session.speech_lock:
            speech_id = uuid.uuid4().hex[:12]
            pieces = chunks(text, self.config.words_per_minute)
            planned_ms = sum(piece.duration_ms for piece in pieces)
            audio = None
            if session.peers and self.config.time_scale >= 1:  # only synthesize when a media peer listens
                audio = await self.synthesizer.synthesize(text, self.config.words_per_minute)
                if audio is None:
                    audio = tone(planned_ms / 1000)
            stretch = (audio.size / 48 / planned_ms) if audio is not None and planned_ms else 1.0
            barge_in = session.barge_in = asyncio.Event()
            await session.send("generatingSpeech", {"text": text, "speechId": speech_id})
            for piece in pieces:
                await session.send(
                    "debug_stvTaskGenerated", {"text": piece.text + " ", "speechId": speech_id}
                )
            if audio is not None:
                session.voice.say(audio)
            else:
                session.voice.speaking_for(self.scaled(planned_ms / 1000))
            await session.send("stvStartedTalking")
            said: list[str] = []
            for piece in pieces:
                duration = max(1, round(piece.duration_ms * stretch))
                await session.send(
                    "stvSpeechChunk", {"text": piece.text, "speechId": speech_id, "durationMs": duration}
                )
                said.append(piece.text)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(barge_in.wait(), self.scaled(duration / 1000))
                if barge_in.is_set():
                    session.voice.stop()
                    text = " ".join(said)
                    break
            await session.send("stvSpeechChunk", {"text": "", "speechId": speech_id, "durationMs": 1})
            await session.send("stvFinishedGenerating", {"speechId": speech_id})
            await session.send("stvFinishedTalking", {"agentContent": text, "speechId": speech_id})
            session.barge_in = None  # only now: a turn that cut it short waits for the lines above

    @staticmethod
    def interrupt(session: SimSession) -> None:
        """Barge-in: the avatar stops talking (if it is)."""
        if session.barge_in is not None:
            session.barge_in.set()

    async def respond(self, session: SimSession, reply: Reply) -> None:
        for event, payload in reply.events:
            await session.send(event, payload)
        await self.speak(session, reply.text)
        if reply.ends:
            await self.end(session)

    async def user_said(self, session: SimSession, text: str) -> None:
        if session.barge_in is not None and session.barge_in.is_set():
            # The utterance cut short ends (its stvFinishedTalking) before the turn that cut it: a typed turn
            # arrives right behind its isSpeechStart, while the avatar is still mid-chunk.
            async with session.speech_lock:
                pass
        await session.send("agentTurnToTalk", {"userTranscription": text})
        await self.respond(session, session.dialogue.reply(text))

    async def hear(self, session: SimSession, text: str, interim: bool = True) -> None:
        """The visitor says `text` into the microphone, as the service's speech recognition reports it:
        voice detected (which cuts the avatar short), the words so far, the final transcription, the reply."""
        await session.send("userStartedTalking")
        self.interrupt(session)
        words = text.split()
        if interim:
            for end in range(1, len(words)):
                await session.send(
                    "debug_vad_speech_detected",
                    {"transcript": " ".join(words[:end]), "segmentType": "interim"},
                )
                await asyncio.sleep(self.scaled(60 / self.config.words_per_minute))
        await self.user_said(session, " ".join(words))

    async def run_clock(self, session: SimSession) -> None:
        limit = self.config.conversation_seconds
        await asyncio.sleep(self.scaled(max(0.0, limit - 60)))
        await session.send("conversationTimeWarning", {"remainingTime": min(60, limit)})
        await asyncio.sleep(self.scaled(min(60.0, limit)))
        await self.end(session, "conversationTimeExpired")

    def start_conversation(self, session: SimSession, wait_for_prompt: float = 0.0) -> None:
        """The clock starts and the avatar greets: at once, or (`wait_for_prompt`) once the page's first
        prompt is in, or that many seconds later without one."""
        session.spawn(self.run_clock(session))
        session.spawn(self._greet(session, wait_for_prompt))

    async def _greet(self, session: SimSession, wait_for_prompt: float) -> None:
        if wait_for_prompt > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.prompted.wait(), self.scaled(wait_for_prompt))
        await self.respond(session, session.dialogue.greeting())

    # ---- Socket.IO -------------------------------------------------------------------------------------
    async def _connect(self, sid: str, environ: dict[str, Any], _auth: Any = None) -> None:
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        query = {k: v for k, v in query.items() if k not in ("EIO", "transport", "t", "sid")}

        async def send(event: str, data: Any) -> None:
            await self.sio.emit(event, data, to=sid)

        session = self.new_session("socket", send, query)
        session.socket_sid = sid
        self.by_sid[sid] = session
        session.log("in", "connect", query)
        session.spawn(self._greet_connection(sid, session))

    async def _greet_connection(self, sid: str, session: SimSession) -> None:
        # onServerConnected must follow the connect acknowledgement, or the SDK's state machine stalls.
        while not self.sio.manager.is_connected(sid, "/"):  # noqa: ASYNC110 - python-socketio has no event for it
            await asyncio.sleep(0.005)
        if not self.known(session.client_id, session.flow_id):
            await session.send(
                "flowConfigError", {"message": "Unknown client or flow", "client": session.client_id}
            )
            return
        if self.admission_for(session) == "tier-exceeded":
            await session.send("throwToExceededTier")
            return
        if self.busy_excluding(session):
            self.waiting.add(sid)
            await session.send("throwToNoAgent")
            return
        await session.send(
            "onServerConnected",
            {
                "agentName": self.config.agent_name,
                "hostName": "simulator",
                "loadingVideoURL": "",
                "finalUrl": "",
            },
        )

    def video_for(self, session: SimSession) -> bool:
        return not ({session.flow_id, "*"} & self.no_video)

    def fallback_for(self, session: SimSession) -> bool:
        return not ({session.flow_id, "*"} & self.no_fallback)

    def admission_for(self, session: SimSession) -> str:
        return self.admission.get(session.flow_id) or self.admission.get("*") or "open"

    def busy_excluding(self, session: SimSession) -> bool:
        if self.admission_for(session) == "full":
            return True
        active = sum(
            1
            for s in self.sessions.values()
            if not s.ended and s is not session and s.socket_sid not in self.waiting
        )
        return active >= self.config.max_sessions

    async def _disconnect(self, sid: str, *_reason: Any) -> None:
        self.waiting.discard(sid)
        session = self.by_sid.pop(sid, None)
        if session is not None:
            session.log("in", "disconnect", {})
            session.ended = True
            await session.close()

    async def _event(self, event: str, sid: str, *args: Any) -> None:
        session = self.by_sid.get(sid)
        if session is None:
            return
        payload = args[0] if args else None
        session.log("in", event, payload)
        handler = getattr(self, "on_" + event.replace("-", "_"), None)
        if handler is None or session.ended:
            return  # unknown events are dropped, as the service does
        try:
            await handler(session, payload if isinstance(payload, dict) else {})
        except (KeyError, TypeError, ValueError) as exc:
            await session.send(
                "stvTaskFail", {"event": event, "error": f"malformed payload: {type(exc).__name__}"}
            )

    async def on_isValidSession(self, session: SimSession, payload: dict[str, Any]) -> None:
        await session.send("validSession", {"valid": True})

    async def on_join(self, session: SimSession, payload: dict[str, Any]) -> None:
        await session.send(
            "clientConfiguration",
            {
                "clientConfiguration": {
                    "languageCode": "en",
                    "agentPersonaName": self.config.agent_name,
                    "showTranscription": True,
                    "visualVideos": [],
                    "visualPhotos": [],
                }
            },
        )
        await session.send("joinComplete")

    async def on_stvNewSession(self, session: SimSession, payload: dict[str, Any]) -> None:
        webrtc_url = f"{self.config.public_url}/rtc/v1/whep/?app=app&stream={session.id}"
        await session.send(
            "stvNewSession", {"session_id": session.id, "webrtc_url": webrtc_url, "status": "success"}
        )
        await session.send("askPermissions", {"constraints": {"audio": True, "video": False}})
        await session.send("showAgent")

    async def on_approvedPermissions(self, session: SimSession, payload: dict[str, Any]) -> None:
        self.start_conversation(session)

    async def on_setDynamicPrompt(self, session: SimSession, payload: dict[str, Any]) -> None:
        dpp = parse_dpp(payload.get("message"))
        if dpp is None:
            await session.send(
                "stvTaskFail", {"event": "setDynamicPrompt", "error": "message is not a JSON object"}
            )
            return
        session.dialogue.dpp = dpp
        session.prompted.set()

    async def on_onTextEntered(self, session: SimSession, payload: dict[str, Any]) -> None:
        if payload.get("isSpeechStart") is True:  # the SDK opens each typed turn with it: talking over
            self.interrupt(session)
        text = payload.get("text")
        if payload.get("isFinal") is True and isinstance(text, str) and text.strip():
            session.spawn(self.user_said(session, text.strip()[:2000]))

    async def on_checkAvailability(self, session: SimSession, payload: dict[str, Any]) -> None:
        available = session.available if session.available is not None else not self.busy_excluding(session)
        if available and session.socket_sid is not None:
            self.waiting.discard(session.socket_sid)
        await session.send("availabilityResult", {"available": available})

    async def on_asr_webrtc_init(self, session: SimSession, payload: dict[str, Any]) -> None:
        sent = payload.get("sessionId")
        session.asr.update({"session_id": sent, "matches_socket": sent == session.socket_sid, "level": 0.0})
        await session.send("asr-webrtc-ready")

    async def on_asr_webrtc_offer(self, session: SimSession, payload: dict[str, Any]) -> None:
        offer = payload["offer"]
        peer = RTCPeerConnection()
        session.peers.append(peer)
        session.asr_peer = peer

        @peer.on("track")
        def on_track(track: Any) -> None:
            session.spawn(self._measure_mic(session, track))

        await peer.setRemoteDescription(RTCSessionDescription(sdp=str(offer["sdp"]), type="offer"))
        await peer.setLocalDescription(await peer.createAnswer())
        answer = peer.localDescription.sdp
        await session.send("asr-webrtc-answer", {"answer": {"type": "answer", "sdp": answer}})
        # The service also trickles its candidates (already in the answer here, so they are harmless twins).
        for candidate, index in sdp_candidates(answer):
            await session.send("asr-ice-candidate", {"candidate": candidate, "sdpMLineIndex": index})

    async def on_asr_webrtc_ice_candidate(self, session: SimSession, payload: dict[str, Any]) -> None:
        await add_candidate(session.asr_peer, payload)

    async def on_webrtc_create_offer(self, session: SimSession, payload: dict[str, Any]) -> None:
        """The SDK's audio fallback (after a WHEP failure, or audio-only): here the service makes the offer,
        with the avatar's voice, and listens to the microphone the SDK adds."""
        if not self.fallback_for(session):  # a test wants the fallback to hang
            return
        if session.fallback_peer is not None:  # one per session; a second request gets the same offer again
            offer = session.fallback_peer.localDescription
        else:
            peer = session.fallback_peer = RTCPeerConnection()
            session.peers.append(peer)
            peer.addTransceiver(AvatarVoice(session.voice), direction="sendrecv")

            @peer.on("track")
            def on_track(track: Any) -> None:
                session.spawn(self._measure_mic(session, track))

            await peer.setLocalDescription(await peer.createOffer())
            offer = peer.localDescription
        await session.send("webrtc-offer", {"offer": {"type": offer.type, "sdp": offer.sdp}})

    async def on_webrtc_answer(self, session: SimSession, payload: dict[str, Any]) -> None:
        peer = session.fallback_peer
        answer = payload["answer"]
        if peer is None or peer.remoteDescription is not None:
            return
        await peer.setRemoteDescription(RTCSessionDescription(sdp=str(answer["sdp"]), type="answer"))

    async def on_webrtc_ice_candidate(self, session: SimSession, payload: dict[str, Any]) -> None:
        await add_candidate(session.fallback_peer, payload)

    async def _measure_mic(self, session: SimSession, track: Any) -> None:
        frames = 0
        while True:
            frame = await track.recv()
            samples = frame.to_ndarray()
            frames += 1
            session.asr["frames"] = frames
            session.asr["level"] = float(abs(samples.astype("float64")).mean())


def sdp_candidates(sdp: str) -> list[tuple[str, int]]:
    """Each `candidate:…` line of an SDP with the index of the media section it belongs to."""
    found: list[tuple[str, int]] = []
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=candidate:") and index >= 0:
            found.append((line.removeprefix("a="), index))
    return found


async def add_candidate(peer: RTCPeerConnection | None, payload: dict[str, Any]) -> None:
    """A trickled browser candidate (`{candidate: RTCIceCandidate as JSON}`) for `peer`, if both exist."""
    candidate = payload.get("candidate") or {}
    line = candidate.get("candidate") if isinstance(candidate, dict) else None
    if peer is None or not isinstance(line, str) or not line:
        return
    parsed = candidate_from_sdp(line.removeprefix("candidate:"))
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    await peer.addIceCandidate(parsed)
