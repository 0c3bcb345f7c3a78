"""Batch transcription: label every recording of a file tree, one bad file costing one row.

A clip no longer than the model window gets one row (label, score, top-k). A longer
recording gets a timeline: the streaming model's per-hop class probabilities go through the
command detector (moving average, threshold, suppression) and every detection becomes a
row, followed by the file's summary row. Worker threads decode files ahead of the main
thread, which hands fixed-size batches to as many model instances as there are cores
(the interpreter releases the GIL); rows are written and flushed as each batch finishes.

With a .tflite model nothing here imports TensorFlow.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import queue
import sys
import time
import wave
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np

from pipeline.audio import AudioError, load_audio, one_line, resample
from pipeline.io_utils import atomic_write
from pipeline.params import FrontEnd

AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif",
                    ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
FIELDS = ["path", "kind", "label", "score", "top_k", "duration_s", "start_s", "end_s",
          "detections", "error"]
DONE_KINDS = ("clip", "recording")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
EXIT_SOME_FAILED = 3
IGNORED_LABELS = ("_silence_", "_unknown_")


# ----------------------------------------------------------------------------- inputs

def expand_inputs(inputs: Iterable[str], stdin: TextIO | None = None
                  ) -> Iterator[tuple[str, str | None]]:
    """(path, problem) for every input: files, directories (recursive, audio extensions),
    glob patterns, @list files and '-' (paths on stdin), each path once. A path that does
    not exist is passed on so that it gets its own error row; problem is set for an input
    that names no file at all (a pattern matching nothing, an unreadable list)."""
    seen: set[str] = set()

    def one(item: str, from_list: bool) -> Iterator[tuple[str, str | None]]:
        if not from_list and item == "-":
            for line in (stdin or sys.stdin):
                yield from one(line.rstrip("\r\n"), True)
        elif not from_list and item.startswith("@"):
            try:
                lines = Path(item[1:]).read_text().splitlines()
            except OSError as exc:
                yield item, f"cannot read path list ({exc.strerror or exc})"
                return
            except UnicodeDecodeError:
                yield item, "path list is not text"
                return
            for line in lines:
                yield from one(line.strip(), True)
        elif not item or from_list and item.startswith("#"):
            return
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                        yield os.path.join(root, name), None
        elif not os.path.lexists(item) and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item, "no files match this pattern"
            for m in matches:
                yield from (one(m, True) if os.path.isdir(m) else [(m, None)])
        else:
            yield item, None

    for item in inputs:
        for path, problem in one(item, False):
            key = os.path.normpath(path)
            if key not in seen:
                seen.add(key)
                yield path, problem


# ----------------------------------------------------------------------------- decoding

def _pcm16_wav(path: str) -> tuple[np.ndarray, int] | None:
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
    parsed = _pcm16_wav(path)
    if parsed is None:
        return load_audio(path, sample_rate)
    pcm, rate = parsed
    data = pcm.astype(np.float32) / np.float32(32768)  # soundfile's scaling
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, rate, sample_rate)


def _decode_chunk(paths: list[str], sample_rate: int) -> list[tuple[str, np.ndarray | str]]:
    out: list[tuple[str, np.ndarray | str]] = []
    for p in paths:
        try:
            out.append((p, read_audio(p, sample_rate)))
        except AudioError as exc:
            out.append((p, exc.problem))
        except (OSError, MemoryError, ValueError, RuntimeError) as exc:
            out.append((p, f"cannot read audio ({one_line(exc)})"))
    return out


def decoded(items: Iterable[tuple[str, str | None]], sample_rate: int, workers: int,
            chunk: int = 64, budget_bytes: int = 512 << 20
            ) -> Iterator[tuple[str, np.ndarray | str]]:
    """(path, audio or problem) in input order, decoded by worker threads a few chunks
    ahead; the look-ahead is bounded by file sizes on disk so long recordings cannot pile
    up in memory."""
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")
    ahead: deque[tuple[Future | list, int]] = deque()
    in_flight, it, exhausted = 0, iter(items), False
    try:
        while True:
            while not exhausted and (not ahead or len(ahead) < 3 * max(1, workers)
                                     and in_flight < budget_bytes):
                paths, size = [], 0
                for path, problem in it:
                    if problem:
                        if paths:
                            ahead.append((pool.submit(_decode_chunk, paths, sample_rate), size))
                            in_flight += size
                            paths, size = [], 0
                        ahead.append(([(path, problem)], 0))
                        break
                    paths.append(path)
                    try:
                        size += os.stat(path).st_size
                    except OSError:
                        pass
                    if len(paths) >= chunk or size >= budget_bytes // 4:
                        break
                else:
                    exhausted = True
                if paths:
                    ahead.append((pool.submit(_decode_chunk, paths, sample_rate), size))
                    in_flight += size
            if not ahead:
                return
            job, size = ahead.popleft()
            in_flight -= size
            yield from (job.result() if isinstance(job, Future) else job)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- models

class Recognizer:
    """A model as transcription uses it.

    predict: [n, clip_samples] -> [n, n_labels] probabilities; safe to call from several
    threads at once. timeline: whole signal -> (hop_seconds, [n_hops, n_labels]), row i
    covering the audio up to (i + 1) * hop_seconds."""

    front_end: FrontEnd
    labels: list[str]
    instances: int = 1

    def predict(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def timeline(self, audio: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError


def chunked_stream(stream, audio: np.ndarray, warmup_hops: int) -> np.ndarray:
    """Per-hop probabilities of a streaming model over a whole signal.

    A model with batch K > 1 runs the signal as K consecutive segments side by side, each
    first fed the warmup_hops of audio before it so its state has settled when its own
    outputs begin (the recurrent state forgets within about a clip); K = 1 streams the
    signal straight through."""
    hop, k = stream.hop_samples, getattr(stream, "batch", 1)
    n = max(1, math.ceil(len(audio) / hop))
    stream.reset()
    if k == 1:
        padded = np.zeros(n * hop, np.float32)
        padded[:len(audio)] = audio
        return np.asarray(stream.run(padded), np.float32)
    seg = math.ceil(n / k)
    lead = warmup_hops * hop
    ext = np.zeros(lead + k * seg * hop, np.float32)
    ext[lead:lead + len(audio)] = audio
    lanes = np.lib.stride_tricks.sliding_window_view(ext, lead + seg * hop)[::seg * hop][:k]
    out = None
    for s in range(warmup_hops + seg):
        p = stream.step(np.ascontiguousarray(lanes[:, s * hop:(s + 1) * hop]))
        if out is None:
            out = np.empty((k, seg, p.shape[-1]), np.float32)
        if s >= warmup_hops:
            out[:, s - warmup_hops] = p
    return out.reshape(k * seg, -1)[:n]


class TFLiteRecognizer(Recognizer):
    """An exported .tflite clip model and the streaming model exported beside it."""

    def __init__(self, path: str | Path, instances: int, stream_batch: int):
        from pipeline.runtime import ClipModel, StreamingModel

        self.path = Path(path)
        first = ClipModel(str(path), num_threads=1)
        self.front_end, self.labels = first.front_end, list(first.labels)
        self.instances = max(1, instances)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for m in [first] + [ClipModel(str(path), num_threads=1)
                            for _ in range(self.instances - 1)]:
            self._free.put(m)
        self._stream_args = (StreamingModel, stream_batch)
        self._stream = None

    def predict(self, clips: np.ndarray) -> np.ndarray:
        model = self._free.get()
        try:
            return model.predict(clips)
        finally:
            self._free.put(model)

    def _streaming_model(self):
        if self._stream is None:
            cls, batch = self._stream_args
            names = ["stream_batch_float.tflite"] if batch > 1 else []
            found = [self.path.with_name(n) for n in names + ["stream_float.tflite"]
                     if self.path.with_name(n).exists()]
            if not found:
                raise ValueError(f"{self.path.with_name('stream_float.tflite')}: streaming "
                                 "model not found beside the clip model")
            from pipeline.runtime import ModelError

            try:
                self._stream = cls(str(found[0]), num_threads=1)  # 2 threads measured slower
            except ModelError as exc:
                raise ValueError(str(exc)) from None
        return self._stream

    def timeline(self, audio: np.ndarray) -> tuple[float, np.ndarray]:
        stream = self._streaming_model()
        fe = self.front_end
        warmup = 2 * fe.clip_samples // stream.hop_samples
        return stream.hop_samples / fe.sample_rate, chunked_stream(stream, audio, warmup)


class _KerasStream:
    """The Keras streaming twin with batch K, stepped through a compiled function."""

    def __init__(self, path: str | Path, batch: int):
        import tensorflow as tf

        from pipeline.runs import build_like

        model = build_like(path, "stream", batch)
        self.batch = batch
        self.hop_samples = int(model.inputs[0].shape[1])
        self._shapes = [tuple(t.shape) for t in model.inputs[1:]]
        self._call = tf.function(lambda xs: model(xs, training=False))
        self.reset()

    def reset(self) -> None:
        self._state = [np.zeros(s, np.float32) for s in self._shapes]

    def step(self, hops: np.ndarray) -> np.ndarray:
        probs, *self._state = self._call([hops, *self._state])
        return probs.numpy()


class KerasRecognizer(Recognizer):
    """A run directory or .keras file (imports TensorFlow)."""

    def __init__(self, path: str | Path, stream_batch: int):
        import tensorflow as tf

        from pipeline.runs import load_run

        model, self.front_end, self.labels = load_run(path)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[
            tf.TensorSpec([None, self.front_end.clip_samples], tf.float32)])
        self._path, self._stream_batch, self._stream = path, max(2, stream_batch), None

    def predict(self, clips: np.ndarray) -> np.ndarray:
        return self._call(clips).numpy()

    def timeline(self, audio: np.ndarray) -> tuple[float, np.ndarray]:
        if self._stream is None:
            self._stream = _KerasStream(self._path, self._stream_batch)
        fe = self.front_end
        warmup = 2 * fe.clip_samples // fe.step_samples
        return fe.step_samples / fe.sample_rate, chunked_stream(self._stream, audio, warmup)


def open_model(path: str | Path, instances: int = 1, stream_batch: int = 16) -> Recognizer:
    """A .tflite file (the TensorFlow-free default), or a run directory / .keras file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: model not found")
    if p.suffix != ".tflite":
        return KerasRecognizer(p, stream_batch)
    from pipeline.runtime import ModelError

    try:
        return TFLiteRecognizer(p, instances, stream_batch)
    except ModelError as exc:
        raise ValueError(str(exc)) from None


