#!/usr/bin/env python3
"""Listen for commands live: a streaming model run on audio as it arrives.

  arecord -t raw -f S16_LE -r 16000 -c 1 | python scripts/listen.py - [--model MODEL]
  sox speech.flac -t wav - | python scripts/listen.py -
  python scripts/listen.py [--device DEV]          # the microphone (needs sounddevice)

INPUT - reads 16-bit little-endian PCM from standard input: raw mono samples at --rate
(default: the model's, 16000), or a WAV stream, whose header gives the rate and channels.
Without INPUT the microphone is read through sounddevice (pip install 'kws-rnn[mic]').
Audio at another rate is resampled as it streams.

MODEL is a streaming .tflite file or an export folder (stream_int8.tflite, else
stream_float.tflite); default: the bundled pretrained model. Each detection is printed and
flushed as it happens: stream time, label, score, latency (from the arrival of the audio
that completed its hop to the print) and the model and detector time per hop; --jsonl
prints one JSON object per detection instead. The detector runs at the operating point in
the export's manifest.json (score_stream.py --sweep --write-manifest), else at its
defaults; --threshold, --window and --suppression each override the one value they name.
At the end of the input (or Ctrl-C) a summary line, which ends with that operating point
and where it came from, goes to standard error. Exit status: 0, or 2 for a usage, model
or input error (one line on standard error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "input",
        nargs="?",
        metavar="INPUT",
        help="- for PCM on standard input; omit for the microphone",
    )
    parser.add_argument(
        "--model",
        help="streaming .tflite file or export folder (default: the bundled pretrained model)",
    )
    parser.add_argument(
        "--rate", type=int, help="sample rate of raw input in Hz (default: the model's)"
    )
    parser.add_argument("--device", help="sounddevice input device (name or number)")
    parser.add_argument(
        "--threshold",
        type=float,
        help="averaged probability a detection needs (default: the manifest's operating "
        "point, else the detector's)",
    )
    parser.add_argument(
        "--window",
        type=float,
        dest="average_window_s",
        help="moving-average window in seconds (default: the manifest's, else the detector's)",
    )
    parser.add_argument(
        "--suppression",
        type=float,
        dest="suppression_s",
        help="seconds after a detection during which no other is reported "
        "(default: the manifest's, else the detector's)",
    )
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per detection")
    args = parser.parse_args(argv)
    if args.input not in (None, "-"):
        parser.error(
            "INPUT must be - (standard input), or omitted for the microphone; "
            "transcribe.py reads audio files"
        )
    if args.rate is not None and args.rate < 1:
        parser.error("--rate must be positive")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be between 0 and 1")

    from pipeline.runtime.detector import detector_for
    from pipeline.runtime.errors import AudioError, ModelError, one_line
    from pipeline.runtime.listen import PcmPipe, listen, listen_model, microphone_blocks

    try:
        model = listen_model(args.model)
        fe = model.front_end
        detector, operating_point = detector_for(
            model.labels,
            fe.step_samples / fe.sample_rate,
            model.manifest,
            threshold=args.threshold,
            average_window_s=args.average_window_s,
            suppression_s=args.suppression_s,
        )
    except (OSError, ValueError, ModelError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    rate = args.rate or fe.sample_rate

    def report(heard) -> None:
        print(json.dumps(heard.as_dict()) if args.jsonl else heard.line(), flush=True)

    pipe, dropped = None, []
    try:
        if args.input == "-":
            pipe = PcmPipe(sys.stdin.buffer.fileno(), rate)
            pipe.read_header()
            summary = listen(pipe.blocks(), pipe.rate, model, detector, report)
        else:
            blocks = microphone_blocks(
                rate, _device(args.device), model.hop_samples, lambda: dropped.append(1)
            )
            summary = listen(blocks, rate, model, detector, report)
    except AudioError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # whoever read the detections went away: nothing left to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    summary.notes.insert(0, operating_point)
    if pipe is not None and pipe.trailing:
        summary.notes.append(f"ignored {pipe.trailing} trailing byte(s), less than a sample")
    if dropped:
        summary.notes.append(f"the device dropped audio {len(dropped)} time(s)")
    print(summary.line(), file=sys.stderr)
    return 0


def _device(name: str | None) -> str | int | None:
    return int(name) if name is not None and name.isdigit() else name


if __name__ == "__main__":
    sys.exit(main())
