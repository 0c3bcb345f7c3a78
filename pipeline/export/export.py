"""TFLite export of a trained run: clip models (float, dynamic-range, int8, batched float)
and streaming models with explicit state (float, int8, batched float), each run in LiteRT and
checked before it is written.

Conversion goes through a SavedModel whose serving signature names every input and
output (audio, audio_state, h0_state ... -> probs, next_audio_state, next_h0_state ...),
so an app addresses tensors by name rather than by the converter's input order. Every
model is rebuilt with a fixed batch: with a batch of None the recurrent loops need
TensorList ops that only Select TF ops provide.
"""
from __future__ import annotations

import functools
import json
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.runtime.errors import one_line
from pipeline.runtime.files import atomic_write_bytes, atomic_write_text
from pipeline.runtime.model import MANIFEST, SIGNATURE, ClipModel, StreamingModel, open_interpreter

ROOT = Path(__file__).resolve().parents[1]
# Builtin in name, but they need resource variables that mobile interpreters do not set up.
VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
FILES_ORDER = ("model_float.tflite", "model_dynamic.tflite", "model_int8.tflite",
               "model_batch_float.tflite", "stream_float.tflite", "stream_int8.tflite",
               "stream_batch_float.tflite")
FLOAT_TOLERANCE = 1e-4      # max |p_tflite - p_keras| for the float clip models
FLOAT_AGREEMENT = 0.999     # share of clips with the same top-1 as Keras
STREAM_AGREEMENT = 0.99     # float streaming model vs the clip model, top-1
# Max |log-mel difference| of the matmul spectrum vs LogMel (0.1% in power). Any float32
# spectrum is off in weak bins of loud frames: on 300 test clips LogMel itself is within
# 4.5e-5 of a float64 computation, the RFFT2D files within 3.7e-5 of LogMel, the matmul
# spectrum within 8e-5 (1.5e-4 on an export's check clips); probabilities stay within 1e-6.
FRONT_END_TOLERANCE = 1e-3
# Layers kept float in int8 models: raw audio and a power spectrum span far more than one
# int8 scale can hold, so quantizing them flattens every quiet band to the log floor.
FLOAT_LAYERS = ("logmel", "join_audio", "next_audio_state")


class ExportError(Exception):
    """The export cannot produce a correct file; str() is one line naming it and why."""


def model_ops(content: bytes, name: str) -> list[str]:
    """Operator names in a .tflite flatbuffer; raises if any is not a plain builtin."""
    from ai_edge_litert import schema_py_generated as schema

    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(content, 0)
    ops, bad = set(), set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        op = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")
        if op == "CUSTOM":
            bad.add((code.CustomCode() or b"?").decode())
        elif op in VARIABLE_OPS:
            bad.add(op)
        ops.add(op)
    if bad:
        raise ExportError(f"{name}: needs ops outside the TFLite builtins: {', '.join(sorted(bad))}")
    return sorted(ops)


def saved_model(model, out_names: list[str], directory: Path) -> Path:
    """A SavedModel with one 'serving_default' signature: inputs named like the Keras
    inputs, outputs a dict keyed by out_names."""
    import keras
    import tensorflow as tf

    def serve(*inputs):
        outputs = model(list(inputs), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(out_names, outputs))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[
        tf.TensorSpec(t.shape, tf.float32, name=t.name) for t in model.inputs])
    archive.write_out(str(directory), verbose=False)
    return directory


