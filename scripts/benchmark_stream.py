#!/usr/bin/env python3
"""Long-stream benchmark: matched commands and false accepts per hour, operating points
chosen on validation speakers and reported on test speakers, for several exports at once.

  python scripts/benchmark_stream.py --dev ../shared/data/speech_commands_dev \
      --test ../shared/data/speech_commands_test_dev [--out runs/benchmarks/stream] \
      NAME=RUN_OR_EXPORT [NAME=RUN_OR_EXPORT ...] [--targets 2 10] [--no-int8] [--scale 1]

Builds four streams once (STREAMS: 15 minutes of the validation speakers' words and 30 of
their other words alone, 30 minutes of the test speakers' words and 60 of their other
words alone), then for every model: its clip accuracy on --test (model_float and
stream_int8), a threshold sweep on each stream (stream_batch_float, the same probabilities
as stream_float) and, unless --no-int8, the test streams again through stream_int8.tflite
hop by hop, as the phone runs it. A sweep or clip score already on disk is read back, not redone.

Operating point "<= N FA/h": the threshold with the most matched commands on the validation
stream among those with at most N false accepts per hour on the validation negative stream
and at most max(N, 4) on the validation stream itself (one false accept in its 15 minutes
is 4 per hour); the test streams are then scored at that threshold. The int8 columns read
the test streams' DET curve directly: the most commands matched at a threshold whose false
accepts on the negative test hour are at most 2 and 0.5 per hour (chosen on test, so a
reading of the curve, not an operating point). Results: OUT/results.json, OUT/results.md
and OUT/det.png (every model's test-stream DET curve). --scale shortens every stream by
that factor, for a quick check of the pipeline (streams of another length go to their own
OUT folder, so they never mix with the full ones).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (clip folder, split, minutes, seed, negative); the seeds docs/streaming.md used
STREAMS = {
    "val15": ("dev", "validation", 15, 1, False),
    "neg30_val": ("dev", "validation", 30, 3, True),
    "test30": ("test", "test", 30, 0, False),
    "neg60_test": ("test", "test", 60, 2, True),
}
VALIDATION, VALIDATION_NEGATIVE, TEST, TEST_NEGATIVE = STREAMS
READINGS = (2.0, 0.5)  # false accepts per hour on the negative test hour
WINDOW_S, SUPPRESSION_S = 0.5, 1.0


def build_streams(
    dev: Path, test: Path, noise: Path, out: Path, scale: float = 1.0
) -> dict[str, Path]:
    """The four streams under out (kept: a second run reuses them)."""
    import make_stream

    folders = {"dev": dev, "test": test}
    paths = {}
    for name, (folder, split, minutes, seed, negative) in STREAMS.items():
        path = paths[name] = out / f"{name}.wav"
        if path.exists() and path.with_name(f"{name}_truth.csv").exists():
            continue
        argv = [
            "--clips", str(folders[folder]), "--split", split, "--noise", str(noise),
            "--minutes", str(minutes * scale), "--seed", str(seed), "--out", str(path),
        ]  # fmt: skip
        if make_stream.main(argv + ["--negative"] * negative) != 0:
            raise SystemExit(f"error: could not build {path}")
    return paths


def export_dir(path: Path) -> Path:
    """An export folder, or a run's (exported first if it has none)."""
    if (path / "manifest.json").exists():
        return path
    if not (path / "model.keras").exists():
        raise SystemExit(f"error: {path}: neither an export folder nor a run directory")
    if not (path / "export" / "manifest.json").exists():
        import export

        if export.main(["--model", str(path)]) != 0:
            raise SystemExit(f"error: {path}: export failed")
    return path / "export"


def swept(model_path: Path, stream: Path, out: Path) -> dict[float, dict[str, float]]:
    """The sweep of one model over one stream, by threshold (read back when on disk)."""
    table = out / "sweep.csv"
    if not table.exists():
        import score_stream

        argv = [
            "--sweep", "--model", str(model_path), "--audio", str(stream),
            "--truth", str(stream.with_name(f"{stream.stem}_truth.csv")), "--out", str(out),
            "--window", str(WINDOW_S), "--suppression", str(SUPPRESSION_S),
        ]  # fmt: skip
        if score_stream.main(argv) != 0:
            raise SystemExit(f"error: sweep of {model_path} on {stream} failed")
    with open(table) as f:
        return {
            float(r["threshold"]): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)
        }


def operating_point(sweeps: dict[str, dict[float, dict]], target: float) -> dict | None:
    """The validation-chosen threshold for target FA/h and what the test streams give there."""
    val, neg = sweeps[VALIDATION], sweeps[VALIDATION_NEGATIVE]
    quiet = [
        t
        for t in val
        if neg[t]["false_accepts_per_hour"] <= target
        and val[t]["false_accepts_per_hour"] <= max(target, 4)
    ]
    if not quiet:
        return None
    t = max(quiet, key=lambda t: (val[t]["matched_pct"], -t))
    test, negative = sweeps[TEST][t], sweeps[TEST_NEGATIVE][t]
    return {
        "target_fa_per_hour": target,
        "threshold": t,
        "validation_matched_pct": val[t]["matched_pct"],
        "validation_negative_fa_per_hour": neg[t]["false_accepts_per_hour"],
        "test_matched_pct": test["matched_pct"],
        "test_wrong_pct": test["wrong_pct"],
        "test_missed_pct": test["missed_pct"],
        "test_fa_per_hour": test["false_accepts_per_hour"],
        "test_negative_fa_per_hour": negative["false_accepts_per_hour"],
    }


