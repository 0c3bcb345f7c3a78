"""A trained run (model.keras) used for transcription: needs TensorFlow, so it lives on the
training side; the runtime's Recognizer protocol is all transcription needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline.runtime.recognizer import SEGMENT_S, segment_layout, segmented_stream


class KerasStream:
    """The Keras streaming twin with batch K, stepped through a compiled function."""

    def __init__(self, path: str | Path, batch: int):
        import tensorflow as tf

        from pipeline.train.runs import build_like

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


class KerasRecognizer:
    """A run directory or .keras file (imports TensorFlow)."""

    instances = 1

    def __init__(self, path: str | Path, stream_batch: int, segment_s: float = SEGMENT_S):
        import tensorflow as tf

        from pipeline.train.runs import load_run

        model, self.front_end, self.labels = load_run(path)
        self._call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, self.front_end.clip_samples], tf.float32)],
        )
        self._path, self._stream_batch, self._stream = path, max(2, stream_batch), None
        self.segment_s = segment_s

    def predict(self, clips: np.ndarray) -> np.ndarray:
        return self._call(clips).numpy()

    def timeline(
        self, blocks: Iterable[np.ndarray], samples: int | None = None
    ) -> Iterator[np.ndarray]:
        if self._stream is None:
            self._stream = KerasStream(self._path, self._stream_batch)
        return segmented_stream(
            self._stream,
            blocks,
            *segment_layout(self.front_end, self.segment_s, samples, self._stream.batch),
        )