def convert(saved_dir: Path, name: str, dynamic: bool = False) -> bytes:
    """Float (or dynamic-range: int8 weights, float activations) conversion, builtins only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # A batched recurrent loop's zero-filled [steps, batch, units] buffer would otherwise
    # be stored in the file (1.6 MB for a batch of 32); FILL builds it at load time.
    converter._experimental_unfold_large_splat_constant = True
    converter.exclude_conversion_metadata = True
    if dynamic:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        content = converter.convert()
    except Exception as exc:  # ConverterError carries the MLIR diagnostics
        raise ExportError(f"{name}: {_converter_problem(exc)}") from None
    model_ops(content, name)
    return content


def _converter_problem(exc: Exception) -> str:
    import re

    text = str(exc)
    ops = set(re.findall(r"'tf\.(\w+)' op", text))
    for listed in re.findall(r"(?:Flex|Custom) ops: ([^\n]+)", text):
        ops.update(o.strip() for o in listed.split(",") if o.strip())
    if ops:
        return "needs ops outside the TFLite builtins: " + ", ".join(sorted(ops))
    return "conversion failed: " + one_line(exc)[:300]


def convert_int8(saved_dir: Path, name: str, samples: dict[str, np.ndarray],
                 per_channel: bool = True) -> bytes:
    """Full-integer conversion (int8 weights and activations, float input/output).

    Runs in a child process: the calibrator crashes the process outright on some graphs
    (any WHILE loop), and that must become an error naming the file, not a dead exporter."""
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "calibration.npz", Path(tmp) / "model.tflite"
        np.savez(data, **samples)
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.export.export", "--int8", str(saved_dir), str(data),
             str(out), "1" if per_channel else "0"],
            cwd=ROOT, capture_output=True, text=True)
        if proc.returncode < 0:
            raise ExportError(f"{name}: int8 conversion crashed "
                              f"({signal.Signals(-proc.returncode).name} in the TFLite calibrator)")
        if proc.returncode:
            last = [l for l in proc.stderr.splitlines() if l.strip()][-1:] or ["no message"]
            raise ExportError(f"{name}: int8 conversion failed: {last[0].strip()}")
        content = out.read_bytes()
    model_ops(content, name)
    return content


def _int8_child(saved_dir: str, data: str, out: str, per_channel: str) -> None:
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from tensorflow.lite.python.convert import mlir_quantize

    samples = dict(np.load(data))
    n = len(next(iter(samples.values())))
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Inputs are keyed by signature name: TFLite orders a multi-input model's inputs
    # differently from Keras, so a positional list would calibrate the wrong tensors.
    converter.representative_dataset = lambda: ({k: v[i] for k, v in samples.items()}
                                                for i in range(n))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True
    converter.exclude_conversion_metadata = True
    calibrated = converter.convert()
    flat = schema.Model.GetRootAsModel(calibrated, 0)
    graph, signature = flat.Subgraphs(0), flat.SignatureDefs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    front = [t for t in names if any(f"/{layer}" in t for layer in FLOAT_LAYERS)]
    front += [names[signature.Outputs(i).TensorIndex()] for i in range(signature.OutputsLength())
              if signature.Outputs(i).Name().decode() in FLOAT_LAYERS]
    Path(out).write_bytes(mlir_quantize(calibrated, disable_per_channel=per_channel != "1",
                                        denylisted_nodes=front))


def tensor_info(content: bytes) -> tuple[list[dict], list[dict]]:
    """Name, shape, dtype and quantization of each signature input and output."""
    sig = open_interpreter(content)
    sig.allocate_tensors()
    details = {d["index"]: d for d in sig.get_tensor_details()}
    names = sig._get_full_signature_list()[SIGNATURE]

    def describe(name, index):
        d = details[index]
        scale, zero = d["quantization"]
        return {"name": name, "tensor": d["name"], "shape": [int(s) for s in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero)}}

    return ([describe(n, i) for n, i in sorted(names["inputs"].items())],
            [describe(n, i) for n, i in sorted(names["outputs"].items())])


def fixed_batch_twin(model, cfg: dict, fe, n_classes: int, mode: str, batch_size: int,
                     unroll: bool = False, matmul_fft: bool = False):
    """The trained model rebuilt with a static batch and the block-sparse mel product
    (and, for int8, unrolled loops; with matmul_fft, the spectrum as two small matrix
    products instead of RFFT2D, for the float files that batch transcription runs)."""
    import keras

    from models import build_from_config
    from models.layers import copy_weights
    from models.logmel import LogMel

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, LogMel):
            return (_matmul_logmel_class() if matmul_fft else _blocked_logmel_class()) \
                .from_config(config)
        if unroll and isinstance(layer, keras.layers.RNN):
            return layer.__class__.from_config({**config, "unroll": True})
        return layer  # shared with the throwaway build, no need to copy

    twin = keras.models.clone_model(build_from_config(cfg, fe, n_classes, mode, batch_size),
                                    clone_function=clone)
    copy_weights(model, twin)
    return twin


def mel_blocks(mel: np.ndarray, max_elements: int = 1000) -> list[tuple[int, int, int, int]]:
    """(first bin, end bin, first band, end band) blocks covering every nonzero of the
    filterbank. Mel bands are contiguous in frequency, so the [bins, bands] matrix is
    banded; each block stays under the 1024 elements at which dynamic-range quantization
    would turn it into an int8 product of the power spectrum."""
    nz = [np.nonzero(mel[:, j])[0] for j in range(mel.shape[1])]
    span = [(int(b[0]), int(b[-1]) + 1) if len(b) else (0, 1) for b in nz]
    blocks, start = [], 0
    while start < len(span):
        end = start + 1
        while end < len(span):
            lo, hi = min(s[0] for s in span[start:end + 1]), max(s[1] for s in span[start:end + 1])
            if (hi - lo) * (end + 1 - start) > max_elements:
                break
            end += 1
        lo, hi = min(s[0] for s in span[start:end]), max(s[1] for s in span[start:end])
        blocks.append((lo, hi, start, end))
        start = end
    return blocks


@functools.cache
def _blocked_logmel_class():
    """LogMel computing the mel product block by block: same numbers, a 257x40 matrix that
    is ~90% zeros stored as a few small dense blocks that stay float in every export."""
    import tensorflow as tf

    from models.logmel import LogMel

    class BlockedLogMel(LogMel):
        def call(self, audio):
            fe = self.fe
            if self.causal:
                audio = tf.pad(audio, [[0, 0], [fe.context_samples, 0]])
            frames = tf.signal.frame(audio, fe.window_samples, fe.hop_samples)
            power = tf.square(tf.abs(tf.signal.rfft(frames * self._window, [fe.fft_length])))
            mel = tf.concat([tf.matmul(power[..., lo:hi], self._mel[lo:hi, a:b])
                             for lo, hi, a, b in mel_blocks(self._mel)], axis=-1)
            features = tf.math.log(mel + fe.log_floor)
            if fe.n_mfcc:
                features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., :fe.n_mfcc]
            return features

    return BlockedLogMel


def fft_plan(fe) -> dict[str, np.ndarray]:
    """Constants of the windowed power spectrum as two small DFTs (Cooley-Tukey, one step).

    With N = fft_length = n1 * n2 and sample t = n2 * a + b, bin k = c + n1 * d of a frame:
    X[k] = sum_b W_N^(b c) W_n2^(b d) sum_a x[n2 a + b] W_n1^(a c). The inner sums are one
    matrix product over a (only the a that reach into the window), the twiddle W_N^(b c) an
    elementwise product, the outer sums a matrix product over b for just the bins that the
    mel filterbank uses. Powers come out in (c, d) order, so the filterbank's rows are
    permuted to match rather than the spectrum transposed."""
    from models.logmel import mel_matrix

    n = fe.fft_length
    n2 = 1 << (n.bit_length() - 1) // 2
    n1 = n // n2
    rows = -(-fe.window_samples // n2)                  # values of a inside the window
    mel = mel_matrix(fe)
    used = int(np.nonzero(mel.any(axis=1))[0].max()) + 1
    d_count = -(-used // n1)
    a, c = np.arange(rows)[:, None], np.arange(n1)[None, :]
    inner = 2 * np.pi * a * c / n1
    b, d = np.arange(n2)[:, None], np.arange(d_count)[None, :]
    twiddle = 2 * np.pi * np.arange(n2)[:, None] * np.arange(n1)[None, :] / n
    outer = 2 * np.pi * b * d / n2
    k = np.arange(n1)[:, None] + n1 * np.arange(d_count)[None, :]
    mel_rows = np.where((k < len(mel))[..., None], mel[np.minimum(k, len(mel) - 1)], 0)
    f32 = np.float32
    return {"n1": n1, "n2": n2, "rows": rows, "d_count": d_count,
            # x (real) -> [Re, Im] of sum_a x W^(a c), W = exp(-2 pi i / n1)
            "inner": np.concatenate([np.cos(inner), -np.sin(inner)], 1).astype(f32),
            "twiddle_cos": np.cos(twiddle).astype(f32), "twiddle_sin": np.sin(twiddle).astype(f32),
            # [Re(b), Im(b)] -> [Re(d), Im(d)] of sum_b y W^(b d), W = exp(-2 pi i / n2)
            "outer": np.block([[np.cos(outer), -np.sin(outer)],
                               [np.sin(outer), np.cos(outer)]]).astype(f32),
            "mel": mel_rows.reshape(n1 * d_count, -1).astype(f32)}


@functools.cache
def _matmul_logmel_class():
    """LogMel with the power spectrum from fft_plan (log-mel within ~1e-4 of LogMel, see
    FRONT_END_TOLERANCE). XNNPack runs the two products and the transpose between them in
    about two thirds of the time of TFLite's RFFT2D (double precision, not delegated), which
    took most of the clip model's time: 1.5x the clips per second, 1.9x for the batched
    streaming model."""
    import tensorflow as tf

    from models.logmel import LogMel

    class MatmulLogMel(LogMel):
        def call(self, audio):
            fe, plan = self.fe, fft_plan(self.fe)
            n1, n2, rows, d_count = plan["n1"], plan["n2"], plan["rows"], plan["d_count"]
            if self.causal:
                audio = tf.pad(audio, [[0, 0], [fe.context_samples, 0]])
            frames = tf.signal.frame(audio, fe.window_samples, fe.hop_samples) * self._window
            if rows * n2 > fe.window_samples:
                frames = tf.pad(frames, [[0, 0], [0, 0], [0, rows * n2 - fe.window_samples]])
            shape = tf.shape(frames)[:2]
            x = tf.reshape(frames, [-1, rows, n2])
            y = tf.matmul(tf.transpose(x, [0, 2, 1]), plan["inner"])      # [.., b, Re|Im c]
            re, im = y[..., :n1], y[..., n1:]
            cos, sin = plan["twiddle_cos"], plan["twiddle_sin"]
            y = tf.concat([re * cos + im * sin, im * cos - re * sin], axis=1)  # [.., Re|Im b, c]
            z = tf.matmul(tf.transpose(y, [0, 2, 1]), plan["outer"])      # [.., c, Re|Im d]
            power = tf.square(z[..., :d_count]) + tf.square(z[..., d_count:])
            power = tf.reshape(power, tf.concat([shape, [n1 * d_count]], 0))
            features = tf.math.log(tf.matmul(power, plan["mel"]) + fe.log_floor)
            if fe.n_mfcc:
                features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., :fe.n_mfcc]
            return features

    return MatmulLogMel


def front_end_difference(fe, audio: np.ndarray, chunk: int = 64) -> float:
    """Max |log-mel difference| between LogMel and the matmul-spectrum front end on audio
    (before the DCT when the front end makes MFCCs, which both compute the same way)."""
    import dataclasses

    from models.logmel import LogMel

    log_mel = dataclasses.replace(fe, n_mfcc=0).to_dict()
    reference, fast = LogMel(log_mel), _matmul_logmel_class()(log_mel)
    return max(float(np.abs(reference(audio[i:i + chunk]) - fast(audio[i:i + chunk])).max())
               for i in range(0, len(audio), chunk))


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
    raise ExportError(f"{run_dir / 'config.yaml'}: training data {source!r} not found; "
                      "pass --calibration PATH")


def clips(source, fe, cfg: dict, labels: list[str], splits: tuple[str, ...], limit: int | None,
          seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to limit clips (a seeded random subset) of the first split that has any, prepared
    as evaluation prepares them (generated _silence_ clips get noise)."""
    from pipeline.data.tfdata import decoded
    from pipeline.data.sources import as_arrays, evaluation_batches

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
    return {"top1_agreement": round(float(np.mean(probs.argmax(1) == reference.argmax(1))), 5),
            "max_prob_diff": float(np.abs(probs - reference).max())}