def reading(test: dict[float, dict], negative: dict[float, dict], fa: float) -> dict | None:
    """The most test commands matched where the negative test hour has at most fa FA/h."""
    quiet = [t for t in test if negative[t]["false_accepts_per_hour"] <= fa]
    if not quiet:
        return None
    t = max(quiet, key=lambda t: (test[t]["matched_pct"], -t))
    return {
        "negative_fa_per_hour": fa,
        "threshold": t,
        "test_matched_pct": test[t]["matched_pct"],
        "test_fa_per_hour": test[t]["false_accepts_per_hour"],
    }


def clip_accuracy(model: Path, data: Path, out: Path) -> float:
    """Accuracy on the test clips (read back from out when on disk)."""
    from pipeline.runtime.files import atomic_write_text
    from pipeline.train.evaluate import evaluate

    if out.exists():
        return json.loads(out.read_text())["accuracy"]
    rep, _ = evaluate(model, str(data), None, None)
    accuracy = round(rep["accuracy"], 4)
    atomic_write_text(out, json.dumps({"model": str(model), "accuracy": accuracy}))
    return accuracy


def markdown(results: list[dict], targets: list[float]) -> str:
    lines = [
        "| model | clip acc. float / int8 | operating point | threshold | val matched | "
        "test matched / wrong / missed | test FA/h | negative test hour FA/h |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        acc = f"{100 * r['clip_float']:.1f}% / {100 * r['clip_int8']:.1f}%"
        for i, target in enumerate(targets):
            p = r["operating_points"][i]
            head = f"| {r['name']} | {acc} " if i == 0 else "| | "
            if p is None:
                lines.append(head + f"| <= {target:g} FA/h | none | | | | |")
                continue
            lines.append(
                head + f"| <= {target:g} FA/h | {p['threshold']:g} | "
                f"{p['validation_matched_pct']:.1f}% | {p['test_matched_pct']:.1f}% / "
                f"{p['test_wrong_pct']:.1f}% / {p['test_missed_pct']:.1f}% | "
                f"{p['test_fa_per_hour']:.0f} | {p['test_negative_fa_per_hour']:.0f} |"
            )
    if any(r.get("int8_readings") for r in results):
        lines += [
            "",
            "stream_int8 hop by hop, read off the test DET curve: the most test-stream commands "
            "matched at a threshold with at most that many false accepts per hour on the "
            "negative test hour (chosen on test: a reading of the curve, not an operating point):",
            "",
            "| model | "
            + " | ".join(f"matched at <= {fa:g} FA/h (threshold)" for fa in READINGS)
            + " |",
            "| --- |" + " ---: |" * len(READINGS),
        ]
        for r in results:
            cells = [
                "none" if x is None else f"{x['test_matched_pct']:.1f}% ({x['threshold']:g})"
                for x in r.get("int8_readings") or [None] * len(READINGS)
            ]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_det(results: list[dict], path: Path) -> None:
    """Missed-or-wrong % on the test stream against false accepts per hour on the test
    stream and the negative test hour together, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in results:
        points = r["det"]  # in threshold order: a parametric curve
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=r["name"])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("false accepts per hour (test stream + negative test hour)")
    ax.set_ylabel("commands missed or mislabelled (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", required=True, help="Speech Commands archive-layout folder")
    parser.add_argument("--test", required=True, help="12-class test folder (other speakers)")
    parser.add_argument("--noise", help="background noise folder (default: DEV/_background_noise_)")
    parser.add_argument("--out", default="runs/benchmarks/stream")
    parser.add_argument("--targets", nargs="*", type=float, default=[2.0, 10.0])
    parser.add_argument("--no-int8", action="store_true", help="skip the stream_int8 sweeps")
    parser.add_argument("--scale", type=float, default=1.0, help="stream length factor (1)")
    parser.add_argument("models", nargs="+", metavar="NAME=RUN_OR_EXPORT")
    args = parser.parse_args(argv)
    from pipeline.runtime.files import atomic_write_text
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()
    dev, test, out = Path(args.dev), Path(args.test), Path(args.out)
    if args.scale != 1.0:
        out = out / f"scale{args.scale:g}"
    streams = build_streams(
        dev, test, Path(args.noise or dev / "_background_noise_"), out / "streams", args.scale
    )
    results = []
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep:
            parser.error(f"{spec}: expected NAME=RUN_OR_EXPORT")
        export = export_dir(Path(path))
        sweeps = {s: swept(export, p, out / name / s) for s, p in streams.items()}
        row = {
            "name": name,
            "export": str(export),
            **{
                f"clip_{kind}": clip_accuracy(
                    export / f"{file}.tflite", test, out / name / f"clip_{kind}.json"
                )
                for kind, file in (("float", "model_float"), ("int8", "stream_int8"))
            },
            "operating_points": [operating_point(sweeps, t) for t in args.targets],
        }
        test_s, neg_s = sweeps[TEST], sweeps[TEST_NEGATIVE]
        hours = (test_s[min(test_s)]["duration_s"] + neg_s[min(neg_s)]["duration_s"]) / 3600
        row["det"] = [
            (
                (test_s[t]["false_accepts"] + neg_s[t]["false_accepts"]) / hours,
                100 - test_s[t]["matched_pct"],
            )
            for t in test_s
        ]
        if not args.no_int8:
            int8 = {
                s: swept(export / "stream_int8.tflite", streams[s], out / name / f"{s}_int8")
                for s in (TEST, TEST_NEGATIVE)
            }
            row["int8_readings"] = [reading(int8[TEST], int8[TEST_NEGATIVE], fa) for fa in READINGS]
        print(json.dumps({k: v for k, v in row.items() if k != "det"}), flush=True)
        results.append(row)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    table = markdown(results, args.targets)
    atomic_write_text(out / "results.md", table)
    plot_det(results, out / "det.png")
    print(table, end="")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'det.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
