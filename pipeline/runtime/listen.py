"""Live listening: an exported streaming model run hop by hop on audio as it arrives.

Audio comes from a pipe (raw 16-bit little-endian PCM, or a WAV stream, whose header gives
the rate and channels: `arecord -f S16_LE -r 16000 -c 1 | kws-listen -`) or from a
microphone through sounddevice (the optional [mic] extra, imported only for it). Every
complete hop goes through the model as soon as its bytes are in, the per-hop probabilities
go to a CommandDetector that carries its state from call to call, and each detection is
handed on at once with its latency: the wall-clock time from the arrival of the audio that
completed its hop to the moment it is handed on.
"""

from __future__ import annotations

import os
import queue
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.runtime.detector import CommandDetector
from pipeline.runtime.errors import AudioError, ModelError, one_line
from pipeline.runtime.model import StreamingModel
from pipeline.runtime.recognizer import pretrained_dir

# Files of an export folder that stream one signal, preferred first (the phone's file).
LISTEN_FILES = ("stream_int8.tflite", "stream_float.tflite")
STDIN = "standard input"
MICROPHONE = "microphone"
READ_BYTES = 1 << 14  # at most this much per read; a pipe gives what it holds sooner


@dataclass
class Heard:
    """A detection as it is reported."""

    time_s: float  # stream time at the end of the hop that raised it
    label: str
    score: float
    latency_ms: float  # audio arrival to report
    hop_ms: float  # model and detector time per hop of the batch it came in

    def line(self) -> str:
        return (
            f"{self.time_s:10.3f} s  {self.label:<10} {self.score:.3f}  latency "
            f"{self.latency_ms:.1f} ms  ({self.hop_ms:.3f} ms per hop)"
        )

    def as_dict(self) -> dict:
        return {
            "time_s": self.time_s,
            "label": self.label,
            "score": round(self.score, 4),
            "latency_ms": round(self.latency_ms, 3),
            "hop_ms": round(self.hop_ms, 4),
        }


@dataclass
class Summary:
    """What a listening session did, for its last line."""

    sample_rate: int
    samples: int = 0  # at the model's rate, including the padding of a last hop
    hops: int = 0
    detections: int = 0
    compute_s: float = 0.0
    max_latency_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        per_hop = 1000 * self.compute_s / self.hops if self.hops else 0.0
        latency = f", latency up to {self.max_latency_ms:.1f} ms" if self.detections else ""
        return "; ".join(
            [
                f"{self.samples / self.sample_rate:.2f} s of audio, {self.hops} hops "
                f"({per_hop:.3f} ms each), {self.detections} detections{latency}",
                *self.notes,
            ]
        )


def listen_model(path: str | Path | None) -> StreamingModel:
    """The single-stream model of a .tflite file or export folder (stream_int8, else
    stream_float); the bundled pretrained export when path is None."""
    p = pretrained_dir() if path is None else Path(path)
    if path is None and not p.is_dir():
        raise ModelError(f"{p}: no bundled pretrained model here yet; pass --model")
    if p.is_dir():
        found = next((p / n for n in LISTEN_FILES if (p / n).is_file()), None)
        if found is None:
            raise ModelError(f"{p}: no {' or '.join(LISTEN_FILES)} in this folder")
        p = found
    model = StreamingModel(p)
    if model.batch != 1:
        raise ModelError(
            f"{p}: runs {model.batch} streams per call; listening needs a "
            f"single-stream file ({' or '.join(LISTEN_FILES)})"
        )
    return model


class PcmPipe:
    """16-bit little-endian PCM from a file descriptor, read as it arrives.

    Raw samples are taken at the rate and channel count given; a WAV stream (one starting
    with a RIFF/WAVE header, as arecord writes by default) is recognised and its header's
    rate and channels used instead. Its data length is ignored, since a recorder cannot
    know it in advance."""

    def __init__(self, fd: int, rate: int, channels: int = 1, name: str = STDIN):
        self.fd, self.rate, self.channels, self.name = fd, rate, channels, name
        self.trailing = 0  # bytes at the end that did not make a whole sample frame
        self.wav = False  # whether the input started with a WAV header
        self._buf = bytearray()
        self._eof = False

    def _fill(self, n: int) -> bool:
        """Read until the buffer holds n bytes; False at end of input before that."""
        while len(self._buf) < n and not self._eof:
            chunk = os.read(self.fd, READ_BYTES)
            self._buf += chunk
            self._eof = not chunk
        return len(self._buf) >= n

    def read_header(self) -> None:
        """Consume a WAV header if the input starts with one (it waits for the first 12
        bytes); call before blocks(), which needs the rate and channels it sets."""
        if not self._fill(12) or self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE":
            return
        pos, fmt = 12, None
        while True:
            if not self._fill(pos + 8):
                raise AudioError(self.name, "WAV header ends before its data chunk")
            chunk, size = (
                bytes(self._buf[pos : pos + 4]),
                struct.unpack_from("<I", self._buf, pos + 4)[0],
            )
            if chunk == b"data":
                break
            if not self._fill(pos + 8 + size):
                raise AudioError(self.name, "WAV header ends inside a chunk")
            if chunk == b"fmt " and size >= 16:
                fmt = struct.unpack_from("<HHIIHH", self._buf, pos + 8)
            pos += 8 + size + (size & 1)
        if fmt is None:
            raise AudioError(self.name, "WAV stream without a fmt chunk")
        tag, channels, rate, _, _, bits = fmt
        if tag not in (1, 0xFFFE) or bits != 16:
            raise AudioError(
                self.name,
                f"WAV stream of {bits}-bit samples (format {tag}); "
                "only 16-bit PCM can be read as it arrives",
            )
        if channels < 1 or rate < 1:
            raise AudioError(self.name, f"WAV header says {channels} channels at {rate} Hz")
        self.rate, self.channels, self.wav = rate, channels, True
        del self._buf[: pos + 8]

    def blocks(self) -> Iterator[tuple[np.ndarray, float]]:
        """(float32 mono samples at self.rate, perf_counter time their last byte was read)
        as they come; raises AudioError when the input holds no whole sample."""
        frame, total = 2 * self.channels, 0
        arrived = time.perf_counter()
        while True:
            n = len(self._buf) // frame * frame
            if n:
                pcm = np.frombuffer(bytes(self._buf[:n]), "<i2").reshape(-1, self.channels)
                del self._buf[:n]
                total += len(pcm)
                yield pcm.mean(axis=1, dtype=np.float32) / np.float32(32768), arrived
            if self._eof:
                break
            chunk = os.read(self.fd, READ_BYTES)
            arrived = time.perf_counter()
            self._buf += chunk
            self._eof = not chunk
        self.trailing = len(self._buf)
        if not total:
            why = " after the WAV header" if self.wav else "" if self.trailing else " (empty input)"
            if self.trailing:
                why += f" ({self.trailing} byte(s), less than a sample)"
            raise AudioError(self.name, f"no audio samples{why}")


