#!/usr/bin/env python3
"""Train a speech-command recognizer.

  python scripts/train.py --config configs/default.yaml --data PATH --out RUN_DIR [key=value ...]

PATH is a Speech Commands folder (archive layout: the 12-class task by default), any
folder-per-label collection of audio (classes are the folder names), or
tfds:speech_commands[@DATA_DIR][?manual_dir=DIR] (docs/tfds.md). Overrides use dotted keys,
e.g. train.epochs=5
model.units=[64,64]. Starting again with the same RUN_DIR resumes an interrupted run.
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
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument(
        "--data",
        required=True,
        help="data folder or tfds:NAME[@DATA_DIR][?manual_dir=DIR] (see docs/tfds.md)",
    )
    parser.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides with dotted keys"
    )
    args = parser.parse_args(argv)
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()

    from pipeline.train.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    from pipeline.train.fit import train

    try:
        metrics = train(cfg, args.data, args.out, verbose=2 if args.quiet else 1)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: metrics[k]["accuracy"] for k in ("validation", "test") if k in metrics}
    print(f"done: {args.out} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
