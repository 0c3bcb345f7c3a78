#!/usr/bin/env python3
"""Score detections on a test stream against its ground truth, at one threshold or many.

  python scripts/score_stream.py --truth stream_truth.csv --results results.csv [--tolerance 0.75]
  python scripts/score_stream.py --sweep --model MODEL --audio stream.wav [--truth stream_truth.csv]
                                 --out DIR [--thresholds T ...] [--target-fa 2]
                                 [--k-of-n K N] [--margin M] [--class-threshold LABEL=T ...]
                                 [--write-manifest]

The first form scores a transcription (scripts/transcribe.py output): matched %,
wrong-label % and missed % of the spoken commands and false accepts per hour (a detection
matches a word when their centres are within the tolerance), then the same as one JSON line.

--sweep runs the streaming model over the stream once and the detector at every threshold
(default 0.3 to 0.999), scoring each as a transcription at that threshold would score. It
writes DIR/sweep.csv, DIR/sweep.md (a table) and DIR/det.png (missed-or-wrong % against
false accepts per hour, log axis), prints the table and the threshold with the most matched
commands at no more than --target-fa false accepts per hour, and ends with that row as one
JSON line. Without --truth, or with a truth that lists no command (a negative stream from
make_stream.py --negative), every detection is a false accept and only those are reported.

--k-of-n, --margin and --class-threshold (see CommandDetector) apply to the detector at
every threshold, so their effect can be swept too. --write-manifest records the picked
threshold with the detector settings it was swept with (window, suppression and those)
as the operating point in the manifest.json beside --model (an export, given explicitly:
the bundled one is not changed by accident), replacing any earlier one; transcribe.py and
listen.py, and the phone app, then use it by default. Pick it on a validation stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--truth", help="ground truth CSV from make_stream.py")
    parser.add_argument("--results", help="transcription output (CSV or JSONL)")
    parser.add_argument("--path", help="which input's detections (default: the only recording)")
    parser.add_argument("--tolerance", type=float, default=0.75, help="seconds (0.75)")
    sweep = parser.add_argument_group("threshold sweep")
    sweep.add_argument(
        "--sweep",
        action="store_true",
        help="score the streaming model's detections at many thresholds",
    )
    sweep.add_argument(
        "--model",
        help="exported .tflite file or export folder (default: the bundled pretrained model)",
    )
    sweep.add_argument("--audio", help="the stream's audio file")
    sweep.add_argument("--out", help="folder for sweep.csv, sweep.md and det.png")
    sweep.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        metavar="T",
        help="thresholds to try (default: 0.3 to 0.999, finer towards 1)",
    )
    sweep.add_argument(
        "--target-fa",
        type=float,
        default=2.0,
        help="false accepts per hour the picked threshold may reach (2)",
    )
    sweep.add_argument(
        "--window",
        type=float,
        dest="average_window_s",
        help="detector moving-average window in seconds (detector default)",
    )
    sweep.add_argument(
        "--suppression",
        type=float,
        dest="suppression_s",
        help="detector suppression period in seconds (detector default)",
    )
    sweep.add_argument(
        "--k-of-n",
        type=int,
        nargs=2,
        metavar=("K", "N"),
        help="an event also needs the top label over its threshold in K of the last N hops",
    )
    sweep.add_argument(
        "--margin", type=float, help="averaged top-1 minus top-2 an event needs (0: none)"
    )
    sweep.add_argument(
        "--class-threshold",
        nargs="+",
        default=[],
        metavar="LABEL=T",
        help="fixed thresholds of some labels; the sweep varies the others' threshold",
    )
    sweep.add_argument(
        "--write-manifest",
        action="store_true",
        help="write the picked operating point into the manifest.json beside --model",
    )
    args = parser.parse_args(argv)
    try:
        args.class_thresholds = {
            label: float(t) for label, t in (c.split("=", 1) for c in args.class_threshold)
        }
    except ValueError:
        parser.error("--class-threshold takes LABEL=T pairs")
    if args.sweep:
        if args.write_manifest and not args.model:
            parser.error("--write-manifest needs --model (the export whose manifest to change)")
        if args.results or not (args.audio and args.out):
            parser.error("--sweep needs --audio and --out, and reads no --results")
        if args.thresholds and not all(0 <= t <= 1 for t in args.thresholds):
            parser.error("--thresholds must be between 0 and 1")
        return run_sweep(args)
    if not (args.truth and args.results) or args.model or args.audio or args.out:
        parser.error("give --truth and --results (or --sweep with --model, --audio, --out)")
    if args.write_manifest:
        parser.error("--write-manifest goes with --sweep")

    from pipeline.runtime.rows import read_rows
    from pipeline.runtime.streams import format_score, read_detections, read_truth, score

    try:
        truths = read_truth(args.truth)
        recordings = [
            r
            for r in read_rows(Path(args.results))
            if r.get("kind") == "recording" and (args.path is None or r["path"] == args.path)
        ]
        if len(recordings) != 1:
            raise ValueError(
                f"{args.results}: {len(recordings)} matching recordings; name one with --path"
            )
        rec = recordings[0]
        found = read_detections(args.results, rec["path"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = score(truths, found, float(rec["duration_s"]), args.tolerance)
    print(format_score(result))
    print(json.dumps(result))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """Per-hop probabilities once (the model's timeline, as transcription computes them:
    told the length, so a short stream is cut into the same segments), then the detector
    and the scorer at every threshold."""
    import numpy as np

    from pipeline.runtime.audio import load_audio
    from pipeline.runtime.detector import CommandDetector, describe
    from pipeline.runtime.errors import AudioError, ModelError, one_line
    from pipeline.runtime.model import MANIFEST
    from pipeline.runtime.recognizer import open_model
    from pipeline.runtime.streams import (
        DEFAULT_THRESHOLDS,
        operating_point,
        pick_threshold,
        plot_sweep,
        read_truth,
        sweep,
        sweep_markdown,
        write_operating_point,
        write_sweep,
    )

    try:
        truths = read_truth(args.truth) if args.truth else []
        model = open_model(args.model)
        fe = model.front_end
        audio = load_audio(args.audio, fe.sample_rate)
        start = time.perf_counter()
        probs = np.concatenate(list(model.timeline([audio], len(audio))))
    except (OSError, ValueError, KeyError, ModelError, AudioError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(
        f"{args.audio}: {len(probs)} hops in {time.perf_counter() - start:.1f} s", file=sys.stderr
    )
    options = {
        k: getattr(args, k)
        for k in ("average_window_s", "suppression_s", "k_of_n", "class_thresholds", "margin")
        if getattr(args, k) not in (None, {})
    }
    hop_s = fe.step_samples / fe.sample_rate
    try:
        rows = sweep(
            probs,
            model.labels,
            hop_s,
            audio,
            fe.sample_rate,
            truths,
            sorted(set(args.thresholds or DEFAULT_THRESHOLDS)),
            fe.clip_seconds,
            args.tolerance,
            **options,
        )
    except ValueError as exc:  # detector settings it cannot take
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    files = write_sweep(Path(args.out), rows, args.target_fa)
    try:
        plot_sweep(Path(args.out) / "det.png", rows, args.target_fa)
        files.append(Path(args.out) / "det.png")
    except ImportError:
        print(
            "note: no det.png: the plot needs matplotlib (pip install 'kws-rnn[plot]')",
            file=sys.stderr,
        )
    print(sweep_markdown(rows, args.target_fa), end="")
    print(f"wrote {', '.join(str(f) for f in files)}", file=sys.stderr)
    best = pick_threshold(rows, args.target_fa)
    print(json.dumps({"target_fa_per_hour": args.target_fa, **(best or {"threshold": None})}))
    if not args.write_manifest:
        return 0
    manifest = Path(model.path).parent / MANIFEST
    if best is None:
        print(f"error: no operating point to write; {manifest} left as it was", file=sys.stderr)
        return 1
    detector = CommandDetector(model.labels, hop_s, threshold=best["threshold"], **options)
    block = operating_point(detector, best, Path(args.audio).name, args.target_fa)
    try:
        write_operating_point(manifest, block)
    except (OSError, ValueError) as exc:
        print(f"error: {manifest}: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {manifest}: {describe(detector, {'detector': block})}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
