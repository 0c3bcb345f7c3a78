"""TFLite export of a trained run: clip models (float, dynamic-range, int8, batched float)
and streaming models with explicit state (float, int8, batched float), each run in LiteRT and
checked before it is written.

FILES describes the seven files; export() builds, converts, runs and checks them in one
loop. Every model is rebuilt with a fixed batch: with a batch of None the recurrent loops
need TensorList ops that only Select TF ops provide.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.export.convert import (
    ExportError,
    convert,
    convert_int8,
    model_ops,
    saved_model,
    tensor_info,
)
from pipeline.runtime.files import atomic_write_bytes, atomic_write_text
from pipeline.runtime.model import MANIFEST, SIGNATURE, ClipModel, StreamingModel
from pipeline.runtime.params import FrontEnd

FLOAT_TOLERANCE = 1e-4  # max |p_tflite - p_keras| for the float clip models
FLOAT_AGREEMENT = 0.999  # share of clips with the same top-1 as Keras
STREAM_AGREEMENT = 0.99  # float streaming model vs the clip model, top-1
# Max |log-mel difference| of the matmul spectrum vs LogMel (0.1% in power). Any float32
# spectrum is off in weak bins of loud frames: on 300 test clips LogMel itself is within
# 4.5e-5 of a float64 computation, the RFFT2D files within 3.7e-5 of LogMel, the matmul
# spectrum within 8e-5 (1.5e-4 on an export's check clips); probabilities stay within 1e-6.
FRONT_END_TOLERANCE = 1e-3
# Weights and activations of each kind of conversion.
PRECISION = {
    "float": ("float32", "float32"),
    "dynamic": ("int8", "float32"),
    "int8": ("int8", "int8"),
}


@dataclass(frozen=True)
class FileSpec:
    """One exported file: how its twin is built and converted, and what it must pass."""

    name: str
    kind: str  # "clip" or "stream"
    batched: bool = False  # batch_size (clip) or stream_batch (stream) rows, else 1
    precision: str = "float"  # a key of PRECISION
    unroll: bool = False  # recurrent cell repeated per step instead of a loop
    matmul_fft: bool = False  # MatmulLogMel instead of RFFT2D
    per_channel: bool = False  # int8 only: per-channel rather than per-tensor scales
    check: str | None = None  # "float": equals Keras; "stream": top-1 as the clip model
    calibrate_on: str | None = None  # int8 stream: the float streaming file fed hop by hop
    lanes_of: str | None = None  # each lane must equal this single-stream file
    note: str | None = None


FILES = (
    FileSpec("model_float.tflite", "clip", check="float"),
    FileSpec("model_dynamic.tflite", "clip", precision="dynamic"),
    # The calibrator crashes on WHILE loops, so the int8 clip model is unrolled; per-tensor
    # scales keep the per-step quantization parameters from multiplying the file size.
    FileSpec(
        "model_int8.tflite",
        "clip",
        precision="int8",
        unroll=True,
        note="recurrent layers unrolled; the audio front end stays float",
    ),
    # Unrolled recurrent loops: +12% clips per second for twice the size.
    FileSpec(
        "model_batch_float.tflite",
        "clip",
        batched=True,
        unroll=True,
        matmul_fft=True,
        check="float",
        note="recurrent layers unrolled",
    ),
    FileSpec("stream_float.tflite", "stream", check="stream"),
    # Per-tensor scales: per-channel ones (a float and an int64 per output unit, for every
    # weight and bias) add ~20% to a small model for no measurable accuracy.
    FileSpec(
        "stream_int8.tflite",
        "stream",
        precision="int8",
        calibrate_on="stream_float.tflite",
        note="the audio front end stays float",
    ),
    # A long recording cut into lanes runs them side by side: one invoke per hop for every
    # lane (resize_tensor_input cannot batch the single-stream file).
    FileSpec(
        "stream_batch_float.tflite",
        "stream",
        batched=True,
        matmul_fft=True,
        check="stream",
        lanes_of="stream_float.tflite",
    ),
)


def fixed_batch_twin(
    model,
    cfg: dict,
    fe,
    n_classes: int,
    mode: str,
    batch_size: int,
    unroll: bool = False,
    matmul_fft: bool = False,
):
    """The trained model rebuilt with a static batch and BlockedLogMel (and, for int8,
    unrolled loops; with matmul_fft, MatmulLogMel, for the float files that batch
    transcription runs)."""
    import keras

    from models import build_from_config
    from models.layers import copy_weights
    from models.logmel import BlockedLogMel, LogMel, MatmulLogMel

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, LogMel):
            return (MatmulLogMel if matmul_fft else BlockedLogMel).from_config(config)
        if unroll and isinstance(layer, keras.layers.RNN):
            return layer.__class__.from_config({**config, "unroll": True})
        return layer  # shared with the throwaway build, no need to copy

    twin = keras.models.clone_model(
        build_from_config(cfg, fe, n_classes, mode, batch_size), clone_function=clone
    )
    copy_weights(model, twin)
    return twin


def front_end_difference(fe, audio: np.ndarray, chunk: int = 64) -> float:
    """Max |log-mel difference| between LogMel and MatmulLogMel on audio (before any running
    normalisation and the DCT, which both compute the same way)."""
    import dataclasses

    from models.logmel import LogMel, MatmulLogMel

    log_mel = dataclasses.replace(fe, n_mfcc=0, normalize="none").to_dict()
    reference, fast = LogMel(log_mel), MatmulLogMel(log_mel)
    return max(
        float(np.abs(reference(audio[i : i + chunk]) - fast(audio[i : i + chunk])).max())
        for i in range(0, len(audio), chunk)
    )


def data_source(cfg: dict, calibration: str | None, run_dir: Path) -> str:
    """--calibration when given, else the run's own training data (config.yaml: source)."""
    from pipeline.data.sources import source_exists

    if calibration:
        if not source_exists(calibration):
            raise ExportError(f"{calibration}: calibration data not found")
        return str(calibration)
    source = cfg.get("source")
    if source and source_exists(source):
        return str(source)
    raise ExportError(
        f"{run_dir / 'config.yaml'}: training data {source!r} not found; pass --calibration PATH"
    )