def export(run_dir: str | Path, out_dir: str | Path | None = None,
           calibration: str | None = None, batch_size: int = 16, calibration_clips: int = 200,
           eval_clips: int | None = 1000, log: Callable[[str], None] = print,
           stream_batch: int = 16) -> dict:
    """Write every model file, labels.txt, config.yaml and manifest.json; returns the manifest.

    Nothing is written until every file has converted and passed its check, so a failed
    export leaves an earlier export in out_dir untouched."""
    import tensorflow as tf  # noqa: F401  (before keras, so conversion uses the TF backend)

    from pipeline.train.runs import load_run, model_file, run_config
    from pipeline.data.sources import open_source

    run_dir = model_file(run_dir).parent
    model, fe, labels = load_run(run_dir)
    cfg = run_config(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "export"
    source_name = data_source(cfg, calibration, run_dir)
    try:
        source = open_source(source_name, cfg["data"], fe, cfg["seed"], labels=labels)
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(f"{source_name}: {exc}") from None
    cal_x, _, cal_split = clips(source, fe, cfg, labels, ("train", "validation", "test"),
                                calibration_clips, cfg["seed"])
    x, y, eval_split = clips(source, fe, cfg, labels, ("test", "validation", "train"),
                             eval_clips, cfg["seed"] + 1)
    keras_probs = model.predict(x, batch_size=64, verbose=0)
    keras_accuracy = float(np.mean(keras_probs.argmax(1) == y))
    log(f"data: {len(cal_x)} calibration clips ({cal_split}), {len(x)} check clips "
        f"({eval_split}) from {source_name}; Keras accuracy {keras_accuracy:.4f}")

    manifest = {
        "format": 1,
        "run": str(run_dir),
        "sample_rate": fe.sample_rate,
        "clip_samples": fe.clip_samples,
        "hop_samples": fe.step_samples,
        "hop_seconds": fe.step_samples / fe.sample_rate,
        "front_end": fe.to_dict(),
        "labels": labels,
        "signature": SIGNATURE,
        "calibration": {"source": source_name, "split": cal_split, "clips": len(cal_x)},
        "check": {"source": source_name, "split": eval_split, "clips": len(x),
                  "keras_accuracy": round(keras_accuracy, 5)},
        "files": {},
    }
    written: dict[str, bytes] = {}

    def accept(name: str, content: bytes, entry: dict, probs: np.ndarray) -> None:
        entry.update({"bytes": len(content), "kb": round(len(content) / 1024, 1),
                      "ops": model_ops(content, name),
                      "accuracy": round(float(np.mean(probs.argmax(1) == y)), 5),
                      "vs_keras": _agreement(probs, keras_probs)})
        inputs, outputs = tensor_info(content)
        entry.update({"inputs": inputs, "outputs": outputs})
        manifest["files"][name] = entry
        written[name] = content
        log(f"{name}: {entry['kb']} KB, accuracy {entry['accuracy']:.4f}, "
            f"top-1 agreement with Keras {entry['vs_keras']['top1_agreement']:.4f}, "
            f"max prob diff {entry['vs_keras']['max_prob_diff']:.2g}")

    def check_float(name: str, probs: np.ndarray) -> None:
        a = _agreement(probs, keras_probs)
        if a["max_prob_diff"] > FLOAT_TOLERANCE or a["top1_agreement"] < FLOAT_AGREEMENT:
            raise ExportError(f"{name}: differs from Keras (max prob diff "
                              f"{a['max_prob_diff']:.3g}, top-1 agreement {a['top1_agreement']})")

    n = len(labels)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_dir = saved_model(fixed_batch_twin(model, cfg, fe, n, "clip", 1), ["probs"],
                               tmp / "clip")
        for name, dynamic, weights in (("model_float.tflite", False, "float32"),
                                       ("model_dynamic.tflite", True, "int8")):
            content = convert(clip_dir, name, dynamic)
            entry = {"kind": "clip", "batch": 1, "weights": weights, "activations": "float32"}
            probs = ClipModel.from_bytes(content, manifest, entry).predict(x)
            if not dynamic:
                check_float(name, probs)
            accept(name, content, entry, probs)

        name = "model_batch_float.tflite"
        spectrum_diff = front_end_difference(fe, x)
        if spectrum_diff > FRONT_END_TOLERANCE:
            raise ExportError(f"{name}: the matmul spectrum's log-mel features differ from "
                              f"LogMel by {spectrum_diff:.3g}")
        spectrum = {"spectrum": "two matrix products (fft_plan)",
                    "log_mel_max_diff": float(f"{spectrum_diff:.3g}")}
        # Unrolled recurrent loops: +12% clips per second for twice the size.
        batch_dir = saved_model(fixed_batch_twin(model, cfg, fe, n, "clip", batch_size,
                                                 unroll=True, matmul_fft=True),
                                ["probs"], tmp / "batch")
        content = convert(batch_dir, name)
        entry = {"kind": "clip", "batch": batch_size, "weights": "float32",
                 "activations": "float32", "note": "recurrent layers unrolled", **spectrum}
        probs = ClipModel.from_bytes(content, manifest, entry).predict(x)
        check_float(name, probs)
        accept(name, content, entry, probs)

        name = "model_int8.tflite"
        # The calibrator crashes on WHILE loops, so the int8 clip model is unrolled;
        # per-tensor scales keep the per-step quantization parameters from multiplying
        # the file size.
        unrolled = fixed_batch_twin(model, cfg, fe, n, "clip", 1, unroll=True)
        content = convert_int8(saved_model(unrolled, ["probs"], tmp / "unrolled"), name,
                               {"audio": cal_x[:, None]}, per_channel=False)
        entry = {"kind": "clip", "batch": 1, "weights": "int8", "activations": "int8",
                 "note": "recurrent layers unrolled; the audio front end stays float"}
        accept(name, content, entry, ClipModel.from_bytes(content, manifest, entry).predict(x))

        def stream_states(stream) -> list[dict]:
            return [{"input": t.name, "output": f"next_{t.name}",
                     "shape": [int(s) for s in t.shape], "dtype": "float32", "initial": 0.0,
                     "holds": _state_meaning(t.name, fe)} for t in stream.inputs[1:]]

        def check_stream(name: str, probs: np.ndarray) -> None:
            agree = _agreement(probs, keras_probs)
            if agree["top1_agreement"] < STREAM_AGREEMENT:
                raise ExportError(f"{name}: hop-by-hop result differs from the clip model on "
                                  f"{1 - agree['top1_agreement']:.1%} of clips")

        stream = fixed_batch_twin(model, cfg, fe, n, "stream", 1)
        stream_dir = saved_model(stream, list(stream.output_names), tmp / "stream")
        states = stream_states(stream)
        name = "stream_float.tflite"
        content = convert(stream_dir, name)
        entry = {"kind": "stream", "batch": 1, "weights": "float32", "activations": "float32",
                 "states": states}
        float_stream = StreamingModel.from_bytes(content, manifest, entry)
        stream_probs = float_stream.classify(x)
        check_stream(name, stream_probs)
        accept(name, content, entry, stream_probs)

        name = "stream_int8.tflite"
        # Per-tensor scales: per-channel ones (a float and an int64 per output unit, for
        # every weight and bias) add ~20% to a small model for no measurable accuracy.
        content = convert_int8(stream_dir, name, stream_calibration(float_stream, cal_x),
                               per_channel=False)
        entry = {"kind": "stream", "batch": 1, "weights": "int8", "activations": "int8",
                 "states": states, "note": "the audio front end stays float"}
        accept(name, content, entry,
               StreamingModel.from_bytes(content, manifest, entry).classify(x))

        name = "stream_batch_float.tflite"
        # A long recording cut into lanes runs them side by side: one invoke per hop for
        # every lane (resize_tensor_input cannot batch the single-stream file).
        lanes = fixed_batch_twin(model, cfg, fe, n, "stream", stream_batch, matmul_fft=True)
        content = convert(saved_model(lanes, list(lanes.output_names), tmp / "lanes"), name)
        entry = {"kind": "stream", "batch": stream_batch, "weights": "float32",
                 "activations": "float32", "states": stream_states(lanes), **spectrum}
        probs = StreamingModel.from_bytes(content, manifest, entry).classify(x)
        check_stream(name, probs)
        lane_diff = float(np.abs(probs - stream_probs).max())
        if lane_diff > FLOAT_TOLERANCE:
            raise ExportError(f"{name}: lanes differ from {FILES_ORDER[4]} run alone "
                              f"(max prob diff {lane_diff:.3g})")
        accept(name, content, entry, probs)

    for name, content in written.items():
        atomic_write_bytes(out / name, content)
    atomic_write_text(out / "labels.txt", "\n".join(labels) + "\n")
    atomic_write_text(out / "config.yaml", (run_dir / "config.yaml").read_text())
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {len(written)} models, labels.txt, config.yaml and {MANIFEST} to {out}")
    return manifest


def _state_meaning(name: str, fe) -> str:
    if name == "audio_state":
        return f"the last {fe.context_samples} samples of audio (window - hop)"
    kind = {"h": "hidden", "c": "cell"}[name[0]]
    return f"{kind} state of recurrent layer {name[1:].split('_')[0]}"


def stream_calibration(model: StreamingModel, audio: np.ndarray,
                       max_samples: int = 2000) -> dict[str, np.ndarray]:
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


if __name__ == "__main__" and sys.argv[1:2] == ["--int8"]:
    _int8_child(*sys.argv[2:6])
