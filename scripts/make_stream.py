#!/usr/bin/env python3
"""Build a long test recording with ground truth, for scoring transcription timelines.

  python scripts/make_stream.py --clips CLIPS --noise NOISE_DIR --minutes 30 --out stream.wav

CLIPS is a 12-class test folder (every clip) or a training-archive folder (--split picks
validation or test clips). Writes the 16-bit WAV and, beside it, STREAM_truth.csv with one
row per word (label, start_s, end_s of the speech, source clip). Score a transcription of
it with scripts/score_stream.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", required=True, help="labelled clip folder")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--noise", help="folder of background noise recordings")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--word-gap", type=float, default=2.0,
                        help="seconds of gap per word; each word lands at random within it")
    parser.add_argument("--unknown-percent", type=float, default=30.0)
    parser.add_argument("--background-volume", type=float, default=0.1)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="stream .wav to write")
    args = parser.parse_args(argv)

    import soundfile as sf

    from pipeline.data.folders import audio_files
    from pipeline.runtime.files import atomic_write
    from pipeline.data.folders import labelled_clips
    from pipeline.runtime.streams import build_stream, write_truth

    try:
        clips = labelled_clips(args.clips, args.split)
        noise = audio_files(Path(args.noise)) if args.noise else []
        if args.noise and not noise:
            raise ValueError(f"{args.noise}: no noise recordings there")
        audio, truths = build_stream(clips, noise, args.minutes * 60, args.sample_rate,
                                     args.seed, args.word_gap, args.unknown_percent,
                                     args.background_volume)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write(out, lambda tmp: sf.write(tmp, audio, args.sample_rate, subtype="PCM_16",
                                           format="WAV"))
    truth = out.with_name(out.stem + "_truth.csv")
    write_truth(truth, truths)
    print(f"{out}: {len(audio) / args.sample_rate / 60:.1f} min, {len(truths)} words "
          f"({sum(t.label == '_unknown_' for t in truths)} unknown); truth in {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
