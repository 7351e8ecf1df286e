"""The simulated avatar's media: a drawn face whose mouth moves while it speaks, and its voice."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque

import numpy as np
from aiortc import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame
from PIL import Image, ImageDraw

from server.simulator.speech import SAMPLE_RATE

WIDTH, HEIGHT, FPS = 320, 240, 15
AUDIO_PTIME = 0.02
SAMPLES_PER_FRAME = int(SAMPLE_RATE * AUDIO_PTIME)
MOUTH = (slice(160, 176), slice(130, 190))  # rows, columns of the mouth area


def _face(title: str) -> np.ndarray:
    image = Image.new("RGB", (WIDTH, HEIGHT), (32, 44, 84))
    draw = ImageDraw.Draw(image)
    draw.ellipse((100, 50, 220, 200), fill=(242, 201, 160))
    draw.ellipse((128, 100, 148, 120), fill=(40, 40, 40))
    draw.ellipse((172, 100, 192, 120), fill=(40, 40, 40))
    draw.rectangle((0, 0, WIDTH, 22), fill=(255, 214, 102))
    draw.text((8, 5), "local simulator", fill=(60, 40, 0))
    draw.text((8, HEIGHT - 18), title[:48], fill=(230, 230, 240))
    return np.asarray(image, dtype=np.uint8).copy()


class Voice:
    """What the avatar is saying right now: PCM waiting to be played, shared by the audio and video tracks."""

    def __init__(self) -> None:
        self.pending: deque[np.ndarray] = deque()
        self.speaking_until = 0.0
        self.level = 0.0

    def say(self, samples: np.ndarray) -> None:
        for start in range(0, samples.size, SAMPLES_PER_FRAME):
            frame = samples[start : start + SAMPLES_PER_FRAME]
            if frame.size < SAMPLES_PER_FRAME:
                frame = np.pad(frame, (0, SAMPLES_PER_FRAME - frame.size))
            self.pending.append(frame)
        self.speaking_until = max(self.speaking_until, time.monotonic()) + samples.size / SAMPLE_RATE

    def speaking_for(self, seconds: float) -> None:
        self.speaking_until = time.monotonic() + seconds

    def stop(self) -> None:
        """Silence at once: the visitor talked over the avatar."""
        self.pending.clear()
        self.speaking_until = 0.0

    @property
    def speaking(self) -> bool:
        return time.monotonic() < self.speaking_until

    def next_frame(self) -> np.ndarray:
        frame = self.pending.popleft() if self.pending else np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
        self.level = float(np.abs(frame).mean())
        return frame


class AvatarVideo(VideoStreamTrack):
    def __init__(self, voice: Voice, title: str) -> None:
        super().__init__()
        self.voice = voice
        self.face = _face(title)
        self.frame_index = 0

    async def recv(self) -> VideoFrame:
        await asyncio.sleep(1 / FPS)
        self.frame_index += 1
        picture = self.face.copy()
        opening = 3 + (8 if self.voice.speaking and self.frame_index % 4 < 2 else 0)
        rows, cols = MOUTH
        picture[rows.start + 8 - opening // 2 : rows.start + 8 + opening // 2 + 1, cols] = (150, 40, 50)
        frame = VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = self.frame_index * (90_000 // FPS)
        frame.time_base = fractions.Fraction(1, 90_000)
        return frame


class AvatarVoice(AudioStreamTrack):
    def __init__(self, voice: Voice) -> None:
        super().__init__()
        self.voice = voice
        self.samples_sent = 0
        self.started: float | None = None

    async def recv(self) -> AudioFrame:
        if self.started is None:
            self.started = time.monotonic()
        # Real-time pacing: frame n is due at started + n * 20 ms.
        due = self.started + self.samples_sent / SAMPLE_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        samples = self.voice.next_frame()
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.samples_sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.samples_sent += SAMPLES_PER_FRAME
        return frame
