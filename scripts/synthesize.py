#!/usr/bin/env python3
"""Make synthetic speech-command clips with the offline TTS engines installed here.

  python scripts/synthesize.py --out SYNTH_DIR [--per-word 200] [--engines espeak-ng mbrola ...]
  python scripts/synthesize.py --out SYNTH_DIR --merge-with REAL_DIR --merged MERGED_DIR
  python scripts/synthesize.py --out SYNTH_DIR --confusables [--per-confusable-word 40]

Writes SYNTH_DIR/<word>/tts-<engine>-<voice>_<variant>_nohash_<n>.wav (16 kHz mono 16-bit,
at most 1 s, silence trimmed, random peak level) for the command words and for other words
that become _unknown_; --confusables adds sound-alikes of the commands (yet, town, lift, ...)
and their first halves (ye, dow, lef, ...) as further _unknown_ words, the hard negatives
a streaming detector meets. --merge-with builds MERGED_DIR: the real Speech Commands training
folder plus the synthetic clips, all as symlinks, to pass to train.py --data; synthetic
clips are never in the real list files, so they all land in the training split.
Engines: espeak-ng, mbrola (through espeak-ng), flite, festival, pico (docs/synthetic.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.synthetic.synthesize import (  # noqa: E402
    AUX_WORDS,
    COMMON_WORDS,
    ENGINES,
    NoEngineError,
    confusables,
    installed,
    merge,
    plan,
    run_jobs,
    usable_voices,
)
from pipeline.train.config import COMMANDS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the synthetic clips")
    parser.add_argument("--words", nargs="+", default=COMMANDS, help="command words")
    parser.add_argument(
        "--unknown-words",
        nargs="*",
        default=AUX_WORDS,
        help="other words, for _unknown_ (default: the Speech Commands auxiliary words)",
    )
    parser.add_argument(
        "--common-words",
        action="store_true",
        help=f"add {len(COMMON_WORDS)} common English words to --unknown-words",
    )
    parser.add_argument(
        "--confusables",
        action="store_true",
        help="add sound-alikes and first halves of the command words as "
        "_unknown_ words (docs/synthetic.md)",
    )
    parser.add_argument("--per-word", type=int, default=200, help="clips per command word")
    parser.add_argument("--per-unknown-word", type=int, default=40, help="clips per other word")
    parser.add_argument(
        "--per-confusable-word",
        type=int,
        default=40,
        help="clips per sound-alike or fragment (also when it is among the other words)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        default=list(ENGINES),
        metavar="ENGINE",
        help=f"engines to use if installed: {' '.join(ENGINES)}",
    )
    parser.add_argument(
        "--perturb",
        type=float,
        default=0.1,
        help="resampling speed perturbation, factor in [1 - x, 1 + x]",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="engine processes at once")
    parser.add_argument(
        "--merge-with",
        type=Path,
        metavar="REAL_DIR",
        help="real Speech Commands training folder to merge with",
    )
    parser.add_argument(
        "--merged",
        type=Path,
        metavar="MERGED_DIR",
        help="where --merge-with builds the combined folder",
    )
    parser.add_argument(
        "--merge-only",
        action="store_true",
        help="merge the clips already in --out; synthesize nothing",
    )
    args = parser.parse_args(argv)

    unknown_names = [e for e in args.engines if e not in ENGINES]
    if unknown_names:
        parser.error(
            f"unknown engine(s) {', '.join(unknown_names)}; choose from {', '.join(ENGINES)}"
        )
    if bool(args.merge_with) != bool(args.merged):
        parser.error("--merge-with and --merged go together")
    if args.merge_only and not args.merge_with:
        parser.error("--merge-only needs --merge-with and --merged")

    if not args.merge_only:
        try:
            present = installed(args.engines)
            for e in [ENGINES[n] for n in args.engines]:
                if e not in present:
                    print(
                        f"note: skipping {e.name}: `{e.binary}` not found "
                        f"(apt-get install {e.install})"
                    )
            voices = usable_voices(present, args.workers)
        except NoEngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for name, vs in voices.items():
            print(f"{name}: {len(vs)} voices")
        others = list(
            dict.fromkeys(args.unknown_words + (COMMON_WORDS if args.common_words else []))
        )
        alike = confusables(args.words) if args.confusables else []
        if args.confusables and not alike:
            print(
                "note: --confusables knows sound-alikes of the ten Speech Commands words "
                "only; none of --words is one"
            )
        counts = {
            **{w: args.per_word for w in args.words},
            **{w: args.per_unknown_word for w in others if w not in args.words},
            **{w: args.per_confusable_word for w in alike},
        }
        jobs = plan(counts, voices, args.seed, args.perturb)
        written, failed = run_jobs(jobs, args.out, args.workers)
        print(f"wrote {len(written)} clips to {args.out} ({len(failed)} failed)")
        if not written:
            return 1

    if args.merge_with:
        try:
            added = merge(args.merge_with, args.out, args.merged)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"merged {sum(added.values())} synthetic clips in {len(added)} word folders with "
            f"{args.merge_with} into {args.merged}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
