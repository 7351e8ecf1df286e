"""Turning a sentence into timed caption chunks and, when espeak-ng is installed, real speech audio.

Synthesis never runs on the event loop: espeak-ng is an asyncio subprocess (no thread sits waiting for it, and
it can be killed when its time is up or its conversation goes away), and the resampling runs in a worker
thread. A `Synthesizer` lets only a few syntheses run at once and gives each a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import wave
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 48_000
WORDS_PER_CHUNK = 4
MAX_SPOKEN_CHARS = 1000


@dataclass(frozen=True)
class Chunk:
    text: str
    duration_ms: int


def chunks(text: str, words_per_minute: float) -> list[Chunk]:
    """Caption chunks of a few words, each as long as it takes to say at the given pace."""
    words = text.split()
    per_word_ms = 60_000 / words_per_minute
    return [
        Chunk(
            " ".join(words[i : i + WORDS_PER_CHUNK]),
            max(1, round(per_word_ms * len(words[i : i + WORDS_PER_CHUNK]))),
        )
        for i in range(0, len(words), WORDS_PER_CHUNK)
    ]


def decode(wav: bytes) -> np.ndarray | None:
    """Mono int16 samples at 48 kHz from a WAV file's bytes, or None when there is no sound in it."""
    try:
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    except (wave.Error, EOFError, ValueError):
        return None
    if samples.size == 0 or rate <= 0:
        return None
    positions = np.linspace(0, samples.size - 1, int(samples.size * SAMPLE_RATE / rate))
    return np.interp(positions, np.arange(samples.size), samples).astype(np.int16)


class Synthesizer:
    """espeak-ng off the event loop: at most `limit` syntheses at once, each done within `timeout` seconds.

    The deadline covers waiting for a free slot too, so a flood of sentences makes some of them fall back to a
    tone instead of queueing without end.
    """

    def __init__(self, limit: int, timeout: float) -> None:
        if limit < 1:
            raise ValueError("at least one synthesis must be allowed")
        self.slots = asyncio.Semaphore(limit)
        self.timeout = timeout

    async def synthesize(self, text: str, words_per_minute: float) -> np.ndarray | None:
        """Mono int16 samples at 48 kHz, or None when espeak-ng is missing, fails or runs out of time."""
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            return None
        try:
            async with asyncio.timeout(self.timeout), self.slots:
                wav = await self._run(espeak, text, words_per_minute)
                return None if wav is None else await asyncio.to_thread(decode, wav)
        except TimeoutError:
            return None

    @staticmethod
    async def _run(espeak: str, text: str, words_per_minute: float) -> bytes | None:
        try:
            process = await asyncio.create_subprocess_exec(
                espeak,
                "--stdout",
                "-s",
                str(int(words_per_minute)),
                "--",
                text[:MAX_SPOKEN_CHARS],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return None
        try:
            wav, _ = await process.communicate()
        finally:
            if process.returncode is None:  # timed out or cancelled: no orphan keeps running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return wav if process.returncode == 0 else None


def tone(duration_s: float) -> np.ndarray:
    """A soft 220 Hz tone for when no speech synthesizer is available."""
    t = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 220 * t) * 3000).astype(np.int16)
