#!/usr/bin/env python3
"""Export a trained run to TFLite for phones and small boards.

  python scripts/export.py --model RUN_DIR [--out DIR] [--calibration PATH]

Writes model_float / model_dynamic / model_int8 / model_batch_float (clip classifiers),
stream_float / stream_int8 (one hop plus state per call), stream_batch_float (K streams side
by side, for long recordings), labels.txt, config.yaml and
manifest.json to DIR (default RUN_DIR/export). Int8 calibration uses clips from the run's
training data (config.yaml: source) unless --calibration names another data folder.
See docs/export.md for the input/output contract of each file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="run directory (or its model.keras)")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/export)")
    parser.add_argument(
        "--calibration",
        help="data for int8 calibration and the checks (default: the run's training data)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=16,
        help="fixed batch of model_batch_float.tflite (default 16, the fastest measured)",
    )
    parser.add_argument(
        "--stream-batch",
        type=int,
        default=16,
        help="streams per call of stream_batch_float.tflite (default 16)",
    )
    parser.add_argument(
        "--calibration-clips",
        type=int,
        default=200,
        help="clips used to calibrate the int8 models (default 200)",
    )
    parser.add_argument(
        "--check-clips",
        type=int,
        default=1000,
        help="at most this many test clips for the checks (default 1000)",
    )
    args = parser.parse_args(argv)
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()
    if min(args.batch, args.stream_batch, args.calibration_clips, args.check_clips) < 1:
        parser.error(
            "--batch, --stream-batch, --calibration-clips and --check-clips must be positive"
        )

    from pipeline.export.export import ExportError, export
    from pipeline.runtime.errors import one_line

    try:
        export(
            args.model,
            args.out,
            args.calibration,
            args.batch,
            args.calibration_clips,
            args.check_clips,
            stream_batch=args.stream_batch,
        )
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
