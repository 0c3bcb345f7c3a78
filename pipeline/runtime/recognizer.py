"""Models as transcription uses them: clips classified in batches, long audio as a timeline.

Any exported file or export folder will do: a clip model classifies clips and the
streaming model beside it makes timelines; a streaming model alone (the phone's
stream_int8.tflite) does both, each clip streamed from the initial state.
"""
from __future__ import annotations

import importlib.util
import math
import queue
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from pipeline.runtime.errors import ModelError
from pipeline.runtime.model import MANIFEST, ClipModel, StreamingModel, read_manifest
from pipeline.runtime.params import FrontEnd

# Preferred files of an export folder, fastest first.
CLIP_FILES = ("model_batch_float.tflite", "model_float.tflite", "model_dynamic.tflite",
              "model_int8.tflite")
STREAM_FILES = ("stream_batch_float.tflite", "stream_float.tflite", "stream_int8.tflite")


class Recognizer(Protocol):
    """What transcription needs of a model.

    predict: [n, clip_samples] -> [n, n_labels] probabilities; safe to call from
    `instances` threads at once. timeline: whole signal -> (hop_seconds, [n_hops, n_labels]),
    row i covering the audio up to (i + 1) * hop_seconds."""

    front_end: FrontEnd
    labels: list[str]
    instances: int

    def predict(self, clips: np.ndarray) -> np.ndarray: ...

    def timeline(self, audio: np.ndarray) -> tuple[float, np.ndarray]: ...


def pretrained_dir() -> Path:
    """The export bundled in models/pretrained/, found without importing the (Keras)
    models package."""
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("models/pretrained: the bundled model is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pretrained"


def is_export(path: str | Path) -> bool:
    """A .tflite file or a folder with an export manifest (as opposed to a training run)."""
    p = Path(path)
    return p.suffix == ".tflite" or (p.is_dir() and (p / MANIFEST).is_file())


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




class TFLiteRecognizer:
    """Exported LiteRT models: one interpreter per thread for clips, one streaming model for
    timelines."""

    def __init__(self, path: str | Path, instances: int = 1, stream_batch: int = 16):
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        if path.is_dir():
            given = next((folder / n for n in CLIP_FILES + STREAM_FILES
                          if (folder / n).is_file()), None)
            if given is None:
                raise ModelError(f"{folder}: no exported model in this folder")
        else:
            given = path
        streaming = "states" in read_manifest(given)[1]
        self.instances = max(1, instances)
        make: Callable[[], ClipModel | StreamingModel]
        if streaming:
            self._stream_path: Path | None = given
            make = lambda: StreamingModel(given, num_threads=1)  # noqa: E731
        else:
            wanted = STREAM_FILES if stream_batch > 1 else STREAM_FILES[1:]
            self._stream_path = next((folder / n for n in wanted if (folder / n).is_file()),
                                     None)
            make = lambda: ClipModel(given, num_threads=1)  # noqa: E731
        first = make()
        self.path, self.front_end, self.labels = given, first.front_end, list(first.labels)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for m in [first] + [make() for _ in range(self.instances - 1)]:
            self._free.put(m)
        self._stream: StreamingModel | None = None

    def predict(self, clips: np.ndarray) -> np.ndarray:
        model = self._free.get()
        try:
            return model.classify(clips) if isinstance(model, StreamingModel) \
                else model.predict(clips)
        finally:
            self._free.put(model)

    def timeline(self, audio: np.ndarray) -> tuple[float, np.ndarray]:
        if self._stream is None:
            if self._stream_path is None:
                raise ModelError(f"{self.path}: no streaming model beside it for long audio")
            self._stream = StreamingModel(self._stream_path, num_threads=1)  # 2 threads: slower
        stream, fe = self._stream, self.front_end
        warmup = 2 * fe.clip_samples // stream.hop_samples
        return stream.hop_samples / fe.sample_rate, chunked_stream(stream, audio, warmup)


def open_model(path: str | Path | None = None, instances: int = 1,
               stream_batch: int = 16) -> TFLiteRecognizer:
    """An exported .tflite file or export folder; the bundled pretrained model when None."""
    p = pretrained_dir() if path is None else Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: model not found")
    if not is_export(p):
        raise ModelError(f"{p}: not an exported model (a .tflite file or a folder with "
                         f"{MANIFEST})")
    return TFLiteRecognizer(p, instances, stream_batch)
