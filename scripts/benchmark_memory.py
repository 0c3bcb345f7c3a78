#!/usr/bin/env python3
"""Peak memory of transcribing long recordings: does it grow with the length?

  python scripts/benchmark_memory.py --model EXPORT_DIR/model_batch_float.tflite
      [--hours 1 3] [--before CHECKOUT] [--plot] [--threshold T] [--workdir DIR]
      [--out runs/benchmarks/memory.md]

Writes a 16 kHz 16-bit mono wav of each length (sparse demo words over quiet noise, written
block by block) into --workdir (default: a temporary folder, removed afterwards), then runs
scripts/transcribe.py on each in a fresh process and reads that process's peak resident
set size from wait4 (the kernel's ru_maxrss of exactly that child) and its wall time (which
includes starting the interpreter).
--before runs an earlier checkout's scripts/transcribe.py the same way, with the same
interpreter and PYTHONPATH set to it, and says whether both wrote the same rows. Writes a
Markdown report with the exact commands and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "speech_commands_sample"


def write_recording(
    path: Path, hours: float, sample_rate: int = 16000, word_every_s: float = 10.0, seed: int = 0
) -> None:
    """Quiet noise with a demo word every word_every_s, written a minute at a time so that
    making a day-long file costs a minute of memory."""
    import numpy as np
    import soundfile as sf

    from pipeline.runtime.audio import load_audio

    files = sorted(p for p in DEMO.glob("*/*.wav") if p.parent.name != "_background_noise_")
    words = [load_audio(p, sample_rate) for p in files]
    rng = np.random.default_rng(seed)
    minute, total = 60 * sample_rate, round(hours * 3600 * sample_rate)
    stride = round(word_every_s * sample_rate)
    with sf.SoundFile(path, "w", sample_rate, 1, subtype="PCM_16") as f:
        for start in range(0, total, minute):
            block = (rng.standard_normal(min(minute, total - start)) * 0.003).astype(np.float32)
            for at in range(-(-start // stride) * stride, start + len(block), stride):
                clip = words[rng.integers(len(words))][: start + len(block) - at]
                block[at - start : at - start + len(clip)] += clip
            f.write(np.clip(block, -1, 1))


# Runs a command and prints its exit status and peak RSS (KB). The child's ru_maxrss counts
# the memory of the process that spawned it, so it is spawned from this small interpreter
# rather than from the benchmark, which may have grown larger than what it measures.
MEASURE = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
    "_, s, u = os.wait4(p.pid, 0); print(os.waitstatus_to_exitcode(s), u.ru_maxrss)"
)


def measure(command: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Peak RSS (MB) and wall seconds of one process."""
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], env=env, cwd=cwd, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    status, peak_kb = map(int, r.stdout.split()[-2:]) if r.returncode == 0 else (-1, 0)
    if status != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({status}): {r.stderr.strip()[-500:]}")
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 2)}


def warm(path: Path) -> None:
    """Read the file once so every run finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="exported .tflite clip model or folder")
    parser.add_argument(
        "--hours", type=float, nargs="+", default=[1.0, 3.0], help="recording lengths (1 3)"
    )
    parser.add_argument(
        "--before",
        help="an earlier checkout to measure the same way "
        "(e.g. a git worktree of the commit before the change)",
    )
    parser.add_argument("--plot", action="store_true", help="transcribe with --plot too")
    parser.add_argument(
        "--threshold",
        type=float,
        help="passed to scripts/transcribe.py (a low one gives a weak model detections to compare)",
    )
    parser.add_argument(
        "--workdir",
        help="folder for the recordings and outputs "
        "(default: a temporary folder, removed afterwards)",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "runs" / "benchmarks" / "memory.md"),
        help="results page (default runs/benchmarks/memory.md)",
    )
    args = parser.parse_args(argv)

    from pipeline.runtime.files import atomic_write_text
    from pipeline.runtime.rows import read_rows

    model = str(Path(args.model).resolve())
    versions = {"after": ROOT} | ({"before": Path(args.before).resolve()} if args.before else {})
    result: dict = {
        "model": args.model,
        "python": sys.executable,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        commands = {}
        for hours in args.hours:
            wav = work / f"recording_{hours:g}h.wav"
            write_recording(wav, hours)
            warm(wav)
            rows = {}
            for name, checkout in versions.items():
                out = work / f"{name}_{hours:g}h.csv"
                command = [
                    sys.executable,
                    str(checkout / "scripts" / "transcribe.py"),
                    "--model",
                    model,
                    str(wav),
                    "--out",
                    str(out),
                ]
                if args.plot:
                    command += ["--plot", str(work / f"plots_{name}")]
                if args.threshold is not None:
                    command += ["--threshold", str(args.threshold)]
                env = {**os.environ, "PYTHONPATH": str(checkout)}
                commands[name] = f"PYTHONPATH={checkout} " + shlex.join(command)
                run = {
                    "version": name,
                    "hours": hours,
                    "file_mb": round(wav.stat().st_size / 2**20, 1),
                    **measure(command, env, checkout),
                }
                rows[name] = read_rows(out)
                run["detections"] = sum(r["kind"] == "detection" for r in rows[name])
                result["runs"].append(run)
                print(json.dumps(run), file=sys.stderr)
            if "before" in rows:
                result.setdefault("same_rows", {})[f"{hours:g}h"] = rows["before"] == rows["after"]
            wav.unlink()
        result["commands"] = commands

    lines = [
        "# Peak memory of transcribing long recordings",
        "",
        f"`python scripts/benchmark_memory.py {shlex.join(argv or sys.argv[1:])}`, "
        f"{result['cpus']} CPUs ({result['machine']}). Each run is one "
        "`scripts/transcribe.py` process on a 16 kHz 16-bit mono wav; peak RSS is that "
        "process's `ru_maxrss`.",
        "",
        "| version | hours | file MB | peak RSS MB | wall s | detections |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['version']} | {r['hours']:g} | {r['file_mb']} | {r['peak_rss_mb']} | "
        f"{r['wall_s']} | {r['detections']} |"
        for r in result["runs"]
    ]
    for name in versions:
        mine = sorted(
            (r["hours"], r["peak_rss_mb"]) for r in result["runs"] if r["version"] == name
        )
        if len(mine) > 1:
            growth = (mine[-1][1] - mine[0][1]) / (mine[-1][0] - mine[0][0])
            result.setdefault("growth_mb_per_hour", {})[name] = round(growth, 1)
            lines.append(f"\n{name}: {growth:+.0f} MB of peak RSS per extra hour of audio.")
    if "same_rows" in result:
        lines.append(
            "\nSame rows before and after: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in result["same_rows"].items())
            + "."
        )
    lines += ["", "Commands (the recording's path is a temporary file):", ""]
    lines += [f"- {name}: `{cmd}`" for name, cmd in result["commands"].items()]
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
