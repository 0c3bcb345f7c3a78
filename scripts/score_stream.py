#!/usr/bin/env python3
"""Score the detections of a transcribed test stream against its ground truth.

  python scripts/score_stream.py --truth stream_truth.csv --results results.csv [--tolerance 0.75]

Prints matched %, wrong-label % and missed % of the spoken commands and false accepts per
hour (a detection matches a word when their centres are within the tolerance), then the
same as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", required=True, help="ground truth CSV from make_stream.py")
    parser.add_argument("--results", required=True, help="transcription output (CSV or JSONL)")
    parser.add_argument("--path", help="which input's detections (default: the only recording)")
    parser.add_argument("--tolerance", type=float, default=0.75, help="seconds (0.75)")
    args = parser.parse_args(argv)

    from pipeline.runtime.streams import format_score, read_detections, read_truth, score
    from pipeline.runtime.rows import read_rows

    try:
        truths = read_truth(args.truth)
        recordings = [r for r in read_rows(Path(args.results)) if r.get("kind") == "recording"
                      and (args.path is None or r["path"] == args.path)]
        if len(recordings) != 1:
            raise ValueError(f"{args.results}: {len(recordings)} matching recordings; "
                             "name one with --path")
        rec = recordings[0]
        found = read_detections(args.results, rec["path"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = score(truths, found, float(rec["duration_s"]), args.tolerance)
    print(format_score(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
