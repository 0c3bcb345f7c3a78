"""Models as transcription uses them: clips classified in batches, long audio as a timeline.

Any exported file or export folder will do: a clip model classifies clips and the
streaming model beside it makes timelines; a streaming model alone (the phone's
stream_int8.tflite) does both, each clip streamed from the initial state.
"""

from __future__ import annotations

import importlib.util
import queue
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.runtime.errors import ModelError
from pipeline.runtime.model import MANIFEST, ClipModel, StreamingModel, read_manifest
from pipeline.runtime.params import FrontEnd

# Preferred files of an export folder, fastest first.
CLIP_FILES = (
    "model_batch_float.tflite",
    "model_float.tflite",
    "model_dynamic.tflite",
    "model_int8.tflite",
)
STREAM_FILES = ("stream_batch_float.tflite", "stream_float.tflite", "stream_int8.tflite")
# Long audio runs as segments of this length side by side, each after a warm-up of this
# many clips of the audio before it; a pass of K segments is what a timeline holds.
SEGMENT_S = 30.0
WARMUP_CLIPS = 2


class Recognizer(Protocol):
    """What transcription needs of a model.

    predict: [n, clip_samples] -> [n, n_labels] probabilities; safe to call from
    `instances` threads at once. timeline: consumes a signal as an iterable of audio blocks
    of any sizes (front_end.sample_rate) and yields its per-hop probabilities
    [n, n_labels] in order as they are ready, row i of all of them covering the audio up
    to (i + 1) * front_end.step_samples; neither the rows nor the memory depend on how
    the signal was cut into blocks. samples, the length the file's header declares,
    shortens the segments of a recording shorter than K full ones so all K lanes work.
    An exported model also has `manifest`, whose detector block (if any) is the operating
    point transcription uses by default."""

    front_end: FrontEnd
    labels: list[str]
    instances: int

    def predict(self, clips: np.ndarray) -> np.ndarray: ...

    def timeline(
        self, blocks: Iterable[np.ndarray], samples: int | None = None
    ) -> Iterator[np.ndarray]: ...


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


def segmented_stream(
    stream, blocks: Iterable[np.ndarray], warmup_hops: int, segment_hops: int
) -> Iterator[np.ndarray]:
    """Per-hop probabilities of a streaming model over a signal arriving in blocks.

    A model with batch K > 1 cuts the signal into segments of segment_hops, run K side by
    side per pass, each from the initial state after the warmup_hops of audio before it
    (zeros before the start) so its state has settled when its own outputs begin (the
    recurrent state forgets within about a clip). Segment j is always lane j % K of pass
    j // K, whatever the blocks and the length, so the results depend on neither; memory
    is one pass of audio. K = 1 streams the signal straight through."""
    hop, k = stream.hop_samples, getattr(stream, "batch", 1)
    stream.reset()
    if k == 1:
        rest = np.zeros(0, np.float32)
        for block in blocks:
            audio = np.concatenate([rest, block])
            n = len(audio) // hop
            if n:
                yield np.stack([stream.step(audio[i * hop : (i + 1) * hop]) for i in range(n)])
            rest = audio[n * hop :]
        if len(rest):
            yield stream.step(np.pad(rest, (0, hop - len(rest))))[None]
        return
    lead, span = warmup_hops * hop, segment_hops * hop
    buf = np.zeros(lead + k * span, np.float32)
    filled = lead
    for block in blocks:
        block = np.asarray(block, np.float32)
        while len(block):
            take = min(len(block), len(buf) - filled)
            buf[filled : filled + take] = block[:take]
            filled, block = filled + take, block[take:]
            if filled == len(buf):
                yield _segments(stream, buf, warmup_hops, segment_hops, k * segment_hops)
                buf[:lead] = buf[len(buf) - lead :]
                filled = lead
    if filled > lead:
        buf[filled:] = 0
        yield _segments(stream, buf, warmup_hops, segment_hops, -(-(filled - lead) // hop))


def _segments(stream, buf: np.ndarray, warmup_hops: int, segment_hops: int, n: int) -> np.ndarray:
    """One pass: the n hops of audio after buf's warm-up lead, as up to K segments."""
    hop, k = stream.hop_samples, stream.batch
    lead, span = warmup_hops * hop, segment_hops * hop
    lanes = np.lib.stride_tricks.sliding_window_view(buf, lead + span)[::span][:k]
    steps = min(segment_hops, n)
    stream.reset()
    probs = [
        stream.step(np.ascontiguousarray(lanes[:, s * hop : (s + 1) * hop]))
        for s in range(warmup_hops + steps)
    ]
    return np.stack(probs[warmup_hops:], axis=1).reshape(k * steps, -1)[:n]


class TFLiteRecognizer:
    """Exported LiteRT models: one interpreter per thread for clips, one streaming model for
    timelines."""

    def __init__(
        self,
        path: str | Path,
        instances: int = 1,
        stream_batch: int = 16,
        segment_s: float = SEGMENT_S,
    ):
        path = Path(path)
        self.segment_s = segment_s
        folder = path if path.is_dir() else path.parent
        if path.is_dir():
            given = next(
                (folder / n for n in CLIP_FILES + STREAM_FILES if (folder / n).is_file()), None
            )
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
            self._stream_path = next((folder / n for n in wanted if (folder / n).is_file()), None)
            make = lambda: ClipModel(given, num_threads=1)  # noqa: E731
        first = make()
        self.path, self.front_end, self.labels = given, first.front_end, list(first.labels)
        self.manifest: dict = first.manifest  # its detector block: the default operating point
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for m in [first] + [make() for _ in range(self.instances - 1)]:
            self._free.put(m)
        self._stream: StreamingModel | None = None

    def predict(self, clips: np.ndarray) -> np.ndarray:
        model = self._free.get()
        try:
            return (
                model.classify(clips) if isinstance(model, StreamingModel) else model.predict(clips)
            )
        finally:
            self._free.put(model)

    def timeline(
        self, blocks: Iterable[np.ndarray], samples: int | None = None
    ) -> Iterator[np.ndarray]:
        if self._stream is None:
            if self._stream_path is None:
                raise ModelError(f"{self.path}: no streaming model beside it for long audio")
            self._stream = StreamingModel(self._stream_path, num_threads=1)  # 2 threads: slower
        return segmented_stream(
            self._stream,
            blocks,
            *segment_layout(self.front_end, self.segment_s, samples, self._stream.batch),
        )


def segment_layout(
    front_end: FrontEnd, segment_s: float, samples: int | None = None, lanes: int = 1
) -> tuple[int, int]:
    """(warm-up hops, segment hops) of segmented_stream for a front end: segments of
    segment_s, or shorter when a recording of `samples` would leave lanes idle."""
    hop = front_end.step_samples
    segment = max(1, round(segment_s * front_end.sample_rate / hop))
    if samples:
        segment = min(segment, max(1, -(-samples // (hop * lanes))))
    return WARMUP_CLIPS * front_end.clip_samples // hop, segment


def open_model(
    path: str | Path | None = None,
    instances: int = 1,
    stream_batch: int = 16,
    segment_s: float = SEGMENT_S,
) -> TFLiteRecognizer:
    """An exported .tflite file or export folder; the bundled pretrained model when None."""
    p = pretrained_dir() if path is None else Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: model not found")
    if not is_export(p):
        raise ModelError(f"{p}: not an exported model (a .tflite file or a folder with {MANIFEST})")
    return TFLiteRecognizer(p, instances, stream_batch, segment_s)
