#!/usr/bin/env python3
"""Measure batch transcription against a naive loop, in one run on one machine.

  python scripts/benchmark_transcribe.py --model EXPORT_DIR/model_batch_float.tflite
      [--clips DIR ...] [--n 5000] [--hours 1] [--out runs/benchmarks/transcribe.md]

Clips: the first N one-second clips of the folders (default: the two development folders)
through scripts/transcribe.py's pipeline, against a loop that loads each file with librosa
and calls the Keras model on it alone (timed on --baseline-n files). Long audio: a stream
of --hours built from the clips and background noise, against the same naive loop over the
Keras streaming model (timed on its first minute). Files are read once beforehand so both
sides find them in the page cache. On a shared machine the load moves single runs by 2x
and more, so the clip workloads (pipeline, naive loop and, with --compare, an earlier
export) take turns --repeats times and medians are reported beside the best runs.
Writes a Markdown report and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data"  # the development data beside a checkout


def clip_paths(folders: list[str], n: int) -> list[str]:
    from pipeline.data.folders import audio_files

    paths = [
        str(p) for f in folders for p in audio_files(Path(f)) if "_background_noise_" not in p.parts
    ]
    return paths[:n]


def naive_clips(run: str, paths: list[str]) -> float:
    """Clips per second of librosa.load + one Keras call per file (predict_on_batch, the
    fastest of the one-call ways: model(x) and model.predict(x) are 20-100x slower)."""
    import librosa

    from pipeline.runtime.audio import fit_to_length
    from pipeline.train.runs import load_run

    model, fe, _ = load_run(run)
    model.predict_on_batch(
        fit_to_length(librosa.load(paths[0], sr=fe.sample_rate)[0], fe.clip_samples)[None]
    )
    start = time.perf_counter()
    for p in paths:
        audio, _ = librosa.load(p, sr=fe.sample_rate)
        model.predict_on_batch(fit_to_length(audio, fe.clip_samples)[None])
    return len(paths) / (time.perf_counter() - start)


def naive_stream(run: str, wav: str, seconds: float) -> float:
    """Times real time of librosa.load + the Keras streaming model called hop by hop."""
    import librosa
    import numpy as np

    from pipeline.train.runs import build_like, load_run

    _, fe, _ = load_run(run)
    model = build_like(run, "stream", 1)
    states = [np.zeros(t.shape, np.float32) for t in model.inputs[1:]]
    start = time.perf_counter()
    audio, _ = librosa.load(wav, sr=fe.sample_rate, duration=seconds)
    hop = fe.step_samples
    for k in range(len(audio) // hop):
        probs, *states = model.predict_on_batch([audio[None, k * hop : (k + 1) * hop], *states])
    return len(audio) / fe.sample_rate / (time.perf_counter() - start)


def ours(model_path: str, paths: list[str], threads: int, out: Path) -> dict:
    from pipeline.runtime.recognizer import open_model
    from pipeline.runtime.transcribe import Settings, run_transcription

    model = open_model(model_path, instances=threads)
    s = run_transcription(model, [(p, None) for p in paths], out, Settings(decode_workers=threads))
    return s.as_dict()


def stages(model_path: str, paths: list[str]) -> dict:
    """Decoding alone (one thread) and inference alone (one interpreter), per second."""
    import numpy as np

    from pipeline.runtime.audio import read_audio
    from pipeline.runtime.recognizer import open_model

    model = open_model(model_path)
    start = time.perf_counter()
    audio = [read_audio(p, model.front_end.sample_rate) for p in paths]
    decode = len(paths) / (time.perf_counter() - start)
    batch = np.zeros((len(audio), model.front_end.clip_samples), np.float32)
    for i, a in enumerate(audio):
        batch[i, : min(len(a), batch.shape[1])] = a[: batch.shape[1]]
    model.predict(batch[:64])
    start = time.perf_counter()
    model.predict(batch)
    return {
        "decode_clips_per_s_1_thread": round(decode, 1),
        "infer_clips_per_s_1_interpreter": round(len(audio) / (time.perf_counter() - start), 1),
    }


def long_stages(model_path: str, wav: str) -> dict:
    """Seconds spent on each stage of one long recording: decoding, the streaming model,
    the command detector."""
    import numpy as np

    from pipeline.runtime.audio import read_audio
    from pipeline.runtime.detector import CommandDetector
    from pipeline.runtime.recognizer import open_model

    model = open_model(model_path)
    start = time.perf_counter()
    audio = read_audio(wav, model.front_end.sample_rate)
    decode = time.perf_counter()
    probs = np.concatenate(list(model.timeline([audio], len(audio))))
    timeline = time.perf_counter()
    fe = model.front_end
    CommandDetector(model.labels, fe.step_samples / fe.sample_rate).process(probs)
    done = time.perf_counter()
    return {
        "decode_s": round(decode - start, 3),
        "stream_model_s": round(timeline - decode, 3),
        "detector_s": round(done - timeline, 3),
    }


def cli_wall(model_path: str, inputs: list[str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "transcribe.py"),
            "--model",
            model_path,
            "--out",
            str(out),
            *inputs,
        ],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="exported .tflite clip model")
    parser.add_argument(
        "--keras",
        help="run directory for the naive loop (default: the run named in the export's manifest)",
    )
    parser.add_argument(
        "--clips",
        nargs="+",
        default=[str(DEV / "speech_commands_dev"), str(DEV / "speech_commands_test_dev")],
    )
    parser.add_argument("--noise", default=str(DEV / "speech_commands_dev/_background_noise_"))
    parser.add_argument("--n", type=int, default=5000, help="clips to transcribe (5000)")
    parser.add_argument(
        "--baseline-n", type=int, default=300, help="clips timed for the naive loop (300)"
    )
    parser.add_argument("--hours", type=float, default=1.0, help="long recording length (1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of each clip workload, taking turns (5)"
    )
    parser.add_argument(
        "--compare", help="an earlier export's clip model, timed the same way in the same run"
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "runs" / "benchmarks" / "transcribe.md"),
        help="results page (default runs/benchmarks/transcribe.md)",
    )
    args = parser.parse_args(argv)

    from pipeline.data.folders import audio_files, labelled_clips
    from pipeline.runtime.files import atomic_write_text
    from pipeline.runtime.streams import build_stream

    manifest = json.loads((Path(args.model).parent / "manifest.json").read_text())
    keras_run = args.keras or manifest["run"]
    paths = clip_paths(args.clips, args.n)
    for p in paths:
        Path(p).read_bytes()
    load_before = os.getloadavg()
    result: dict = {
        "model": args.model,
        "keras_run": keras_run,
        "clips": len(paths),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = [args.model] + ([args.compare] if args.compare else [])
        for m in models:
            ours(m, paths[:256], args.threads, tmp / "warm.csv")
        runs: dict[str, list[dict]] = {m: [] for m in models}
        naive = []
        for _ in range(args.repeats):
            for m in models:
                runs[m].append(ours(m, paths, args.threads, tmp / "clips.csv"))
            naive.append(naive_clips(keras_run, paths[: args.baseline_n]))
        result["ours_clips"] = max(runs[args.model], key=lambda r: r["files_per_s"])
        result["ours_clips_per_s_runs"] = [r["files_per_s"] for r in runs[args.model]]
        result["naive_clips_per_s_runs"] = [round(r, 1) for r in naive]
        if args.compare:
            result["compare_clips_per_s_runs"] = [r["files_per_s"] for r in runs[args.compare]]
        listing = tmp / "clips.txt"
        listing.write_text("\n".join(paths) + "\n")
        result["cli_clips_wall_s"] = round(
            cli_wall(args.model, [f"@{listing}"], tmp / "cli.csv"), 3
        )
        result["stages"] = stages(args.model, paths[:1024])

        import soundfile as sf

        clips = [
            c
            for split in ("train", "validation", "test")
            for folder in args.clips
            for c in labelled_clips(folder, split)
        ]
        audio, truths = build_stream(clips, audio_files(Path(args.noise)), args.hours * 3600)
        wav = tmp / "long.wav"
        sf.write(wav, audio, 16000, subtype="PCM_16")
        del audio
        wav.read_bytes()
        result["ours_long"] = ours(args.model, [str(wav)], args.threads, tmp / "long.csv")
        result["long_stages"] = long_stages(args.model, str(wav))
        if args.compare:
            result["compare_long"] = ours(
                args.compare, [str(wav)], args.threads, tmp / "long_compare.csv"
            )
        result["naive_long_x_real_time"] = round(naive_stream(keras_run, str(wav), 60.0), 1)
    result["load_average"] = [round(x, 2) for x in load_before + os.getloadavg()]

    c, lg, ls = result["ours_clips"], result["ours_long"], result["long_stages"]
    lanes = Path(args.model).with_name("stream_batch_float.tflite")
    stream_desc = (
        f"`{lanes.name}` ({manifest['files'][lanes.name]['batch']} segments side "
        "by side, one invoke per hop for all)"
        if lanes.exists()
        else "`stream_float.tflite` (one invoke per hop)"
    )
    cli_rate = len(paths) / result["cli_clips_wall_s"]
    ours_median = median(result["ours_clips_per_s_runs"])
    naive_median = median(result["naive_clips_per_s_runs"])
    result["clips_per_s_median"] = round(ours_median, 1)
    result["naive_clips_per_s"] = round(naive_median, 1)
    result["clips_ratio"] = round(ours_median / naive_median, 1)
    result["long_ratio"] = round(lg["x_real_time"] / result["naive_long_x_real_time"], 1)
    compare = ""
    if args.compare:
        old_median = median(result["compare_clips_per_s_runs"])
        old_long = result["compare_long"]
        compare = f"""
