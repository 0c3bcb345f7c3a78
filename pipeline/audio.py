"""Reading audio: any file soundfile reads, as float32 mono at the model's rate.

Needs only numpy, soundfile and soxr, so the TFLite runtime can use it without TensorFlow.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(Exception):
    """A file that cannot be used; str() is one line naming the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for error rows and messages."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
