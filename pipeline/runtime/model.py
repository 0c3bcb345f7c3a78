"""Running exported models with LiteRT alone: no TensorFlow, no Keras.

An app or a batch job imports this module in about 0.1 s; everything a model needs to be
called (front end, labels, tensor names, state shapes) is read from manifest.json beside
the .tflite file, which scripts/export.py writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pipeline.runtime.detector import detector_options
from pipeline.runtime.errors import ModelError, one_line
from pipeline.runtime.params import FrontEnd
from pipeline.runtime.quiet import native_stderr_silenced

MANIFEST = "manifest.json"
SIGNATURE = "serving_default"


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
        raise ModelError(f"{manifest_path}: unreadable ({one_line(exc)})") from None
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
        with native_stderr_silenced():  # LiteRT's "Created ... XNNPACK delegate" line
            interpreter.allocate_tensors()
        self.interpreter = interpreter
        self.inputs: dict[str, int] = dict(signatures[SIGNATURE]["inputs"])
        self.outputs: dict[str, int] = dict(signatures[SIGNATURE]["outputs"])
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        self.shapes = {
            n: tuple(int(s) for s in details[i]["shape"])
            for n, i in {**self.inputs, **self.outputs}.items()
        }


def open_interpreter(source: str | Path | bytes, num_threads: int = 1) -> Interpreter:
    """An interpreter on a file path or on model bytes held in memory."""
    kw = {"model_content": source} if isinstance(source, bytes) else {"model_path": str(source)}
    try:
        return Interpreter(num_threads=num_threads, **kw)
    except (ValueError, RuntimeError) as exc:
        where = "model bytes" if isinstance(source, bytes) else str(source)
        raise ModelError(f"{where}: LiteRT cannot load it ({one_line(exc)})") from None


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

    @property
    def detector(self) -> dict:
        """CommandDetector keyword arguments of the operating point chosen for this export
        (the manifest's detector block); {} when none was, which keeps the defaults."""
        return detector_options(self.manifest)


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
            raise ModelError(
                f"{where}: input takes {samples} samples, manifest says "
                f"{self.front_end.clip_samples}"
            )

    def predict(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        n, b = len(audio), self.batch_size
        if audio.ndim != 2 or audio.shape[1] != self.front_end.clip_samples:
            raise ValueError(
                f"expected [n, {self.front_end.clip_samples}] audio, got {list(audio.shape)}"
            )
        it, a, p = self._sig.interpreter, self._sig.inputs["audio"], self._sig.outputs["probs"]
        out = np.empty((n, len(self.labels)), np.float32)
        for start in range(0, n, b):
            chunk = audio[start : start + b]
            if len(chunk) < b:
                chunk = np.concatenate(
                    [chunk, np.zeros((b - len(chunk), chunk.shape[1]), np.float32)]
                )
            it.set_tensor(a, np.ascontiguousarray(chunk))
            it.invoke()
            out[start : start + b] = it.get_tensor(p)[: n - start]
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
        self._states = [
            # initial: a number, or one value per last-axis entry (the norm state's mean)
            (s["input"], s["output"], np.asarray(s["initial"], np.float32), tuple(s["shape"]))
            for s in entry["states"]
        ]
        missing = [
            n for s in self._states for n in s[:2] if n not in sig.inputs and n not in sig.outputs
        ]
        if missing or "audio" not in sig.inputs or "probs" not in sig.outputs:
            raise ModelError(f"{where}: model lacks tensors {missing or ['audio', 'probs']}")
        self.batch = sig.shapes["audio"][0]
        if sig.shapes["audio"] != (self.batch, self.hop_samples):
            raise ModelError(
                f"{where}: audio input is {list(sig.shapes['audio'])}, expected "
                f"[batch, {self.hop_samples}]"
            )
        self._io = [(sig.inputs[i], sig.outputs[o]) for i, o, _, _ in self._states]
        self._audio, self._probs = sig.inputs["audio"], sig.outputs["probs"]
        self.reset()

    def reset(self) -> None:
        self._values = [
            np.full(shape, initial, np.float32) for _, _, initial, shape in self._states
        ]

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state the next step() feeds, by input name."""
        return {s[0]: v for s, v in zip(self._states, self._values)}

    def step(self, hop: np.ndarray) -> np.ndarray:
        """[hop_samples] -> [n_labels]; with batch K, [K, hop_samples] -> [K, n_labels]."""
        it = self._sig.interpreter
        it.set_tensor(
            self._audio, np.asarray(hop, np.float32).reshape(self.batch, self.hop_samples)
        )
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
        padded[: len(lanes), : lanes.shape[1]] = lanes
        out = np.empty((n, self.batch, len(self.labels)), np.float32)
        for k in range(n):
            out[k] = self.step(padded[:, k * self.hop_samples : (k + 1) * self.hop_samples])
        return out[:, 0] if self.batch == 1 else out[:, : len(lanes)].transpose(1, 0, 2)

    def classify(self, clips: np.ndarray) -> np.ndarray:
        """[n, clip_samples] -> [n, n_labels]: each clip streamed from the initial state,
        the probabilities after its last hop (what the clip model answers for it)."""
        if self.batch == 1:
            return np.stack([self.run(c)[-1] for c in clips])
        return np.concatenate(
            [self.run(clips[i : i + self.batch])[:, -1] for i in range(0, len(clips), self.batch)]
        )
