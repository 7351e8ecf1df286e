"""Knobs of the local upstream simulator."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimulatorConfig:
    public_url: str = "http://127.0.0.1:9100"  # how browsers reach the simulator (webrtc_url, talk_url)
    conversation_seconds: float = 600.0  # time limit; a warning at 60 s left, then expiry
    max_sessions: int = 100  # beyond it new connections get the capacity event
    known_clients: dict[str, set[str]] | None = None  # when set, other client/flow ids get flowConfigError
    words_per_minute: float = 170.0  # speaking pace
    max_syntheses: int = 4  # espeak-ng processes running at once (more sentences wait for a slot)
    synthesis_timeout: float = 10.0  # seconds for one sentence's audio, waiting included; then a tone
    time_scale: float = 1.0  # < 1 speeds every delay up (tests)
    max_payload_bytes: int = 2 * 1024 * 1024  # camera shots arrive as data URLs
    agent_name: str = "Sim"
    # Socket.IO heartbeat in whole seconds (python-engineio advertises a fractional interval rounded down).
    ping_interval: int = 25
    ping_timeout: int = 20
    closing_phrases: tuple[str, ...] = field(
        default=("bye", "goodbye", "that's all", "that is all", "end the call")
    )