def clips(
    source, fe, cfg: dict, labels: list[str], splits: tuple[str, ...], limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to limit clips (a seeded random subset) of the first split that has any, prepared
    as evaluation prepares them (generated _silence_ clips get noise)."""
    from pipeline.data.sources import as_arrays, evaluation_batches
    from pipeline.data.tfdata import decoded

    split = next((s for s in splits if source.count(s)), None)
    if split is None:
        raise ExportError(f"no clips in the {'/'.join(splits)} split(s) of the data")
    dataset = getattr(source, "dataset", None)
    if dataset is not None:
        examples = list(dataset.splits[split])
        if limit and limit < len(examples):
            examples = random.Random(seed).sample(examples, limit)
        waves = decoded(examples, fe)
    else:
        waves = source.waves(split).shuffle(4096, seed=seed)
        waves = waves.take(limit) if limit else waves
    x, y = as_arrays(evaluation_batches(source, waves, cfg, seed))
    if not len(y):
        raise ExportError(f"no readable clips in the {split} split of the data")
    return x, y, split


def _agreement(probs: np.ndarray, reference: np.ndarray) -> dict:
    return {
        "top1_agreement": round(float(np.mean(probs.argmax(1) == reference.argmax(1))), 5),
        "max_prob_diff": float(np.abs(probs - reference).max()),
    }


def export(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    calibration: str | None = None,
    batch_size: int = 16,
    calibration_clips: int = 200,
    eval_clips: int | None = 1000,
    log: Callable[[str], None] = print,
    stream_batch: int = 16,
) -> dict:
    """Write every file of FILES, labels.txt, config.yaml and manifest.json; returns the
    manifest.

    Nothing is written until every file has converted and passed its check, so a failed
    export leaves an earlier export in out_dir untouched."""
    import tensorflow as tf  # noqa: F401  (before keras, so conversion uses the TF backend)

    from pipeline.data.sources import open_source
    from pipeline.train.runs import load_run, model_file, run_config

    run_dir = model_file(run_dir).parent
    model, fe, labels = load_run(run_dir)
    cfg = run_config(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "export"
    source_name = data_source(cfg, calibration, run_dir)
    try:
        source = open_source(source_name, cfg["data"], fe, cfg["seed"], labels=labels)
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(f"{source_name}: {exc}") from None
    cal_x, _, cal_split = clips(
        source, fe, cfg, labels, ("train", "validation", "test"), calibration_clips, cfg["seed"]
    )
    x, y, eval_split = clips(
        source, fe, cfg, labels, ("test", "validation", "train"), eval_clips, cfg["seed"] + 1
    )
    keras_probs = model.predict(x, batch_size=64, verbose=0)
    keras_accuracy = float(np.mean(keras_probs.argmax(1) == y))
    log(
        f"data: {len(cal_x)} calibration clips ({cal_split}), {len(x)} check clips "
        f"({eval_split}) from {source_name}; Keras accuracy {keras_accuracy:.4f}"
    )

    spectrum_diff = front_end_difference(fe, x)
    if spectrum_diff > FRONT_END_TOLERANCE:
        first = next(spec.name for spec in FILES if spec.matmul_fft)
        raise ExportError(
            f"{first}: the matmul spectrum's log-mel features differ from "
            f"LogMel by {spectrum_diff:.3g}"
        )
    spectrum = {
        "spectrum": "two matrix products (fft_plan)",
        "log_mel_max_diff": float(f"{spectrum_diff:.3g}"),
    }

    manifest = manifest_header(run_dir, fe, labels)
    manifest["calibration"] = {"source": source_name, "split": cal_split, "clips": len(cal_x)}
    manifest["check"] = {
        "source": source_name,
        "split": eval_split,
        "clips": len(x),
        "keras_accuracy": round(keras_accuracy, 5),
    }
    written: dict[str, bytes] = {}
    runtimes: dict[str, StreamingModel] = {}  # float streaming files, by name
    results: dict[str, np.ndarray] = {}  # probabilities on x, by name
    twins: dict[tuple, tuple] = {}  # (kind, batch, unroll, matmul_fft) -> twin, dir

    with tempfile.TemporaryDirectory() as tmp:
        for spec in FILES:
            name = spec.name
            batch = (batch_size if spec.kind == "clip" else stream_batch) if spec.batched else 1
            key = (spec.kind, batch, spec.unroll, spec.matmul_fft)
            if key not in twins:
                twin = fixed_batch_twin(
                    model, cfg, fe, len(labels), spec.kind, batch, spec.unroll, spec.matmul_fft
                )
                twins[key] = (
                    twin,
                    saved_model(twin, list(twin.output_names), Path(tmp) / str(len(twins))),
                )
            twin, saved = twins[key]

            if spec.precision != "int8":
                content = convert(saved, name, dynamic=spec.precision == "dynamic")
            elif spec.calibrate_on:
                content = convert_int8(
                    saved,
                    name,
                    stream_calibration(runtimes[spec.calibrate_on], cal_x),
                    spec.per_channel,
                )
            else:
                content = convert_int8(saved, name, {"audio": cal_x[:, None]}, spec.per_channel)

            entry = describe(spec, batch, twin, fe, spectrum)
            if spec.kind == "clip":
                probs = ClipModel.from_bytes(content, manifest, entry).predict(x)
            else:
                runtimes[name] = StreamingModel.from_bytes(content, manifest, entry)
                probs = runtimes[name].classify(x)
            agree = check_file(spec, probs, keras_probs, results)

            inputs, outputs = tensor_info(content)
            entry.update(
                {
                    "bytes": len(content),
                    "kb": round(len(content) / 1024, 1),
                    "ops": model_ops(content, name),
                    "accuracy": round(float(np.mean(probs.argmax(1) == y)), 5),
                    "vs_keras": agree,
                    "inputs": inputs,
                    "outputs": outputs,
                }
            )
            manifest["files"][name] = entry
            written[name], results[name] = content, probs
            log(
                f"{name}: {entry['kb']} KB, accuracy {entry['accuracy']:.4f}, "
                f"top-1 agreement with Keras {agree['top1_agreement']:.4f}, "
                f"max prob diff {agree['max_prob_diff']:.2g}"
            )

    for name, content in written.items():
        atomic_write_bytes(out / name, content)
    atomic_write_text(out / "labels.txt", "\n".join(labels) + "\n")
    atomic_write_text(out / "config.yaml", (run_dir / "config.yaml").read_text())
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {len(written)} models, labels.txt, config.yaml and {MANIFEST} to {out}")
    return manifest


def manifest_header(run_dir: Path, fe: FrontEnd, labels: list[str]) -> dict[str, Any]:
    """What every manifest says before its files: the run, the front end and the labels."""
    return {
        "format": 1,
        "run": str(run_dir),
        "sample_rate": fe.sample_rate,
        "clip_samples": fe.clip_samples,
        "hop_samples": fe.step_samples,
        "hop_seconds": fe.step_samples / fe.sample_rate,
        "front_end": fe.to_dict(),
        "labels": labels,
        "signature": SIGNATURE,
        "files": {},
    }


def describe(spec: FileSpec, batch: int, twin, fe, spectrum: dict) -> dict:
    """The manifest entry of a file before it is run: what it is and, if streaming, its
    states."""
    from models.layers import initial_state

    weights, activations = PRECISION[spec.precision]
    entry = {"kind": spec.kind, "batch": batch, "weights": weights, "activations": activations}
    if spec.kind == "stream":
        entry["states"] = [
            {
                "input": t.name,
                "output": f"next_{t.name}",
                "shape": [int(s) for s in t.shape],
                "dtype": "float32",
                "initial": initial_state(t.name, fe).tolist(),  # 0.0, or one value per band
                "holds": _state_meaning(t.name, fe),
            }
            for t in twin.inputs[1:]
        ]
    if spec.note:
        entry["note"] = spec.note
    if spec.matmul_fft:
        entry.update(spectrum)
    return entry


def check_file(
    spec: FileSpec, probs: np.ndarray, keras_probs: np.ndarray, results: dict[str, np.ndarray]
) -> dict:
    """Raises unless probs pass the spec's checks; returns their agreement with Keras."""
    agree = _agreement(probs, keras_probs)
    if spec.check == "float" and (
        agree["max_prob_diff"] > FLOAT_TOLERANCE or agree["top1_agreement"] < FLOAT_AGREEMENT
    ):
        raise ExportError(
            f"{spec.name}: differs from Keras (max prob diff "
            f"{agree['max_prob_diff']:.3g}, top-1 agreement "
            f"{agree['top1_agreement']})"
        )
    if spec.check == "stream" and agree["top1_agreement"] < STREAM_AGREEMENT:
        raise ExportError(
            f"{spec.name}: hop-by-hop result differs from the clip model on "
            f"{1 - agree['top1_agreement']:.1%} of clips"
        )
    if spec.lanes_of:
        lane_diff = float(np.abs(probs - results[spec.lanes_of]).max())
        if lane_diff > FLOAT_TOLERANCE:
            raise ExportError(
                f"{spec.name}: lanes differ from {spec.lanes_of} run alone "
                f"(max prob diff {lane_diff:.3g})"
            )
    return agree


def _state_meaning(name: str, fe) -> str:
    if name == "audio_state":
        return f"the last {fe.context_samples} samples of audio (window - hop)"
    if name == "norm_state":
        return f"running mean of each of the {fe.n_mels} log-mel bands (normalize: running)"
    kind = {"h": "hidden", "c": "cell"}[name[0]]
    return f"{kind} state of recurrent layer {name[1:].split('_')[0]}"


def stream_calibration(
    model: StreamingModel, audio: np.ndarray, max_samples: int = 2000
) -> dict[str, np.ndarray]:
    """Inputs the streaming model really sees: each clip fed hop by hop from the initial
    state, recording the hop and the state before every step (evenly thinned)."""
    hops = len(audio) * (audio.shape[1] // model.hop_samples)
    keep = max(1, hops // max_samples)
    samples: dict[str, list[np.ndarray]] = {}
    k = 0
    for clip in audio:
        model.reset()
        for hop in clip.reshape(-1, model.hop_samples):
            if k % keep == 0:
                for key, value in {"audio": hop[None], **model.state}.items():
                    samples.setdefault(key, []).append(value.copy())
            model.step(hop)
            k += 1
    return {key: np.stack(v) for key, v in samples.items()}
