"""Reading audio: any file soundfile reads, as float32 mono at the model's rate.

Needs only numpy, soundfile and soxr, so the TFLite runtime can use it without TensorFlow.
A header is not trusted: its rate, channel count and duration are checked against
AudioLimits before any sample is decoded, since a corrupt or hostile header (a 1 Hz rate
on a 20 KB file) would otherwise be resampled into hours of audio.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from pipeline.runtime.errors import AudioError, one_line

# Everything soundfile (libsndfile) decodes that people store speech in; data loading and
# transcription both read this set.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aiff",
        ".aif",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
    }
)


@dataclass(frozen=True)
class Header:
    """What a file declares about its samples."""

    rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate

    def samples_at(self, rate: int) -> int:
        """Length after resampling to rate, as soxr rounds it (half up)."""
        if rate == self.rate:
            return self.frames
        return (2 * self.frames * rate + self.rate) // (2 * self.rate)


@dataclass(frozen=True)
class AudioLimits:
    """The plausible range of a header; each bound names the transcribe option that moves it."""

    min_rate: int = 1000
    max_rate: int = 384000
    max_channels: int = 32
    max_duration_s: float = 24 * 3600.0

    def check(self, path: str | os.PathLike, header: Header) -> None:
        """Raise AudioError for an empty or implausible header."""
        if header.frames <= 0:
            raise AudioError(path, "no audio samples (zero length)")
        if not self.min_rate <= header.rate <= self.max_rate:
            flag = "--min-rate" if header.rate < self.min_rate else "--max-rate"
            raise AudioError(
                path,
                f"implausible sample rate {header.rate} Hz (allowed "
                f"{self.min_rate}-{self.max_rate} Hz, see {flag})",
            )
        if not 1 <= header.channels <= self.max_channels:
            raise AudioError(
                path,
                f"implausible channel count {header.channels} (allowed "
                f"1-{self.max_channels}, see --max-channels)",
            )
        if header.duration_s > self.max_duration_s:
            raise AudioError(
                path,
                f"implausible duration {header.duration_s:.1f} s (allowed "
                f"up to {self.max_duration_s:g} s, see --max-duration)",
            )


DEFAULT_LIMITS = AudioLimits()


def _checked_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(path, "file not found")
    if p.is_dir():
        raise AudioError(path, "is a directory")
    if not os.access(p, os.R_OK):
        raise AudioError(path, "permission denied")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file")
    return p


def _wav16_header(f: BinaryIO) -> tuple[wave.Wave_read, Header] | None:
    """The wave module's reader and header of a 16-bit PCM WAV, frames capped at the data
    the file really holds; None for anything else (a data size of 0 included: a streaming
    writer's placeholder), which soundfile then reads (and words the errors of)."""
    try:
        w = wave.open(f, "rb")
        channels, frames, rate = w.getnchannels(), w.getnframes(), w.getframerate()
        if w.getsampwidth() != 2 or frames == 0:
            return None
        held = (os.fstat(f.fileno()).st_size - f.tell()) // (2 * channels)
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    return w, Header(rate, channels, min(frames, held))


def _mono(path: str | os.PathLike, data: np.ndarray) -> np.ndarray:
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def _pcm16(
    path: str | os.PathLike, limits: AudioLimits, too_long: Callable[[Header], bool]
) -> tuple[np.ndarray, int] | Header | None:
    """Samples and rate of a 16-bit PCM WAV read with the standard library's wave module,
    or its header when too_long says so; None for anything else (other encodings,
    truncation, a path that cannot be opened), which soundfile then reads."""
    try:
        with open(path, "rb") as f:
            parsed = _wav16_header(f)
            if parsed is None:
                return None
            w, header = parsed
            limits.check(path, header)
            if too_long(header):
                return header
            if header.frames != w.getnframes():
                return None
            raw = w.readframes(header.frames)
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    if len(raw) != header.frames * header.channels * 2:
        return None
    return np.frombuffer(raw, "<i2").reshape(header.frames, header.channels), header.rate


def pcm16_wav(
    path: str | os.PathLike, limits: AudioLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, int] | None:
    """Samples and rate of a 16-bit PCM WAV, header checked against limits, else None:
    anything else goes to soundfile, which also words the errors."""
    parsed = _pcm16(path, limits, lambda header: False)
    return None if isinstance(parsed, Header) else parsed


def _decode(
    path: str | os.PathLike, sample_rate: int, limits: AudioLimits, longest: int | None, fast: bool
) -> np.ndarray | Header:
    """The whole file as float32 mono at sample_rate or, when that would be longer than
    longest samples, its checked header (nothing decoded). fast: 16-bit WAVs through the
    wave module, skipping soundfile's per-call overhead that dominates a 1 s clip."""

    def too_long(header: Header) -> bool:
        return longest is not None and header.samples_at(sample_rate) > longest

    parsed = _pcm16(path, limits, too_long) if fast else None
    if isinstance(parsed, Header):
        return parsed
    if parsed is not None:
        pcm, rate = parsed
        data = pcm.astype(np.float32) / np.float32(32768)  # soundfile's scaling
        return resample(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], rate, sample_rate)
    p = _checked_path(path)
    try:
        with sf.SoundFile(str(p)) as f:
            header = Header(f.samplerate, f.channels, f.frames)
            limits.check(path, header)
            if too_long(header):
                return header
            data = f.read(dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types for unreadable data
        raise AudioError(path, f"cannot decode audio ({one_line(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples (zero length)")
    return resample(_mono(path, data), header.rate, sample_rate)


def load_audio(
    path: str | os.PathLike, sample_rate: int, limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Decode, down-mix and resample (soxr, high quality) to float32 mono in [-1, 1]; the
    header is checked against limits before any sample is decoded."""
    audio = _decode(path, sample_rate, limits, None, fast=False)
    assert isinstance(audio, np.ndarray)
    return audio


def read_audio(
    path: str | os.PathLike, sample_rate: int, limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """load_audio's result; 16-bit PCM WAVs (the common case, thousands of them) are read
    with the wave module."""
    audio = _decode(path, sample_rate, limits, None, fast=True)
    assert isinstance(audio, np.ndarray)
    return audio


def read_clip(
    path: str | os.PathLike, sample_rate: int, longest: int, limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray | Header:
    """read_audio's result when it is at most longest samples, else the checked header (a
    recording, for stream_audio): what batch transcription needs of a file, from one open,
    without ever decoding a long file whole."""
    return _decode(path, sample_rate, limits, longest, fast=True)


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
    return audio[start : start + n]


def stream_audio(
    path: str | os.PathLike,
    sample_rate: int,
    block_frames: int = 1 << 16,
    limits: AudioLimits = DEFAULT_LIMITS,
) -> Iterator[np.ndarray]:
    """read_audio's result in consecutive pieces, block_frames of the file at a time, so a
    recording of any length costs one block of memory. soxr's streaming resampler gives
    the same samples as resampling the whole signal at once, whatever the block size."""
    p = _checked_path(path)
    try:
        f = sf.SoundFile(str(p))
    except Exception as exc:  # soundfile raises several types for unreadable data
        raise AudioError(path, f"cannot decode audio ({one_line(exc)})") from None
    with f:
        limits.check(path, Header(f.samplerate, f.channels, f.frames))
        stream = None
        if f.samplerate != sample_rate:
            import soxr

            stream = soxr.ResampleStream(
                f.samplerate, sample_rate, 1, dtype="float32", quality="HQ"
            )
        while True:
            try:
                data = f.read(block_frames, dtype="float32", always_2d=True)
            except Exception as exc:  # soundfile raises several types for unreadable data
                raise AudioError(path, f"cannot decode audio ({one_line(exc)})") from None
            last = len(data) < block_frames
            mono = _mono(path, data)
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield np.ascontiguousarray(out, np.float32)
            if last:
                return


def speech_span(
    audio: np.ndarray, sample_rate: int, floor_db: float = -20.0, frame_s: float = 0.01
) -> tuple[float, float]:
    """(start_s, end_s) of the frames within floor_db of the loudest 10 ms frame."""
    n = max(1, round(frame_s * sample_rate))
    frames = len(audio) // n
    if frames == 0:
        return 0.0, len(audio) / sample_rate
    power = np.mean(audio[: frames * n].reshape(frames, n).astype(np.float64) ** 2, axis=1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (floor_db / 10))
    return loud[0] * n / sample_rate, (loud[-1] + 1) * n / sample_rate


def word_span(
    audio_between: Callable[[int, int], np.ndarray],
    length: int,
    time_s: float,
    sample_rate: int,
    window_s: float,
) -> tuple[float, float]:
    """(start_s, end_s) of a word detected at time_s: the loud part (speech_span) of the
    model window that ended there. audio_between(begin, end) gives samples of a signal of
    `length` samples, so a stream that keeps only recent audio can answer too."""
    end = min(length, round(time_s * sample_rate))
    begin = max(0, end - round(window_s * sample_rate))
    if end - begin < sample_rate // 100:
        s, e = 0.0, (end - begin) / sample_rate
    else:
        s, e = speech_span(audio_between(begin, end), sample_rate)
    return round(begin / sample_rate + s, 3), round(begin / sample_rate + e, 3)
