"""Keras model -> SavedModel -> .tflite bytes, builtin ops only.

Every conversion goes through a SavedModel whose serving signature names every input and
output, so an app addresses tensors by name rather than by the converter's input order.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.runtime.errors import one_line
from pipeline.runtime.model import SIGNATURE, open_interpreter

ROOT = Path(__file__).resolve().parents[2]
# Builtin in name, but they need resource variables that mobile interpreters do not set up.
VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
# Layers kept float in int8 models: raw audio and a power spectrum span far more than one
# int8 scale can hold, so quantizing them flattens every quiet band to the log floor. A
# quantized log-mel running mean would also stick: its per-hop updates are below one step.
FLOAT_LAYERS = ("logmel", "join_audio", "next_audio_state", "next_norm_state")


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
        raise ExportError(
            f"{name}: needs ops outside the TFLite builtins: {', '.join(sorted(bad))}"
        )
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
    archive.add_endpoint(
        SIGNATURE,
        serve,
        input_signature=[tf.TensorSpec(t.shape, tf.float32, name=t.name) for t in model.inputs],
    )
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
    text = str(exc)
    ops = set(re.findall(r"'tf\.(\w+)' op", text))
    for listed in re.findall(r"(?:Flex|Custom) ops: ([^\n]+)", text):
        ops.update(o.strip() for o in listed.split(",") if o.strip())
    if ops:
        return "needs ops outside the TFLite builtins: " + ", ".join(sorted(ops))
    return "conversion failed: " + one_line(exc)[:300]


def convert_int8(
    saved_dir: Path, name: str, samples: dict[str, np.ndarray], per_channel: bool = True
) -> bytes:
    """Full-integer conversion (int8 weights and activations, float input/output).

    Runs in a child process: the calibrator crashes the process outright on some graphs
    (any WHILE loop), and that must become an error naming the file, not a dead exporter."""
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "calibration.npz", Path(tmp) / "model.tflite"
        np.savez(data, **samples)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.export.convert",
                "--int8",
                str(saved_dir),
                str(data),
                str(out),
                "1" if per_channel else "0",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if proc.returncode < 0:
            raise ExportError(
                f"{name}: int8 conversion crashed "
                f"({signal.Signals(-proc.returncode).name} in the TFLite calibrator)"
            )
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
    converter.representative_dataset = lambda: (
        {k: v[i] for k, v in samples.items()} for i in range(n)
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    converter._experimental_calibrate_only = True
    converter.exclude_conversion_metadata = True
    calibrated = converter.convert()
    flat = schema.Model.GetRootAsModel(calibrated, 0)
    graph, signature = flat.Subgraphs(0), flat.SignatureDefs(0)
    names = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())]
    front = [t for t in names if any(f"/{layer}" in t for layer in FLOAT_LAYERS)]
    front += [
        names[signature.Outputs(i).TensorIndex()]
        for i in range(signature.OutputsLength())
        if signature.Outputs(i).Name().decode() in FLOAT_LAYERS
    ]
    Path(out).write_bytes(
        mlir_quantize(calibrated, disable_per_channel=per_channel != "1", denylisted_nodes=front)
    )


def tensor_info(content: bytes) -> tuple[list[dict], list[dict]]:
    """Name, shape, dtype and quantization of each signature input and output."""
    sig = open_interpreter(content)
    sig.allocate_tensors()
    details = {d["index"]: d for d in sig.get_tensor_details()}
    names = sig._get_full_signature_list()[SIGNATURE]

    def describe(name, index):
        d = details[index]
        scale, zero = d["quantization"]
        return {
            "name": name,
            "tensor": d["name"],
            "shape": [int(s) for s in d["shape"]],
            "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)},
        }

    return (
        [describe(n, i) for n, i in sorted(names["inputs"].items())],
        [describe(n, i) for n, i in sorted(names["outputs"].items())],
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--int8"]:
    _int8_child(*sys.argv[2:6])
