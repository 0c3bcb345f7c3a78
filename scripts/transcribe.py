#!/usr/bin/env python3
"""Label every recording given: clips get one row, longer recordings a timeline of commands.

  python scripts/transcribe.py --model MODEL INPUT... [--out results.csv|results.jsonl]
                               [--top-k K] [--threshold T] [--resume] [--plot DIR]
                               [--min-rate HZ] [--max-rate HZ] [--max-channels N]
                               [--max-duration S]

MODEL is an exported .tflite (TensorFlow is not imported) or a run directory / .keras file.
INPUT is a file, a directory (searched recursively for audio), a glob pattern, @LIST (a
file with one path per line) or - (paths on standard input).

A file whose header declares an implausible sample rate, channel count or duration gets an
error row before anything is decoded (the limits are options); a long recording is
streamed from the file in blocks, so its length costs no memory.

The timeline detector runs at the operating point recorded in the export's manifest.json
(score_stream.py --sweep --write-manifest), else at the detector's defaults; --threshold,
--window and --suppression each override the one value they name.

Rows go to --out (CSV, or JSONL for .jsonl) or to standard output as CSV; each names its
input in `path` and a failed file carries `error`. A summary line goes to standard error,
after a line naming the detector's operating point when there were long recordings.
Exit status: 0 when every file succeeded, 3 when some failed, 2 on a usage error.

With --ray [ADDRESS] the same rows come from a Ray cluster (docs/distributed.md): --out is
then a folder or a bucket prefix (s3://, gs://) under which every run writes a new run-*
prefix of part files (--format jsonl or parquet); @LIST manifests, local or in object
storage, are read by the cluster, which is the way to give it millions of files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# Command-line flags of the AudioLimits fields: flag, field, type, metavar, meaning.
LIMIT_FLAGS = (
    ("--min-rate", "min_rate", int, "HZ", "lowest plausible sample rate"),
    ("--max-rate", "max_rate", int, "HZ", "highest plausible sample rate"),
    ("--max-channels", "max_channels", int, "N", "most channels a file may declare"),
    ("--max-duration", "max_duration_s", float, "S", "longest plausible recording, seconds"),
)


def main(argv: list[str] | None = None) -> int:
    from pipeline.runtime.audio import DEFAULT_LIMITS, AudioLimits

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        help="exported .tflite file (clip or streaming) or export "
        "folder, or a run directory / .keras file (needs the [train] extra); "
        "default: the bundled pretrained model (models/pretrained)",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, directories, glob patterns, @list.txt or -",
    )
    parser.add_argument("--out", help="results.csv or results.jsonl (default: CSV on stdout)")
    parser.add_argument("--top-k", type=int, default=3, help="labels listed per clip (3)")
    parser.add_argument(
        "--threshold",
        type=float,
        help="averaged probability a timeline detection needs (default: the manifest's "
        "operating point, else the detector's)",
    )
    parser.add_argument(
        "--window",
        type=float,
        dest="average_window_s",
        help="moving-average window of the timeline in seconds "
        "(default: the manifest's, else the detector's)",
    )
    parser.add_argument(
        "--suppression",
        type=float,
        dest="suppression_s",
        help="seconds after a detection during which no other is reported "
        "(default: the manifest's, else the detector's)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip files already in --out (failed ones are tried again)",
    )
    parser.add_argument("--plot", help="folder for a timeline PNG per long recording")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="model instances / decoding threads (default: CPU count)",
    )
    parser.add_argument("--batch", type=int, default=256, help="clips per inference batch")
    parser.add_argument(
        "--summary-json",
        action="store_true",
        help="end with the summary as one JSON line on standard error",
    )
    cluster = parser.add_argument_group("on a Ray cluster (the [distributed] extra)")
    cluster.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster: ADDRESS, else RAY_ADDRESS, else a local instance",
    )
    cluster.add_argument("--format", choices=["jsonl", "parquet"], help="part files (jsonl)")
    cluster.add_argument("--actors", type=int, help="most model actors (3/4 of the CPUs)")
    limits = parser.add_argument_group("header limits (a file outside them gets an error row)")
    for flag, field, kind, metavar, what in LIMIT_FLAGS:
        default = getattr(DEFAULT_LIMITS, field)
        limits.add_argument(
            flag,
            dest=field,
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{what} ({default:g})",
        )
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch < 1 or args.threads < 1:
        parser.error("--top-k, --batch and --threads must be at least 1")
    if args.resume and not args.out:
        parser.error("--resume needs --out")
    if args.ray is None and (args.format or args.actors):
        parser.error("--format and --actors go with --ray")
    if args.ray is not None:
        from pipeline.distributed.cluster import check_address

        if not args.out or args.plot:
            parser.error("--ray needs --out (a folder or bucket prefix) and cannot --plot")
        if args.actors is not None and args.actors < 1:
            parser.error("--actors must be at least 1")
        if args.ray:
            try:
                check_address(args.ray)
            except ValueError as exc:
                parser.error(str(exc))
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")
    if (
        not 1 <= args.min_rate <= args.max_rate
        or args.max_channels < 1
        or not args.max_duration_s > 0
    ):
        parser.error(
            "need 1 <= --min-rate <= --max-rate, --max-channels >= 1 and --max-duration > 0"
        )

    from pipeline.runtime.errors import ModelError, one_line
    from pipeline.runtime.inputs import expand_inputs
    from pipeline.runtime.recognizer import is_export, open_model
    from pipeline.runtime.transcribe import EXIT_SOME_FAILED, Settings, run_transcription

    settings = Settings(
        top_k=args.top_k,
        threshold=args.threshold,
        average_window_s=args.average_window_s,
        suppression_s=args.suppression_s,
        batch=args.batch,
        decode_workers=args.threads,
        plot_dir=Path(args.plot) if args.plot else None,
        limits=AudioLimits(**{field: getattr(args, field) for _, field, *_ in LIMIT_FLAGS}),
    )
    if args.ray is not None:
        if args.model is not None and not is_export(args.model):
            parser.error("--ray needs an exported model (.tflite or export folder)")
        from pipeline.distributed.cluster import connect
        from pipeline.distributed.transcribe import transcribe_on_ray

        try:
            connect(args.ray or None)
            summary, prefix = transcribe_on_ray(
                args.inputs,
                args.out,
                args.model,
                settings,
                args.format or "jsonl",
                args.resume,
                args.actors,
                args.batch,
            )
        except (OSError, ValueError, RuntimeError, ModelError) as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        print(f"{summary.line()}; rows in {prefix}", file=sys.stderr)
        if args.summary_json:
            print(json.dumps({**summary.as_dict(), "prefix": prefix}), file=sys.stderr)
        return EXIT_SOME_FAILED if summary.errors else 0
    try:
        if args.model is None or is_export(args.model):
            model = open_model(args.model, instances=args.threads)
        else:
            from pipeline.train.recognizer import KerasRecognizer

            model = KerasRecognizer(args.model, stream_batch=16)
    except (OSError, ValueError, RuntimeError, ModelError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        def progress(total: int):
            return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)

    out = Path(args.out) if args.out else None
    try:
        summary = run_transcription(
            model, expand_inputs(args.inputs), out, settings, resume=args.resume, progress=progress
        )
    except KeyboardInterrupt:
        print("interrupted: finished rows are in the output; --resume continues", file=sys.stderr)
        return 130
    except ValueError as exc:  # an operating point the detector cannot take
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if summary.recordings:
        print(summary.detector_line, file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    if args.summary_json:
        print(json.dumps(summary.as_dict()), file=sys.stderr)
    return EXIT_SOME_FAILED if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
