#!/usr/bin/env python3
"""Hard-negative mining: fine-tune a run on the windows where it fires on audio without commands.

  python scripts/mine_negatives.py --run RUN_DIR --data PATH [--config CONFIG]
      --negatives DIR|FILE ... --held-out NEGATIVE.wav --out DIR
      [--rounds 3] [--epochs 10] [--threshold T] [--shifted] [--generate MINUTES] [key=value ...]

Each round runs the current run's streaming model (stream_float.tflite, exported into
DIR/exports/) over every --negatives recording (folders are searched for audio) with the
command detector, as transcribe.py runs long audio, cuts the second of audio ending at each
detection (every one is a false trigger: the recordings hold no command) into
DIR/mined/round<k>/, and fine-tunes DIR/round<k> from the current run
(train.init_from) with all windows mined so far as extra _unknown_ training examples
(data.negatives) for --epochs epochs. --data, --config and the overrides are the run's
training settings. Rounds stop when the false accepts per hour on --held-out (a negative
stream, e.g. make_stream.py --negative on the validation split) stop falling; it must be
none of the mining recordings. One line per round, then DIR/mining.json with every round
and the final run (the one with the fewest held-out false accepts per hour).

--threshold is the detector threshold for mining and measuring (default: the operating
point in RUN_DIR/export/manifest.json, else the detector's default); --shifted also keeps
the window ending 0.25 s before each detection; --generate MINUTES adds a negative stream
built from the training split's other words over its background noise. Starting again
with the same DIR resumes: finished rounds are not redone.
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
    parser.add_argument("--run", required=True, help="the trained run directory to start from")
    parser.add_argument("--data", required=True, help="its training data")
    parser.add_argument("--config", help="its YAML config (default: built-in defaults)")
    parser.add_argument(
        "--negatives",
        nargs="+",
        default=[],
        metavar="DIR|FILE",
        help="long recordings that hold no command, or folders of them",
    )
    parser.add_argument(
        "--held-out", required=True, help="negative stream false accepts per hour are measured on"
    )
    parser.add_argument("--out", required=True, help="mining folder (resumed if it exists)")
    parser.add_argument("--rounds", type=int, default=3, help="at most this many rounds (3)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tune epochs per round (10)")
    parser.add_argument("--threshold", type=float, help="detector threshold (see above)")
    parser.add_argument(
        "--shifted", action="store_true", help="also the window ending 0.25 s before a trigger"
    )
    parser.add_argument(
        "--generate",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="also mine a negative stream of the training split's other words",
    )
    parser.add_argument("--quiet", action="store_true", help="no training output")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides with dotted keys"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1 or args.generate < 0:
        parser.error("need --rounds >= 1, --epochs >= 1 and --generate >= 0")
    if not args.negatives and not args.generate:
        parser.error("nothing to mine: give --negatives, --generate or both")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")

    from pipeline.export.convert import ExportError
    from pipeline.runtime.errors import ModelError
    from pipeline.train.config import ConfigError
    from pipeline.train.mining import MiningError, Plan, check_held_out

    plan = Plan(
        run=Path(args.run),
        data=args.data,
        config=args.config,
        overrides=args.overrides,
        sources=[Path(s) for s in args.negatives],
        held_out=Path(args.held_out),
        out=Path(args.out),
        rounds=args.rounds,
        epochs=args.epochs,
        threshold=args.threshold,
        shifted=args.shifted,
        generate_minutes=args.generate,
    )
    try:
        check_held_out(plan.held_out, plan.sources)  # before TensorFlow is imported
        from pipeline.tf_env import import_tensorflow

        import_tensorflow()
        from pipeline.train.mining import mine

        mine(plan, verbose=0 if args.quiet else 2)
    except (MiningError, ConfigError, ExportError, ModelError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
