"""Batch transcription: label every recording of a file tree, one bad file costing one row.

A clip no longer than the model window gets one row (label, score, top-k). A longer
recording gets a timeline: the streaming model's per-hop class probabilities go through the
command detector (moving average, threshold, suppression; by default the operating point
recorded in the export's manifest) and every detection becomes a row, followed by the
file's summary row. Worker threads decode clips ahead of the main thread, which hands
fixed-size batches to as many model instances as there are cores (the interpreter
releases the GIL); rows are written and flushed as each batch finishes.
Which is which is decided from the header; a recording is streamed from the file in
blocks and nothing kept of it grows with its length.

With a .tflite model nothing here imports TensorFlow.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.runtime.audio import DEFAULT_LIMITS, AudioLimits, Header, stream_audio, word_span
from pipeline.runtime.detector import CommandDetector, Detection, detector_for
from pipeline.runtime.errors import AudioError, one_line
from pipeline.runtime.inputs import Decoded, decoded
from pipeline.runtime.plot import Envelope, Spectrogram
from pipeline.runtime.recognizer import Recognizer
from pipeline.runtime.rows import RowWriter, prepare_resume

EXIT_SOME_FAILED = 3


@dataclass
class Settings:
    """threshold, average_window_s and suppression_s override the model's operating point
    (its manifest's detector block, else the detector's defaults) one value each."""

    top_k: int = 3
    threshold: float | None = None
    average_window_s: float | None = None
    suppression_s: float | None = None
    batch: int = 256
    decode_workers: int = 2
    plot_dir: Path | None = None
    limits: AudioLimits = DEFAULT_LIMITS
    block_frames: int = 1 << 16  # frames of a long recording read at a time


@dataclass
class Summary:
    files: int = 0
    clips: int = 0
    recordings: int = 0
    errors: int = 0
    audio_s: float = 0.0
    detections: int = 0
    wall_s: float = 0.0
    failed: list[str] = field(default_factory=list)
    detector: dict = field(default_factory=dict)  # the operating point of the timelines
    detector_line: str = ""  # which one it is and where it came from, for people

    def line(self) -> str:
        rate = self.files / self.wall_s if self.wall_s else 0.0
        rt = self.audio_s / self.wall_s if self.wall_s else 0.0
        return (
            f"{self.files} files ({self.clips} clips, {self.recordings} recordings, "
            f"{self.errors} errors), {self.audio_s:.1f} s of audio, {self.detections} "
            f"detections in {self.wall_s:.2f} s: {rate:.0f} files/s, {rt:.0f}x real time"
        )

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "clips": self.clips,
            "recordings": self.recordings,
            "errors": self.errors,
            "audio_s": round(self.audio_s, 3),
            "detections": self.detections,
            "wall_s": round(self.wall_s, 3),
            "files_per_s": round(self.files / self.wall_s, 1) if self.wall_s else 0.0,
            "x_real_time": round(self.audio_s / self.wall_s, 1) if self.wall_s else 0.0,
            **({"detector": self.detector} if self.detector else {}),
        }


def top_k_rows(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[int, float, list]]:
    """(best index, best score, top-k list) per row, sorted once for the whole batch."""
    order = np.argsort(-probs, axis=1)[:, : max(1, k)]
    # rounded in float64: a float32 0.9602 prints as 0.9602000117301941
    scores = np.take_along_axis(probs, order, axis=1).astype(np.float64).round(4).tolist()
    return [
        (o[0], s[0], [{"label": labels[j], "score": v} for j, v in zip(o[:k], s[:k])])
        for o, s in zip(order.tolist(), scores)
    ]


class Transcriber:
    """Runs inputs through a model into a RowWriter and counts what it did."""

    def __init__(self, model: Recognizer, writer: RowWriter, settings: Settings, progress=None):
        self.model, self.writer, self.s, self.progress = model, writer, settings, progress
        self.fe = model.front_end
        self.summary = Summary()
        # Built once here so that an unusable operating point fails the run, not each file.
        detector, self.summary.detector_line = detector_for(
            model.labels,
            self.fe.step_samples / self.fe.sample_rate,
            getattr(model, "manifest", {}),  # a Keras run has none
            threshold=settings.threshold,
            average_window_s=settings.average_window_s,
            suppression_s=settings.suppression_s,
        )
        self.summary.detector = self._detector_options = detector.operating_point

    def run(self, items: Iterable[tuple[str, str | None]]) -> Summary:
        """Decode items ahead in worker threads and transcribe them."""
        return self.transcribe(
            decoded(
                items,
                self.fe.sample_rate,
                self.s.decode_workers,
                self.fe.clip_samples,
                self.s.limits,
            )
        )

    def transcribe(self, items: Iterable[tuple[str, Decoded]]) -> Summary:
        """Rows of inputs already decoded (a clip's audio at the model's rate, a
        recording's header, or a problem), however and wherever they were decoded."""
        start = time.perf_counter()
        clips: list[tuple[str, np.ndarray]] = []
        pending: deque[tuple[Future, list]] = deque()
        pool = ThreadPoolExecutor(self.model.instances, thread_name_prefix="infer")
        try:
            for path, audio in items:
                if isinstance(audio, str):
                    self._error(path, audio)
                elif isinstance(audio, np.ndarray) and len(audio) <= self.fe.clip_samples:
                    clips.append((path, audio))
                    if len(clips) >= self.s.batch:
                        pending.append((pool.submit(self.model.predict, self._stack(clips)), clips))
                        clips = []
                    while pending and (pending[0][0].done() or len(pending) > self.model.instances):
                        self._clip_rows(*pending.popleft())
                else:
                    while pending:
                        self._clip_rows(*pending.popleft())
                    if isinstance(audio, Header):
                        self._recording(
                            path,
                            stream_audio(
                                path, self.fe.sample_rate, self.s.block_frames, self.s.limits
                            ),
                            audio.samples_at(self.fe.sample_rate),
                        )
                    else:  # a header that understated the length
                        self._recording(path, [audio], len(audio))
            if clips:
                pending.append((pool.submit(self.model.predict, self._stack(clips)), clips))
            while pending:
                self._clip_rows(*pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.writer.flush()
            self.summary.wall_s = time.perf_counter() - start
        return self.summary

    def _stack(self, clips: list[tuple[str, np.ndarray]]) -> np.ndarray:
        batch = np.zeros((len(clips), self.fe.clip_samples), np.float32)
        for i, (_, a) in enumerate(clips):
            batch[i, : len(a)] = a
        return batch

    def _done(self, n: int) -> None:
        self.summary.files += n
        if self.progress is not None:
            self.progress.update(n)

    def _error(self, path: str, problem: str) -> None:
        self.writer.write({"path": path, "kind": "error", "error": problem})
        self.writer.flush()
        self.summary.errors += 1
        self.summary.failed.append(path)
        self._done(1)

    def _clip_rows(self, job: Future, clips: list[tuple[str, np.ndarray]]) -> None:
        try:
            probs = job.result()
        except (ValueError, RuntimeError) as exc:  # a failed batch costs its rows, not the run
            for path, _ in clips:
                self._error(path, f"inference failed ({one_line(exc)})")
            return
        sr = self.fe.sample_rate
        for (path, a), (best, score, top) in zip(
            clips, top_k_rows(probs, self.model.labels, self.s.top_k)
        ):
            self.writer.write(
                {
                    "path": path,
                    "kind": "clip",
                    "label": self.model.labels[best],
                    "score": score,
                    "top_k": top,
                    "duration_s": round(len(a) / sr, 4),
                }
            )
            self.summary.audio_s += len(a) / sr
        self.writer.flush()
        self.summary.clips += len(clips)
        self._done(len(clips))

    def _recording(self, path: str, blocks: Iterable[np.ndarray], expected: int) -> None:
        """Rows of one recording streamed block by block: the detector carries its state
        from one batch of hops to the next, and only the audio a detection may still need
        is kept (one clip before the first hop not yet scored, up to the read position)."""
        fe, labels = self.fe, self.model.labels
        sr, hop = fe.sample_rate, fe.step_samples
        recent = RecentAudio()
        plot_dir = self.s.plot_dir
        spectrogram = Spectrogram(expected) if plot_dir is not None else None
        envelope = Envelope(expected // hop, len(labels)) if plot_dir is not None else None

        def read() -> Iterator[np.ndarray]:
            for block in blocks:
                recent.add(block)
                if spectrogram is not None:
                    spectrogram.add(block)
                yield block

        rows: list[dict] = []
        found: list[Detection] = []
        scored = 0
        try:
            detector = CommandDetector(labels, hop / sr, **self._detector_options)
            for probs in self.model.timeline(read(), expected):
                for d in detector.process(probs):
                    start, end = word_span(recent.span, recent.end, d.time_s, sr, fe.clip_seconds)
                    found.append(d)
                    rows.append(
                        {
                            "path": path,
                            "kind": "detection",
                            "label": d.label,
                            "score": round(float(d.score), 4),
                            "start_s": start,
                            "end_s": end,
                        }
                    )
                scored += len(probs)
                recent.drop_before(scored * hop - fe.clip_samples)
                if envelope is not None:
                    envelope.add(probs)
        except AudioError as exc:
            self._error(path, exc.problem)
            return
        except (ValueError, RuntimeError, MemoryError) as exc:
            self._error(path, f"inference failed ({one_line(exc)})")
            return
        best = max(found, key=lambda d: d.score, default=None)
        duration = recent.end / sr
        summary_row = {
            "path": path,
            "kind": "recording",
            "label": best.label if best else None,
            "score": round(float(best.score), 4) if best else None,
            "duration_s": round(duration, 4),
            "detections": len(found),
        }
        if plot_dir is not None and spectrogram is not None and envelope is not None:
            try:
                from pipeline.runtime.plot import plot_name, plot_timeline

                plot_timeline(
                    plot_dir / plot_name(path),
                    spectrogram,
                    envelope,
                    sr,
                    hop / sr,
                    labels,
                    rows,
                    path,
                )
            except (OSError, ValueError, MemoryError) as exc:
                summary_row["error"] = f"plot failed ({one_line(exc)})"
        for r in rows + [summary_row]:
            self.writer.write(r)
        self.writer.flush()
        self.summary.recordings += 1
        self.summary.audio_s += duration
        self.summary.detections += len(found)
        self._done(1)


class RecentAudio:
    """The tail of a signal read block by block: samples from some position up to `end`,
    the number read so far."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self.start = self.end = 0

    def add(self, block: np.ndarray) -> None:
        self._blocks.append(block)
        self.end += len(block)

    def drop_before(self, sample: int) -> None:
        """Forget the blocks that end at or before sample."""
        while self._blocks and self.start + len(self._blocks[0]) <= sample:
            self.start += len(self._blocks.popleft())

    def span(self, begin: int, end: int) -> np.ndarray:
        """Samples begin..end (begin >= start, end <= self.end)."""
        parts, at = [], self.start
        for block in self._blocks:
            if at >= end:
                break
            if at + len(block) > begin:
                parts.append(block[max(0, begin - at) : end - at])
            at += len(block)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def run_transcription(
    model: Recognizer,
    items: Iterable[tuple[str, str | None]],
    out: Path | None,
    settings: Settings,
    resume: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> Summary:
    """Transcribe items into out (stdout if None), skipping what out holds when resuming."""
    done = prepare_resume(out) if resume and out is not None else set()
    writer = RowWriter(out, append=resume and out is not None and out.exists())
    try:
        todo = [(p, e) for p, e in items if p not in done]
        bar = progress(len(todo)) if progress else None
        try:
            return Transcriber(model, writer, settings, bar).run(todo)
        finally:
            if bar is not None:
                bar.close()
    finally:
        writer.close()
