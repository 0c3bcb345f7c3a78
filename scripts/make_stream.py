#!/usr/bin/env python3
"""Build a long test recording with ground truth, for scoring transcription timelines.

  python scripts/make_stream.py --clips CLIPS --noise NOISE_DIR --minutes 30 --out stream.wav
  python scripts/make_stream.py --negative --clips CLIPS --noise NOISE_DIR [--speech DIR]
                                --minutes 120 --out negative.wav

CLIPS is a 12-class test folder (every clip) or a training-archive folder (--split picks
validation or test clips). Writes the 16-bit WAV and, beside it, STREAM_truth.csv with one
row per word (label, start_s, end_s of the speech, source clip). Score a transcription of
it with scripts/score_stream.py.

--negative leaves every command word out: the stream holds the split's other words (all
its _unknown_ clips) and, with --speech, pieces of the recordings in DIR (any audio, e.g.
read or conversational speech), over the background noise. Its truth lists only _unknown_
words, so every detection on it scores as a false accept.
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
    parser.add_argument("--clips", required=True, help="labelled clip folder")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--noise", help="folder of background noise recordings")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--word-gap",
        type=float,
        default=2.0,
        help="seconds of gap per word; each word lands at random within it",
    )
    parser.add_argument("--unknown-percent", type=float, default=30.0)
    parser.add_argument(
        "--negative", action="store_true", help="no command word: only _unknown_ words and --speech"
    )
    parser.add_argument(
        "--speech",
        help="folder of other speech recordings (any audio, any length) for _unknown_ places",
    )
    parser.add_argument(
        "--speech-percent",
        type=float,
        default=50.0,
        help="share of the _unknown_ places given to --speech (50)",
    )
    parser.add_argument("--background-volume", type=float, default=0.1)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="stream .wav to write")
    args = parser.parse_args(argv)
    if not 0 <= args.speech_percent <= 100 or not 0 <= args.unknown_percent <= 100:
        parser.error("--unknown-percent and --speech-percent must be between 0 and 100")

    import soundfile as sf

    from pipeline.data.folders import audio_files, labelled_clips
    from pipeline.runtime.errors import AudioError
    from pipeline.runtime.files import atomic_write
    from pipeline.runtime.labels import UNKNOWN
    from pipeline.runtime.streams import build_stream, write_truth

    try:
        clips = labelled_clips(args.clips, args.split, balance=not args.negative)
        if args.negative:
            clips = [(path, label) for path, label in clips if label == UNKNOWN]
        noise = audio_files(Path(args.noise)) if args.noise else []
        if args.noise and not noise:
            raise ValueError(f"{args.noise}: no noise recordings there")
        speech = audio_files(Path(args.speech)) if args.speech else []
        if args.speech and not speech:
            raise ValueError(f"{args.speech}: no speech recordings there")
        audio, truths = build_stream(
            clips,
            noise,
            args.minutes * 60,
            args.sample_rate,
            args.seed,
            args.word_gap,
            100.0 if args.negative else args.unknown_percent,
            args.background_volume,
            speech_files=speech,
            speech_percent=args.speech_percent,
        )
    except (OSError, ValueError, AudioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write(
        out, lambda tmp: sf.write(tmp, audio, args.sample_rate, subtype="PCM_16", format="WAV")
    )
    truth = out.with_name(out.stem + "_truth.csv")
    write_truth(truth, truths)
    print(
        f"{out}: {len(audio) / args.sample_rate / 60:.1f} min, {len(truths)} words "
        f"({sum(t.label == UNKNOWN for t in truths)} unknown); truth in {truth}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
