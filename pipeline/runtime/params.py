"""The audio front end as one frozen object saved beside every model.

Everything that turns raw samples into the features a network saw lives here, so
training, export and transcription read the same numbers back instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FrontEnd:
    """Audio front end of a model.

    sample_rate:  rate every input is resampled to before anything else.
    clip_seconds: length of one clip the classifier sees (inputs are cropped or padded).
    window_ms:    length of one analysis frame (Hann window).
    hop_ms:       distance between frame starts; also the streaming granularity.
    n_mels:       mel bands between fmin and fmax (librosa's Slaney mel filterbank).
    log_floor:    added to mel power before the log so silence stays finite.
    n_mfcc:       0 keeps log-mel features; >0 keeps that many MFCCs (DCT-II of log-mel).
    stack:        frames fed to the recurrent stack per step ("spectrogram chunks"):
                  fewer steps, same receptive field. One streaming hop is stack * hop_ms.
    normalize:    "none", or "running": subtract from each log-mel frame (before the DCT)
                  a causal exponential running mean per band, so a fixed channel or level
                  (microphone response, gain, a voice's average spectrum) fades out. It
                  streams with one state vector of n_mels values (models/logmel.py).
    norm_seconds: time constant of that running mean.

    Framing is causal: a clip is left-padded with window - hop zeros, so every hop of
    new audio yields exactly one frame and a streaming model fed hop by hop computes the
    same frames as the clip model.
    """

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    window_ms: float = 30.0
    hop_ms: float = 10.0
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    log_floor: float = 1e-6
    n_mfcc: int = 0
    stack: int = 1
    normalize: str = "none"
    norm_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.clip_seconds <= 0:
            raise ValueError("sample_rate and clip_seconds must be positive")
        if not 0 < self.hop_ms <= self.window_ms:
            raise ValueError(f"hop_ms must be in (0, window_ms], got {self.hop_ms}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}"
            )
        if self.n_mels < 1 or self.stack < 1 or self.n_mfcc < 0 or self.n_mfcc > self.n_mels:
            raise ValueError("n_mels and stack must be >= 1, 0 <= n_mfcc <= n_mels")
        if self.normalize not in ("none", "running"):
            raise ValueError(f"normalize must be 'none' or 'running', got {self.normalize!r}")
        if not self.norm_seconds > 0:
            raise ValueError(f"norm_seconds must be positive, got {self.norm_seconds}")
        for name in ("window_samples", "hop_samples", "clip_samples"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} is {value}")
        if self.clip_samples % self.step_samples:
            raise ValueError(
                f"clip of {self.clip_samples} samples is not a whole number of steps of "
                f"{self.step_samples} samples (hop_ms * stack)"
            )

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    @property
    def window_samples(self) -> int:
        return round(self.window_ms * self.sample_rate / 1000)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def fft_length(self) -> int:
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def context_samples(self) -> int:
        """Past audio a new frame needs besides its own hop (the streaming audio state)."""
        return self.window_samples - self.hop_samples

    @property
    def n_frames(self) -> int:
        return self.clip_samples // self.hop_samples

    @property
    def n_steps(self) -> int:
        return self.n_frames // self.stack

    @property
    def step_samples(self) -> int:
        return self.hop_samples * self.stack

    @property
    def n_features(self) -> int:
        return self.n_mfcc or self.n_mels

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrontEnd:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown front-end keys: {sorted(unknown)}")
        return cls(**d)


def save_model_info(run_dir: Path, front_end: FrontEnd, labels: list[str]) -> None:
    """Write labels.txt and frontend.json, the two facts every consumer of a model needs."""
    from pipeline.runtime.files import atomic_write_text

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "labels.txt", "\n".join(labels) + "\n")
    atomic_write_text(run_dir / "frontend.json", json.dumps(front_end.to_dict(), indent=2) + "\n")


def load_model_info(run_dir: Path) -> tuple[FrontEnd, list[str]]:
    run_dir = Path(run_dir)
    labels = [l for l in (run_dir / "labels.txt").read_text().splitlines() if l]
    front_end = FrontEnd.from_dict(json.loads((run_dir / "frontend.json").read_text()))
    return front_end, labels