def microphone_blocks(
    rate: int,
    device: str | int | None = None,
    block: int = 320,
    dropped: Callable[[], None] | None = None,
) -> Iterator[tuple[np.ndarray, float]]:
    """(float32 mono samples, arrival time) from an input device through sounddevice,
    until the caller stops (Ctrl-C). dropped is called for each block the device
    reported an overflow on (audio lost because processing fell behind)."""
    try:
        import sounddevice as sd
    except ImportError:
        raise AudioError(
            MICROPHONE,
            "needs the sounddevice package (pip install "
            "'kws-rnn[mic]'), or pipe audio in: arecord -t raw "
            "-f S16_LE -r 16000 -c 1 | kws-listen -",
        ) from None
    except OSError as exc:  # sounddevice present, the PortAudio library not
        raise AudioError(
            MICROPHONE, f"sounddevice cannot load PortAudio ({one_line(exc)})"
        ) from None
    arrived: queue.SimpleQueue = queue.SimpleQueue()

    def callback(indata, frames, when, status) -> None:
        arrived.put(
            (indata[:, 0].astype(np.float32) / np.float32(32768), time.perf_counter(), bool(status))
        )

    try:
        stream = sd.InputStream(
            samplerate=rate,
            channels=1,
            dtype="int16",
            blocksize=block,
            device=device,
            callback=callback,
        )
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioError(MICROPHONE, one_line(exc)) from None
    with stream:
        while True:
            audio, at, overflow = arrived.get()
            if overflow and dropped is not None:
                dropped()
            yield audio, at


def listen(
    blocks: Iterable[tuple[np.ndarray, float]],
    rate: int,
    model: StreamingModel,
    detector: CommandDetector,
    report: Callable[[Heard], None],
) -> Summary:
    """Run blocks of audio at rate (resampled to the model's rate with soxr's streaming
    resampler when they differ) through the model and the detector hop by hop, calling
    report for every detection as soon as its hop is done. A last partial hop is
    zero-padded, as StreamingModel.run does, so a recording piped in gives the same
    detections as the detector run over run()'s probabilities of it. Stops at the end
    of blocks or on KeyboardInterrupt."""
    target, hop = model.front_end.sample_rate, model.hop_samples
    summary = Summary(target)
    resampler = None
    if rate != target:
        import soxr

        resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
    rest = np.zeros(0, np.float32)

    def run(audio: np.ndarray, arrived: float) -> None:
        nonlocal rest
        audio = np.concatenate([rest, audio])
        n = len(audio) // hop
        rest = audio[n * hop :]
        if not n:
            return
        start = time.perf_counter()
        probs = np.stack([model.step(audio[i * hop : (i + 1) * hop]) for i in range(n)])
        events = detector.process(probs)
        spent = time.perf_counter() - start
        summary.hops += n
        summary.samples += n * hop
        summary.compute_s += spent
        for e in events:
            heard = Heard(
                e.time_s, e.label, e.score, 1000 * (time.perf_counter() - arrived), 1000 * spent / n
            )
            summary.detections += 1
            summary.max_latency_ms = max(summary.max_latency_ms, heard.latency_ms)
            report(heard)

    try:
        for audio, arrived in blocks:
            run(resampler.resample_chunk(audio) if resampler else audio, arrived)
        if resampler:
            run(resampler.resample_chunk(np.zeros(0, np.float32), last=True), time.perf_counter())
        if len(rest):
            run(np.zeros(hop - len(rest), np.float32), time.perf_counter())
    except KeyboardInterrupt:
        summary.notes.append("interrupted")
    return summary
