"""Turning a sentence into timed caption chunks and, when espeak-ng is installed, real speech audio."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 48_000
WORDS_PER_CHUNK = 4


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


def synthesize(text: str, words_per_minute: float) -> np.ndarray | None:
    """Mono int16 samples at 48 kHz from espeak-ng, or None when it is not installed or fails."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    try:
        wav = subprocess.run(  # noqa: S603 - fixed program, text passed as one argument
            [espeak, "--stdout", "-s", str(int(words_per_minute)), "--", text[:1000]],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError):
        return None
    if samples.size == 0:
        return None
    positions = np.linspace(0, samples.size - 1, int(samples.size * SAMPLE_RATE / rate))
    return np.interp(positions, np.arange(samples.size), samples).astype(np.int16)


def tone(duration_s: float) -> np.ndarray:
    """A soft 220 Hz tone for when no speech synthesizer is available."""
    t = np.arange(int(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * 220 * t) * 3000).astype(np.int16)
