#!/usr/bin/env python3
"""Score a trained model on labelled audio.

  python scripts/evaluate.py --model RUN_DIR|model.keras|model.tflite --data PATH

Prints accuracy and per-class precision/recall, writes a confusion-matrix PNG, and ends
with one JSON line: {"accuracy": ..., "n": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="run directory, .keras or .tflite file")
    parser.add_argument(
        "--data",
        required=True,
        help="Speech Commands folder (either layout), folder-per-label set, "
        "or tfds:NAME[@DATA_DIR][?manual_dir=DIR] (see docs/tfds.md)",
    )
    parser.add_argument(
        "--split",
        choices=["train", "validation", "test"],
        help="which split (default: test of an archive folder, else all)",
    )
    parser.add_argument("--plot", help="confusion-matrix PNG (default: beside the model)")
    args = parser.parse_args(argv)
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()

    from pipeline.train.evaluate import evaluate, format_report

    model = Path(args.model)
    plot = (
        Path(args.plot)
        if args.plot
        else (model if model.is_dir() else model.parent) / f"confusion_{model.stem}_eval.png"
    )
    try:
        rep, labels = evaluate(model, args.data, args.split, plot)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(rep, labels))
    print(f"confusion matrix: {plot}")
    print(
        json.dumps(
            {
                "accuracy": round(rep["accuracy"], 4),
                "n": rep["n"],
                "model": str(model),
                "data": args.data,
                "per_class": rep["per_class"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
