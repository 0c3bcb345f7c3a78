"""Running exported models with LiteRT alone: no TensorFlow, no Keras.

An app or a batch job imports this module in about 0.1 s; everything a model needs to be
called (front end, labels, tensor names, state shapes) is read from manifest.json beside
the .tflite file, which scripts/export.py writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pipeline.params import FrontEnd

MANIFEST = "manifest.json"
SIGNATURE = "serving_default"


class ModelError(Exception):
    """An exported model that cannot be used; str() is one line naming the file."""


def read_manifest(path: str | Path) -> tuple[dict, dict]:
    """(whole manifest, this file's entry) for a .tflite file written by the exporter."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    manifest_path = path.parent / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{path}: no {MANIFEST} beside it (written by scripts/export.py)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{manifest_path}: unreadable ({' '.join(str(exc).split())})") from None
    entry = manifest.get("files", {}).get(path.name)
    if entry is None:
        raise ModelError(f"{manifest_path}: no entry for {path.name}")
    return manifest, entry


class _Signature:
    """An interpreter plus the tensor indices of its serving signature, by name.

    set_tensor/invoke/get_tensor on cached indices: the signature runner's per-call
    dictionary work costs more than a whole streaming step of a small model."""

    def __init__(self, interpreter: Interpreter, where: str):
        signatures = interpreter._get_full_signature_list()
        if SIGNATURE not in signatures:
            raise ModelError(f"{where}: no '{SIGNATURE}' signature in the model")
        interpreter.allocate_tensors()
        self.interpreter = interpreter
        self.inputs: dict[str, int] = dict(signatures[SIGNATURE]["inputs"])
        self.outputs: dict[str, int] = dict(signatures[SIGNATURE]["outputs"])
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        self.shapes = {n: tuple(int(s) for s in details[i]["shape"])
                       for n, i in {**self.inputs, **self.outputs}.items()}


def open_interpreter(source: str | Path | bytes, num_threads: int = 1) -> Interpreter:
    """An interpreter on a file path or on model bytes held in memory."""
    kw = {"model_content": source} if isinstance(source, bytes) else {"model_path": str(source)}
    try:
        return Interpreter(num_threads=num_threads, **kw)
    except (ValueError, RuntimeError) as exc:
        where = "model bytes" if isinstance(source, bytes) else str(source)
        raise ModelError(f"{where}: LiteRT cannot load it ({' '.join(str(exc).split())})") \
            from None


class _ExportedModel:
    """An exported file with the manifest entry that describes it."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        manifest, entry = read_manifest(path)
        self._setup(open_interpreter(path, num_threads), manifest, entry, str(path))

    @classmethod
    def from_bytes(cls, content: bytes, manifest: dict, entry: dict, num_threads: int = 1):
        """A model not yet written to disk (the exporter checks each file before writing)."""
        self = cls.__new__(cls)
        self._setup(open_interpreter(content, num_threads), manifest, entry, "model bytes")
        return self

    def _setup(self, interpreter: Interpreter, manifest: dict, entry: dict, where: str) -> None:
        self.manifest, self.entry = manifest, entry
        self.front_end = FrontEnd.from_dict(manifest["front_end"])
        self.labels: list[str] = list(manifest["labels"])
        self._sig = _Signature(interpreter, where)


class ClipModel(_ExportedModel):
    """A clip classifier: [n, clip_samples] raw audio -> [n, n_labels] probabilities.

    A file exported with a fixed batch B runs B clips per invoke (the last group is
    zero-padded), which is what makes batch transcription fast."""

    def _setup(self, interpreter: Interpreter, manifest: dict, entry: dict, where: str) -> None:
        super()._setup(interpreter, manifest, entry, where)
        if set(self._sig.inputs) != {"audio"} or "probs" not in self._sig.outputs:
            raise ModelError(f"{where}: not a clip model (inputs {sorted(self._sig.inputs)})")
        self.batch_size, samples = self._sig.shapes["audio"]
        if samples != self.front_end.clip_samples:
            raise ModelError(f"{where}: input takes {samples} samples, manifest says "
                             f"{self.front_end.clip_samples}")

    def predict(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        n, b = len(audio), self.batch_size
        if audio.ndim != 2 or audio.shape[1] != self.front_end.clip_samples:
            raise ValueError(f"expected [n, {self.front_end.clip_samples}] audio, got "
                             f"{list(audio.shape)}")
        it, a, p = self._sig.interpreter, self._sig.inputs["audio"], self._sig.outputs["probs"]
        out = np.empty((n, len(self.labels)), np.float32)
        for start in range(0, n, b):
            chunk = audio[start:start + b]
            if len(chunk) < b:
                chunk = np.concatenate([chunk, np.zeros((b - len(chunk), chunk.shape[1]),
                                                        np.float32)])
            it.set_tensor(a, np.ascontiguousarray(chunk))
            it.invoke()
            out[start:start + b] = it.get_tensor(p)[:n - start]
        return out


class StreamingModel(_ExportedModel):
    """One hop of new audio plus state in, probabilities plus new state out.

    The state (the audio overlap the next frame needs and each recurrent layer's hidden
    state) lives here between calls; reset() returns it to the initial values. A file
    exported with a fixed batch K (stream_batch_float.tflite) runs K independent streams
    per invoke, one per row of every input: a long recording cut into K lanes costs one
    interpreter call per hop instead of K."""

    def _setup(self, interpreter: Interpreter, manifest: dict, entry: dict, where: str) -> None:
        super()._setup(interpreter, manifest, entry, where)
        self.hop_samples = self.front_end.step_samples
        sig = self._sig
        if "states" not in entry:
            raise ModelError(f"{where}: manifest lists no states; not a streaming model")
        self._states = [(s["input"], s["output"], float(s["initial"]), tuple(s["shape"]))
                        for s in entry["states"]]
        missing = [n for s in self._states for n in s[:2]
                   if n not in sig.inputs and n not in sig.outputs]
        if missing or "audio" not in sig.inputs or "probs" not in sig.outputs:
            raise ModelError(f"{where}: model lacks tensors {missing or ['audio', 'probs']}")
        self.batch = sig.shapes["audio"][0]
        if sig.shapes["audio"] != (self.batch, self.hop_samples):
            raise ModelError(f"{where}: audio input is {list(sig.shapes['audio'])}, expected "
                             f"[batch, {self.hop_samples}]")
        self._io = [(sig.inputs[i], sig.outputs[o]) for i, o, _, _ in self._states]
        self._audio, self._probs = sig.inputs["audio"], sig.outputs["probs"]
        self.reset()

    def reset(self) -> None:
        self._values = [np.full(shape, initial, np.float32)
                        for _, _, initial, shape in self._states]

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state the next step() feeds, by input name."""
        return {s[0]: v for s, v in zip(self._states, self._values)}

    def step(self, hop: np.ndarray) -> np.ndarray:
        """[hop_samples] -> [n_labels]; with batch K, [K, hop_samples] -> [K, n_labels]."""
        it = self._sig.interpreter
        it.set_tensor(self._audio, np.asarray(hop, np.float32).reshape(self.batch,
                                                                       self.hop_samples))
        for (i, _), value in zip(self._io, self._values):
            it.set_tensor(i, value)
        it.invoke()
        self._values = [it.get_tensor(o) for _, o in self._io]
        probs = it.get_tensor(self._probs)
        return probs[0] if self.batch == 1 else probs

    def run(self, audio: np.ndarray, reset: bool = True) -> np.ndarray:
        """Per-hop probabilities [n_hops, n_labels] over a whole signal; a last partial hop
        is zero-padded. reset=False continues from the current state (a live stream).
        With batch K: up to K signals [n, samples] -> [n, n_hops, n_labels] (unused lanes
        are fed zeros)."""
        if reset:
            self.reset()
        audio = np.asarray(audio, np.float32)
        lanes = audio.reshape(1, -1) if self.batch == 1 else audio
        if lanes.ndim != 2 or len(lanes) > self.batch:
            raise ValueError(f"expected at most {self.batch} signals, got {list(audio.shape)}")
        n = -(-lanes.shape[1] // self.hop_samples)
        padded = np.zeros((self.batch, n * self.hop_samples), np.float32)
        padded[:len(lanes), :lanes.shape[1]] = lanes
        out = np.empty((n, self.batch, len(self.labels)), np.float32)
        for k in range(n):
            out[k] = self.step(padded[:, k * self.hop_samples:(k + 1) * self.hop_samples])
        return out[:, 0] if self.batch == 1 else out[:, :len(lanes)].transpose(1, 0, 2)

    def classify(self, clips: np.ndarray) -> np.ndarray:
        """[n, clip_samples] -> [n, n_labels]: each clip streamed from the initial state,
        the probabilities after its last hop (what the clip model answers for it)."""
        if self.batch == 1:
            return np.stack([self.run(c)[-1] for c in clips])
        return np.concatenate([self.run(clips[i:i + self.batch])[:, -1]
                               for i in range(0, len(clips), self.batch)])


@dataclass
class Detection:
    time_s: float
    label: str
    score: float


class CommandDetector:
    """Per-hop probabilities -> command events, as RecognizeCommands in TensorFlow's
    speech_commands example: average the scores over a moving window, report the top
    label when its average passes the threshold, differs from the previous top label and
    the suppression period since that label has passed.

    average_window_s: smooths single-hop spikes (an event waits until the window holds
                      min_count hops).
    threshold:        averaged probability an event needs.
    suppression_s:    after an event, no other event for this long (a word spans ~0.5-1 s).
    ignore:           labels that reset the previous-label memory but never raise events.
    """

    CHUNK = 1 << 16  # hops screened at once: bounds the memory of the cumulative sums

    def __init__(self, labels: list[str], hop_seconds: float, average_window_s: float = 0.5,
                 threshold: float = 0.7, suppression_s: float = 1.0,
                 ignore: tuple[str, ...] = ("_silence_", "_unknown_"), min_count: int = 3):
        if hop_seconds <= 0 or average_window_s <= 0 or not 0 <= threshold <= 1:
            raise ValueError("need hop_seconds > 0, average_window_s > 0, 0 <= threshold <= 1")
        self.labels, self.hop_seconds = list(labels), hop_seconds
        self.average_window_s, self.threshold = average_window_s, threshold
        self.suppression_s, self.ignore, self.min_count = suppression_s, set(ignore), min_count
        self.reset()

    def reset(self) -> None:
        self._times = np.empty(0, np.float64)   # end times of the hops in the window
        self._rows = np.empty((0, len(self.labels)), np.float32)
        self._previous: str | None = None
        self._previous_time = -np.inf
        self._clock = 0.0

    def process(self, probs: np.ndarray, start_time: float | None = None) -> list[Detection]:
        """Events in probs [n_hops, n_labels] (probabilities, in [0, 1]); row k ends at
        start_time + (k+1)*hop. start_time None continues where the previous call ended."""
        probs = np.asarray(probs, np.float32).reshape(-1, len(self.labels))
        t0 = self._clock if start_time is None else start_time
        now = t0 + np.arange(1, len(probs) + 1) * self.hop_seconds
        events = []
        for i in range(0, len(probs), self.CHUNK):
            events += self._process(probs[i:i + self.CHUNK], now[i:i + self.CHUNK])
        self._clock = t0 + len(probs) * self.hop_seconds
        return events

    def _process(self, probs: np.ndarray, now: np.ndarray) -> list[Detection]:
        """Only a hop whose averaged top score passes the threshold can change the
        detector's memory, so the averages are screened in bulk (cumulative sums) and only
        the hops near or above the threshold are averaged exactly and stepped through."""
        times = np.concatenate([self._times, now])
        rows = np.concatenate([self._rows, probs])
        # Hop k's window starts at the first retained hop newer than now - window; a
        # running maximum keeps the search exact even when start_time moved backwards.
        first = np.searchsorted(np.maximum.accumulate(times), now - self.average_window_s,
                                side="right")
        last = np.arange(len(self._times) + 1, len(times) + 1)
        count = last - first
        sums = np.zeros((len(rows) + 1, len(self.labels)), np.float64)
        np.cumsum(rows, axis=0, out=sums[1:])
        approx = ((sums[last] - sums[first]) / count[:, None]).max(axis=1)
        # A float32 mean of m values in [0, 1] is within m * 6e-8 of the float64 one.
        margin = 1e-4 + 1e-6 * count
        events = []
        for k in np.flatnonzero((count >= self.min_count) & (approx > self.threshold - margin)):
            average = np.mean(rows[first[k]:last[k]], axis=0)
            top = int(np.argmax(average))
            label, score, at = self.labels[top], float(average[top]), float(now[k])
            since = np.inf if self._previous in self.ignore or self._previous is None \
                else at - self._previous_time
            if score > self.threshold and label != self._previous and since > self.suppression_s:
                self._previous, self._previous_time = label, at
                if label not in self.ignore:
                    events.append(Detection(round(at, 6), label, score))
        self._times, self._rows = times[first[-1]:], rows[first[-1]:]
        return events