# ----------------------------------------------------------------------------- rows

def _csv_value(key: str, value) -> str:
    if key == "top_k" and isinstance(value, list):
        return " ".join(f"{d['label']}:{d['score']}" for d in value)
    return "" if value is None else str(value)


class RowWriter:
    """CSV or JSONL by extension (CSV on stdout when path is None)."""

    def __init__(self, path: Path | None, append: bool = False):
        self.jsonl = path is not None and path.suffix.lower() in JSONL_SUFFIXES
        if path is None:
            self.f: TextIO = sys.stdout
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a" if append else "w", newline="" if not self.jsonl else None)
        self._owned = path is not None
        if not self.jsonl:
            self._csv = csv.writer(self.f)
            if not (append and path.stat().st_size):
                self._csv.writerow(FIELDS)

    def write(self, row: dict) -> None:
        if self.jsonl:
            self.f.write(json.dumps({k: v for k, v in row.items() if v not in (None, "")}) + "\n")
        else:
            self._csv.writerow([_csv_value(k, row.get(k)) for k in FIELDS])

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self.f.close()


def read_rows(path: Path) -> list[dict]:
    """The rows of an output file; a half-written last line (an interrupted run) is dropped."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows
    return list(csv.DictReader(io.StringIO(text, newline="")))


def prepare_resume(path: Path) -> set[str]:
    """Paths already transcribed in path. The file is rewritten (atomically) to keep only
    their rows, so a file that failed, or was cut off half way, is done again, once."""
    if not path.exists():
        return set()
    rows = read_rows(path)
    done = {r["path"] for r in rows if r.get("kind") in DONE_KINDS and r.get("path")}

    def write(tmp: str) -> None:
        w = RowWriter(Path(tmp))
        for r in rows:
            if r.get("path") in done:
                w.write(r)
        w.close()
    atomic_write(path, write)
    return done


# ----------------------------------------------------------------------------- transcription

@dataclass
class Settings:
    top_k: int = 3
    threshold: float | None = None
    average_window_s: float | None = None
    suppression_s: float | None = None
    batch: int = 256
    decode_workers: int = 2
    plot_dir: Path | None = None


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

    def line(self) -> str:
        rate = self.files / self.wall_s if self.wall_s else 0.0
        rt = self.audio_s / self.wall_s if self.wall_s else 0.0
        return (f"{self.files} files ({self.clips} clips, {self.recordings} recordings, "
                f"{self.errors} errors), {self.audio_s:.1f} s of audio, {self.detections} "
                f"detections in {self.wall_s:.2f} s: {rate:.0f} files/s, {rt:.0f}x real time")

    def as_dict(self) -> dict:
        return {"files": self.files, "clips": self.clips, "recordings": self.recordings,
                "errors": self.errors, "audio_s": round(self.audio_s, 3),
                "detections": self.detections, "wall_s": round(self.wall_s, 3),
                "files_per_s": round(self.files / self.wall_s, 1) if self.wall_s else 0.0,
                "x_real_time": round(self.audio_s / self.wall_s, 1) if self.wall_s else 0.0}


def top_k_rows(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[int, float, list]]:
    """(best index, best score, top-k list) per row, sorted once for the whole batch."""
    order = np.argsort(-probs, axis=1)[:, :max(1, k)]
    scores = np.take_along_axis(probs, order, axis=1).round(4).tolist()
    return [(o[0], s[0], [{"label": labels[j], "score": v} for j, v in zip(o[:k], s[:k])])
            for o, s in zip(order.tolist(), scores)]


class Transcriber:
    """Runs inputs through a model into a RowWriter and counts what it did."""

    def __init__(self, model: Recognizer, writer: RowWriter, settings: Settings,
                 progress=None):
        self.model, self.writer, self.s, self.progress = model, writer, settings, progress
        self.fe = model.front_end
        self.summary = Summary()
        self._detector_options = {k: v for k, v in (
            ("threshold", settings.threshold), ("average_window_s", settings.average_window_s),
            ("suppression_s", settings.suppression_s)) if v is not None}

    def run(self, items: Iterable[tuple[str, str | None]]) -> Summary:
        start = time.perf_counter()
        clips: list[tuple[str, np.ndarray]] = []
        pending: deque[tuple[Future, list]] = deque()
        pool = ThreadPoolExecutor(self.model.instances, thread_name_prefix="infer")
        try:
            for path, audio in decoded(items, self.fe.sample_rate, self.s.decode_workers):
                if isinstance(audio, str):
                    self._error(path, audio)
                elif len(audio) <= self.fe.clip_samples:
                    clips.append((path, audio))
                    if len(clips) >= self.s.batch:
                        pending.append((pool.submit(self.model.predict, self._stack(clips)),
                                        clips))
                        clips = []
                    while pending and (pending[0][0].done()
                                       or len(pending) > self.model.instances):
                        self._clip_rows(*pending.popleft())
                else:
                    while pending:
                        self._clip_rows(*pending.popleft())
                    self._recording(path, audio)
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
            batch[i, :len(a)] = a
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
        for (path, a), (best, score, top) in zip(clips, top_k_rows(probs, self.model.labels,
                                                                    self.s.top_k)):
            self.writer.write({"path": path, "kind": "clip", "label": self.model.labels[best],
                               "score": score, "top_k": top,
                               "duration_s": round(len(a) / sr, 4)})
            self.summary.audio_s += len(a) / sr
        self.writer.flush()
        self.summary.clips += len(clips)
        self._done(len(clips))

    def _recording(self, path: str, audio: np.ndarray) -> None:
        from pipeline.runtime import CommandDetector

        sr = self.fe.sample_rate
        try:
            hop_s, probs = self.model.timeline(audio)
            found = CommandDetector(self.model.labels, hop_s,
                                    **self._detector_options).process(probs)
        except (ValueError, RuntimeError, MemoryError) as exc:
            self._error(path, f"inference failed ({one_line(exc)})")
            return
        rows = []
        for d in found:
            start, end = word_span(audio, sr, d.time_s, self.fe.clip_seconds)
            rows.append({"path": path, "kind": "detection", "label": d.label,
                         "score": round(float(d.score), 4), "start_s": start, "end_s": end})
        best = max(found, key=lambda d: d.score, default=None)
        duration = len(audio) / sr
        summary_row = {"path": path, "kind": "recording",
                       "label": best.label if best else None,
                       "score": round(float(best.score), 4) if best else None,
                       "duration_s": round(duration, 4), "detections": len(found)}
        if self.s.plot_dir is not None:
            try:
                plot_timeline(self.s.plot_dir / plot_name(path), audio, sr, hop_s, probs,
                              self.model.labels, rows, path)
            except (OSError, ValueError, MemoryError) as exc:
                summary_row["error"] = f"plot failed ({one_line(exc)})"
        for r in rows + [summary_row]:
            self.writer.write(r)
        self.writer.flush()
        self.summary.recordings += 1
        self.summary.audio_s += duration
        self.summary.detections += len(found)
        self._done(1)


def word_span(audio: np.ndarray, sample_rate: int, time_s: float, window_s: float
              ) -> tuple[float, float]:
    """Where the detected word lies: the loud part (within 20 dB of the peak) of the
    model window that ended at the detection."""
    from pipeline.streamtest import speech_span

    end = min(len(audio), round(time_s * sample_rate))
    begin = max(0, end - round(window_s * sample_rate))
    if end - begin < sample_rate // 100:
        return round(begin / sample_rate, 3), round(end / sample_rate, 3)
    s, e = speech_span(audio[begin:end], sample_rate)
    return round(begin / sample_rate + s, 3), round(begin / sample_rate + e, 3)


# ----------------------------------------------------------------------------- plots

def plot_name(path: str) -> str:
    """A PNG name unique per input path (directories flattened with '__')."""
    flat = os.path.normpath(path).lstrip(os.sep).replace(os.sep, "__")
    return flat.replace("..", "up") + ".png"


def plot_timeline(out: Path, audio: np.ndarray, sample_rate: int, hop_s: float,
                  probs: np.ndarray, labels: list[str], detections: list[dict],
                  title: str) -> None:
    """Spectrogram, per-hop class probabilities and detections on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = len(audio) / sample_rate
    n_fft = 512
    hop = max(n_fft // 2, len(audio) // 3000)
    frames = max(1, (len(audio) - n_fft) // hop + 1)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    padded = np.pad(audio, (0, max(0, n_fft - len(audio))))
    spec = np.abs(np.fft.rfft(padded[idx] * np.hanning(n_fft), axis=1)) ** 2
    spec_db = 10 * np.log10(spec.T + 1e-10)

    width = float(np.clip(duration / 2, 10, 30))
    fig, axes = plt.subplots(3, 1, figsize=(width, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1]})
    axes[0].imshow(spec_db, origin="lower", aspect="auto", cmap="magma",
                   extent=(0, duration, 0, sample_rate / 2),
                   vmin=spec_db.max() - 80, vmax=spec_db.max())
    axes[0].set_ylabel("Hz")
    axes[0].set_title(title, fontsize=9)
    t = (np.arange(len(probs)) + 1) * hop_s
    colors = plt.get_cmap("tab20")
    for j, name in enumerate(labels):
        ignored = name in IGNORED_LABELS
        axes[1].plot(t, probs[:, j], lw=0.6 if ignored else 0.9, ls=":" if ignored else "-",
                     color="0.6" if ignored else colors(j % 20), label=name)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("probability")
    axes[1].legend(loc="upper right", fontsize=6, ncol=min(len(labels), 6))
    for d in detections:
        j = labels.index(d["label"]) if d["label"] in labels else 0
        axes[2].axvspan(d["start_s"], d["end_s"], color=colors(j % 20), alpha=0.8)
        axes[2].text((d["start_s"] + d["end_s"]) / 2, 0.5, d["label"], ha="center",
                     va="center", fontsize=7, rotation=90 if duration > 60 else 0)
    axes[2].set_yticks([])
    axes[2].set_ylabel("detections")
    axes[2].set_xlabel("seconds")
    axes[2].set_xlim(0, duration)
    fig.tight_layout()
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def run_transcription(model: Recognizer, items: Iterable[tuple[str, str | None]],
                      out: Path | None, settings: Settings, resume: bool = False,
                      progress: Callable[[int], object] | None = None) -> Summary:
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
