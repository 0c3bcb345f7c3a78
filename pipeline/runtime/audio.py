"""Reading audio: any file soundfile reads, as float32 mono at the model's rate.

Needs only numpy, soundfile and soxr, so the TFLite runtime can use it without TensorFlow.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.runtime.errors import AudioError, one_line

# Everything soundfile (libsndfile) decodes that people store speech in; data loading and
# transcription both read this set.
AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff",
                              ".aif", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"})


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode, down-mix and resample (soxr, high quality) to float32 mono in [-1, 1]."""
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "file not found")
    if p.is_dir():
        raise AudioError(path, "is a directory")
    if not os.access(p, os.R_OK):
        raise AudioError(path, "permission denied")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable data
        raise AudioError(path, f"cannot decode audio ({one_line(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples (zero length)")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, sample_rate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(audio, rate, target, quality="HQ").astype(np.float32)


def fit_to_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Centre a short clip in zeros (where a word sits in a one-second recording), or keep
    the loudest n-sample window of a longer one."""
    if len(audio) == n:
        return audio
    if len(audio) < n:
        pad = n - len(audio)
        return np.pad(audio, (pad // 2, pad - pad // 2))
    energy = np.cumsum(np.concatenate([[0.0], audio.astype(np.float64) ** 2]))
    start = int(np.argmax(energy[n:] - energy[:-n]))
    return audio[start:start + n]


def pcm16_wav(path: str) -> tuple[np.ndarray, int] | None:
    """Samples and rate of a 16-bit PCM WAV read with the standard library's wave module,
    else None: anything else (other encodings, truncation, no samples) goes to soundfile,
    which also words the errors."""
    try:
        with wave.open(path, "rb") as w:
            channels, frames, rate = w.getnchannels(), w.getnframes(), w.getframerate()
            if w.getsampwidth() != 2 or frames == 0 or rate < 1:
                return None
            raw = w.readframes(frames)
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    if len(raw) != frames * channels * 2:
        return None
    return np.frombuffer(raw, "<i2").reshape(frames, channels), rate


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """load_audio's result; 16-bit PCM WAVs (the common case, thousands of them) are read
    with the wave module, skipping soundfile's per-call overhead that dominates a 1 s clip."""
    parsed = pcm16_wav(path)
    if parsed is None:
        return load_audio(path, sample_rate)
    pcm, rate = parsed
    data = pcm.astype(np.float32) / np.float32(32768)  # soundfile's scaling
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, sample_rate)


def speech_span(audio: np.ndarray, sample_rate: int, floor_db: float = -20.0,
                frame_s: float = 0.01) -> tuple[float, float]:
    """(start_s, end_s) of the frames within floor_db of the loudest 10 ms frame."""
    n = max(1, round(frame_s * sample_rate))
    frames = len(audio) // n
    if frames == 0:
        return 0.0, len(audio) / sample_rate
    power = np.mean(audio[:frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (floor_db / 10))
    return loud[0] * n / sample_rate, (loud[-1] + 1) * n / sample_rate