Against `{args.compare}` in the same run (same inputs, the runs taking turns):

| workload | this export | earlier export | speed-up |
| --- | --- | --- | --- |
| {len(paths)} clips, median of {args.repeats} | {ours_median:.0f} clips/s | {old_median:.0f} clips/s | {ours_median / old_median:.2f}x |
| {args.hours:g} h recording | {lg["x_real_time"]:.0f}x real time | {old_long["x_real_time"]:.0f}x real time | {lg["x_real_time"] / old_long["x_real_time"]:.2f}x |
"""
    report = f"""# Batch transcription benchmark

Written by `python scripts/benchmark_transcribe.py --model {args.model}{" --compare " + args.compare if args.compare else ""}` (numbers from one
run on one machine: {result["cpus"]} CPUs, {result["machine"]}, {args.threads} threads; load
average before/after {result["load_average"][:3]} / {result["load_average"][3:]}: the
machine is shared, so absolute numbers move with the load, the ratios much less).

| workload | transcribe.py pipeline | naive loop | ratio |
| --- | --- | --- | --- |
| {len(paths)} one-second clips, median of {args.repeats} | {ours_median:.0f} clips/s | {naive_median:.0f} clips/s | {result["clips_ratio"]}x |
| same, best run | {c["files_per_s"]:.0f} clips/s ({c["wall_s"]:.2f} s) | {max(result["naive_clips_per_s_runs"]):.0f} clips/s | {c["files_per_s"] / max(result["naive_clips_per_s_runs"]):.1f}x |
| same, whole CLI process (start-up, imports, model load) | {cli_rate:.0f} clips/s ({result["cli_clips_wall_s"]:.2f} s) | | |
| {args.hours:g} h recording | {lg["x_real_time"]:.0f}x real time ({lg["wall_s"]:.2f} s, {lg["detections"]} detections) | {result["naive_long_x_real_time"]:.0f}x real time | {result["long_ratio"]}x |

Where the clip time goes: decoding alone {result["stages"]["decode_clips_per_s_1_thread"]:.0f}
clips/s on one thread, inference alone {result["stages"]["infer_clips_per_s_1_interpreter"]:.0f}
clips/s on one interpreter. The recording: decoding {ls["decode_s"]:.2f} s, streaming model
{ls["stream_model_s"]:.2f} s, command detector {ls["detector_s"]:.2f} s (measured separately).

Naive loop: `librosa.load` then one Keras `predict_on_batch` call per clip (timed on
{args.baseline_n} clips);
for the recording, `librosa.load` then the Keras streaming model called hop by hop (timed
on its first minute). Pipeline: `{Path(args.model).name}` ({manifest["files"][Path(args.model).name]["batch"]} clips per invoke), one
interpreter per thread, decoding threads ahead of inference; the recording streams through
{stream_desc}.
{compare}
```json
{json.dumps(result, indent=1)}
```
"""
    atomic_write_text(Path(args.out), report)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
