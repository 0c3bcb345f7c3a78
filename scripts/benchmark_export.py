#!/usr/bin/env python3
"""Size, latency and accuracy of every exported file, against the Keras model.

  python scripts/benchmark_export.py --model RUN_DIR [--export DIR] [--data TEST_DIR]
      [--out runs/benchmarks/benchmark_export.md]

Exports RUN_DIR first when DIR holds no manifest.json. Latencies are medians on one
thread (LiteRT num_threads=1, TensorFlow intra/inter-op threads 1); the batch sweep
converts the float clip model at several fixed batch sizes and reports clips per second
on one and on all cores. Writes a Markdown report with the machine description (to
update the docs page, pass --out docs/benchmark_export.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "speech_commands_test_dev"
DEFAULT_OUT = ROOT / "runs" / "benchmarks" / "benchmark_export.md"


def shown(path: str | Path) -> str:
    """path as the report prints it: relative to the repository when it lies in the
    repository or beside it, else only its name, so no machine's layout lands in a page."""
    relative = Path(os.path.relpath(Path(path).resolve(), ROOT))
    return relative.as_posix() if relative.parts[:2] != ("..", "..") else Path(path).name


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ai_edge_litert
    import tensorflow as tf

    litert = getattr(ai_edge_litert, "__version__", None)
    if litert is None:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"ai-edge-litert {litert}; load average {load:.1f} at start (shared machine)"
    )


def test_clips(data: str, run_cfg: dict, fe, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data.sources import as_arrays, evaluation_batches, open_source

    source = open_source(data, run_cfg["data"], fe, run_cfg["seed"], labels=labels)
    split = next(s for s in ("test", "validation", "train") if source.count(s))
    return as_arrays(evaluation_batches(source, source.waves(split), run_cfg, run_cfg["seed"] + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="trained run directory")
    parser.add_argument("--export", help="exported folder (default RUN_DIR/export)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="labelled test clips")
    parser.add_argument(
        "--out",
        default=str(DEFAULT_OUT),
        help="Markdown report (default runs/benchmarks/benchmark_export.md)",
    )
    parser.add_argument(
        "--batches",
        default="1,8,16,32,64,128",
        help="batch sizes for the batched float clip model sweep",
    )
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per latency")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from pipeline.export.convert import convert, saved_model
    from pipeline.export.export import FILES, export, fixed_batch_twin
    from pipeline.runtime.files import atomic_write_text
    from pipeline.runtime.model import ClipModel, StreamingModel
    from pipeline.train.evaluate import report
    from pipeline.train.runs import load_run, run_config

    run = Path(args.model)
    out_dir = Path(args.export) if args.export else run / "export"
    if not (out_dir / "manifest.json").exists():
        export(run, out_dir)
    model, fe, labels = load_run(run)
    cfg = run_config(run)
    x, y = test_clips(args.data, cfg, fe, labels)
    description = machine()
    print(f"{len(x)} test clips from {args.data}; {description}")

    keras_probs = model.predict(x, batch_size=64, verbose=0)
    keras_acc = report(y, keras_probs.argmax(1), labels)["accuracy"]
    one = tf.constant(x[:1])
    clip_fn = tf.function(lambda a: model([a], training=False))
    keras_clip = median_seconds(lambda: clip_fn(one).numpy(), min(args.repeats, 50))
    stream_keras = fixed_batch_twin(model, cfg, fe, len(labels), "stream", 1)
    stream_in = [tf.zeros(t.shape) for t in stream_keras.inputs]
    hop_fn = tf.function(lambda *a: stream_keras(list(a), training=False))
    keras_hop = median_seconds(lambda: hop_fn(*stream_in)[0].numpy(), min(args.repeats, 50))

    rows = []
    for name in (spec.name for spec in FILES):
        path = out_dir / name
        kb = path.stat().st_size / 1024
        if name.startswith("stream"):
            sm = StreamingModel(path, num_threads=1)
            probs = sm.classify(x)
            sig = sm._sig
            hop = np.zeros((sm.batch, sm.hop_samples), np.float32)
            # per stream: a batched file advances sm.batch streams per call
            invoke = median_seconds(sig.interpreter.invoke, args.repeats * 10) / sm.batch
            step = median_seconds(partial(sm.step, hop), args.repeats * 10) / sm.batch
            per_clip = step * (fe.clip_samples // sm.hop_samples)
            rows.append((name, kb, per_clip, invoke, step, probs))
        else:
            cm = ClipModel(path, num_threads=1)
            probs = cm.predict(x)
            batch = (
                x[: cm.batch_size]
                if len(x) >= cm.batch_size
                else np.resize(x, (cm.batch_size, x.shape[1]))
            )
            per_clip = (
                median_seconds(partial(cm.predict, batch), max(10, args.repeats // cm.batch_size))
                / cm.batch_size
            )
            rows.append((name, kb, per_clip, None, None, probs))
        print(f"{name}: {kb:.1f} KB, {per_clip * 1e3:.3f} ms/clip")

    by_name = {r[0]: r for r in rows}
    clip_float = by_name["model_float.tflite"][5]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    sweep = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in [int(v) for v in args.batches.split(",")]:
            saved = saved_model(
                fixed_batch_twin(
                    model, cfg, fe, len(labels), "clip", b, unroll=True, matmul_fft=True
                ),
                ["probs"],
                Path(tmp) / f"b{b}",
            )
            content = convert(saved, f"batch {b}")
            rates = []
            for threads in (1, os.cpu_count() or 1):
                cm = ClipModel.from_bytes(content, manifest, {}, num_threads=threads)
                cm.predict(x[:b])
                t = time.perf_counter()
                cm.predict(x)
                rates.append(len(x) / (time.perf_counter() - t))
            sweep.append((b, len(content) / 1024, *rates))
            print(
                f"batch {b}: {rates[0]:.0f} clips/s on 1 thread, {rates[1]:.0f} on {os.cpu_count()}"
            )
    best = max(sweep, key=lambda r: r[3])

    lines = [
        "# TFLite export benchmark",
        "",
        f"Machine: {description}.",
        "",
        f"Model: `{shown(run)}` ({cfg['model']['name']} units {cfg['model']['units']}, "
        f"stack {fe.stack}, {model.count_params():,} parameters); test data: "
        f"`{shown(args.data)}` ({len(x)} clips). Latencies are medians on one thread; "
        "per-clip time of a streaming model is its per-hop time times the hops in one second; "
        "a batched file's per-hop times are per stream (one call divided by its batch).",
        "",
        f"Command: `python scripts/benchmark_export.py --model {shown(run)} "
        f"--data {shown(args.data)}`",
        "",
        "| file | size KB | ms / 1 s clip | ms / hop (invoke) | ms / hop (step()) | "
        "accuracy | top-1 = Keras | max prob diff vs Keras |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| Keras in tf.function (TensorFlow) | | {keras_clip * 1e3:.2f} | "
        f"{keras_hop * 1e3:.3f} | | {keras_acc:.4f} | 1 | 0 |",
    ]
    for name, kb, per_clip, invoke, step, probs in rows:
        acc = report(y, probs.argmax(1), labels)["accuracy"]
        agree = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
        hop_cols = f"{invoke * 1e3:.4f} | {step * 1e3:.4f}" if invoke else " | "
        lines.append(
            f"| {name} | {kb:.1f} | {per_clip * 1e3:.3f} | {hop_cols} | {acc:.4f} | "
            f"{agree:.4f} | {np.abs(probs - keras_probs).max():.2g} |"
        )
    stream_f = by_name["stream_float.tflite"][5]
    stream_i = by_name["stream_int8.tflite"]
    int8_acc = {r[0]: report(y, r[5].argmax(1), labels)["accuracy"] for r in rows}
    float_acc = int8_acc["model_float.tflite"]
    lines += [
        "",
        f"Keras / LiteRT speed-up per clip (float clip model): "
        f"{keras_clip / by_name['model_float.tflite'][2]:.1f}x; per hop (stream_float invoke "
        f"vs Keras stream step): {keras_hop / by_name['stream_float.tflite'][3]:.0f}x.",
        f"Streaming float vs clip float, same top-1: "
        f"{np.mean(stream_f.argmax(1) == clip_float.argmax(1)):.4f} of clips.",
        "",
        "## Targets",
        "",
        f"- stream_int8.tflite ≤ 100 KB: {stream_i[1]:.1f} KB "
        f"({'met' if stream_i[1] <= 100 else 'not met'}).",
        f"- per-hop latency ≤ 0.05 ms (one core): stream_int8 invoke {stream_i[3] * 1e3:.4f} ms "
        f"({'met' if stream_i[3] <= 5e-5 else 'not met'}); whole Python step() "
        f"{stream_i[4] * 1e3:.4f} ms.",
    ]
    for name in ("model_dynamic.tflite", "model_int8.tflite", "stream_int8.tflite"):
        ref = "stream_float.tflite" if name.startswith("stream") else "model_float.tflite"
        delta = (int8_acc[name] - int8_acc[ref]) * 100
        lines.append(
            f"- {name} accuracy within 1 point of {ref}: {delta:+.2f} points "
            f"({'met' if delta >= -1 else 'not met'})."
        )
    lines += [
        f"- float clip model vs Keras: top-1 agreement "
        f"{np.mean(clip_float.argmax(1) == keras_probs.argmax(1)):.4f} (≥ 0.999), "
        f"max prob diff {np.abs(clip_float - keras_probs).max():.2g} (≤ 1e-4); "
        f"accuracy {float_acc:.4f}.",
        "",
        "## Batched float clip model",
        "",
        "Clips per second over the whole test set (the last batch zero-padded), built as "
        "`model_batch_float.tflite` is (matmul spectrum, unrolled recurrent loops).",
        "",
        f"| batch | size KB | clips/s, 1 thread | clips/s, {os.cpu_count()} threads |",
        "|---:|---:|---:|---:|",
        *[f"| {b} | {kb:.1f} | {r1:.0f} | {rn:.0f} |" for b, kb, r1, rn in sweep],
        "",
        f"Fastest: batch {best[0]} ({best[3]:.0f} clips/s on {os.cpu_count()} threads).",
        "",
    ]
    atomic_write_text(Path(args.out), "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
