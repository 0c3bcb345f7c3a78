"""Long-audio test streams with ground truth, and the scorer for detections on them.

The stream follows TensorFlow's generate_streaming_test_wav: background noise laid end to
end with cross-fades, and one labelled one-second clip per (clip + gap) stride at a random
offset inside the gap. Unlike it, the ground truth records where the speech lies inside
each clip (energy above -20 dB of the clip's peak), so a detection is matched on the word
itself rather than on the start of a mostly silent second. A negative stream (every word
_unknown_, optionally with pieces of other speech) measures false accepts alone.

A threshold sweep runs the detector many times over one set of per-hop probabilities, so
the trade-off between matched commands and false accepts per hour (a DET curve) costs one
pass of the model. The threshold it picks, with the rest of the detector's settings, can
be recorded in the export's manifest as its operating point, which the runtime's tools
then use by default.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.runtime.audio import fit_to_length, load_audio, resample, speech_span, word_span
from pipeline.runtime.detector import BLOCK, CommandDetector, Detection
from pipeline.runtime.errors import AudioError
from pipeline.runtime.files import atomic_write, atomic_write_text
from pipeline.runtime.labels import IGNORED, SILENCE, UNKNOWN
from pipeline.runtime.rows import read_rows

# Thresholds a sweep tries by default: finer towards 1, where a good model's false
# accepts fall fastest.
DEFAULT_THRESHOLDS = tuple(
    round(float(t), 3)
    for t in np.concatenate(
        [np.arange(0.30, 0.895, 0.02), np.arange(0.90, 0.985, 0.01), [0.99, 0.995, 0.999]]
    )
)


@dataclass(frozen=True)
class Truth:
    label: str
    start_s: float
    end_s: float
    source: str = ""

    @property
    def time_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(frozen=True)
class Found:
    """A detection as the scorer needs it (a transcription row or a runtime Detection)."""

    label: str
    start_s: float
    end_s: float

    @property
    def time_s(self) -> float:
        return (self.start_s + self.end_s) / 2


def _crossfade_mix(
    track: np.ndarray, offset: int, sample: np.ndarray, volume: float, ramp: int
) -> None:
    n = min(len(sample), len(track) - offset)
    if n <= 0:
        return
    env = np.ones(n, np.float32)
    r = min(ramp, n // 2)
    if r:
        env[:r] = np.arange(r) / r
        env[n - r :] = np.arange(r, 0, -1) / r
    track[offset : offset + n] += sample[:n] * env * volume


def build_stream(
    clips: list[tuple[str, str]],
    noise_files: list[Path],
    seconds: float,
    sample_rate: int = 16000,
    seed: int = 0,
    word_gap_s: float = 2.0,
    unknown_percent: float = 30.0,
    background_volume: float = 0.1,
    clip_seconds: float = 1.0,
    speech_files: Sequence[Path] = (),
    speech_percent: float = 50.0,
) -> tuple[np.ndarray, list[Truth]]:
    """A test stream from (path, label) clips and background noise files.

    _silence_ clips are left out; _unknown_ words are mixed in at unknown_percent and
    recorded as such (a detector should stay quiet on them). unknown_percent=100 makes a
    negative stream, which needs no command clips. speech_files (recordings of other
    speech, any length) fill speech_percent of the _unknown_ places (all of them when
    there are no _unknown_ clips) with a piece of speech of up to one (clip + gap) stride,
    recorded as _unknown_ with the file and offset as its source."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for path, label in sorted(clips):
        if label != SILENCE:
            by_label.setdefault(label, []).append(path)
    commands = [l for l in by_label if l not in IGNORED]
    speech = _readable(speech_files)
    if speech_files and not speech:
        raise ValueError("none of the other-speech files can be read")
    negative = unknown_percent >= 100
    if not commands and not negative:
        raise ValueError("no command clips to build a stream from")
    if negative and UNKNOWN not in by_label and not speech:
        raise ValueError("no _unknown_ clips or other speech to build a negative stream from")
    clip_n = round(clip_seconds * sample_rate)
    total = round(seconds * sample_rate)
    track = np.zeros(total, np.float32)

    noise = []
    for f in noise_files:
        try:
            a = load_audio(f, sample_rate)
        except AudioError:
            continue
        if len(a) > clip_n + sample_rate // 2:
            noise.append(a)
    seg, ramp = clip_n + sample_rate // 2, sample_rate // 4
    for offset in range(0, total, clip_n) if noise else ():
        src = noise[rng.randrange(len(noise))]
        start = rng.randrange(len(src) - seg)
        _crossfade_mix(
            track, offset, src[start : start + seg], rng.uniform(0, background_volume), ramp
        )

    truths: list[Truth] = []
    gap = round(word_gap_s * sample_rate)
    stride = clip_n + gap
    for i in range(total // stride):
        offset = i * stride + rng.randrange(max(1, gap))
        unknown = (UNKNOWN in by_label or bool(speech)) and rng.uniform(0, 100) < unknown_percent
        if unknown and speech and (UNKNOWN not in by_label or rng.uniform(0, 100) < speech_percent):
            piece, source = _speech_piece(*rng.choice(speech), stride, sample_rate, rng)
            offset = i * stride + rng.randrange(stride - len(piece) + 1)
            label = UNKNOWN
        else:
            label = UNKNOWN if unknown else rng.choice(commands)
            source = rng.choice(by_label[label])
            piece = fit_to_length(load_audio(source, sample_rate), clip_n)
        _crossfade_mix(track, offset, piece, 1.0, 500)
        s, e = speech_span(piece, sample_rate)
        t0 = offset / sample_rate
        truths.append(Truth(label, round(t0 + s, 3), round(t0 + e, 3), str(source)))
    np.clip(track, -1.0, 1.0, out=track)
    return track, truths


def _readable(files: Sequence[Path]) -> list[tuple[Path, int]]:
    """(path, frames) of the files soundfile can open, in a fixed order."""
    out = []
    for f in sorted(files):
        try:
            frames = sf.info(str(f)).frames
        except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
            continue
        if frames > 0:
            out.append((Path(f), frames))
    return out


def _speech_piece(
    path: Path, frames: int, longest: int, sample_rate: int, rng: random.Random
) -> tuple[np.ndarray, str]:
    """A random stretch of one to longest samples (at sample_rate) of a speech file, read
    without decoding the rest, and its source as 'path@start_s'."""
    with sf.SoundFile(str(path)) as f:
        want = math.ceil(rng.uniform(sample_rate, longest) * f.samplerate / sample_rate)
        start = rng.randrange(max(1, frames - want + 1))
        f.seek(start)
        data = f.read(min(want, frames), dtype="float32", always_2d=True)
        rate = f.samplerate
    piece = resample(data.mean(axis=1), rate, sample_rate)[:longest]
    return piece, f"{path}@{start / rate:.2f}"


def write_truth(path: str | Path, truths: list[Truth]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "start_s", "end_s", "source"])
            w.writerows((t.label, t.start_s, t.end_s, t.source) for t in truths)

    atomic_write(Path(path), write)


def read_truth(path: str | Path) -> list[Truth]:
    with open(path, newline="") as f:
        return [
            Truth(r["label"], float(r["start_s"]), float(r["end_s"]), r.get("source", ""))
            for r in csv.DictReader(f)
        ]


def read_detections(path: str | Path, audio_path: str | None = None) -> list[Found]:
    """Detection rows of a transcription output (CSV or JSONL), optionally of one input."""
    return [
        Found(r["label"], float(r["start_s"]), float(r["end_s"]))
        for r in read_rows(Path(path))
        if r.get("kind") == "detection" and (audio_path is None or r["path"] == audio_path)
    ]


def score(
    truths: list[Truth],
    found: list[Found],
    duration_s: float,
    tolerance_s: float = 0.75,
    ignore: tuple[str, ...] = IGNORED,
) -> dict:
    """Match detections to spoken commands whose centres lie within tolerance_s.

    Same-label pairs are matched first (nearest first), then the remaining detections
    take the remaining commands as wrong labels. A detection left over, including one on
    an _unknown_ word, is a false accept. Percentages are of the spoken commands."""
    words = [t for t in truths if t.label not in ignore]
    pairs = sorted(
        (
            (abs(t.time_s - d.time_s), ti, di)
            for ti, t in enumerate(words)
            for di, d in enumerate(found)
            if abs(t.time_s - d.time_s) <= tolerance_s
        ),
        key=lambda p: p[0],
    )
    used_t: dict[int, str] = {}
    used_d: set[int] = set()
    for same_label in (True, False):
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            if (words[ti].label == found[di].label) == same_label:
                used_t[ti] = "correct" if same_label else "wrong"
                used_d.add(di)
    n = len(words)
    correct = sum(v == "correct" for v in used_t.values())
    wrong = len(used_t) - correct
    false_accepts = len(found) - len(used_d)
    hours = duration_s / 3600

    def pct(k: int) -> float:
        return round(100 * k / n, 2) if n else 0.0

    return {
        "commands": n,
        "detections": len(found),
        "correct": correct,
        "wrong": wrong,
        "missed": n - len(used_t),
        "false_accepts": false_accepts,
        "matched_pct": pct(correct),
        "wrong_pct": pct(wrong),
        "missed_pct": pct(n - len(used_t)),
        "false_accepts_per_hour": round(false_accepts / hours, 2) if hours else 0.0,
        "tolerance_s": tolerance_s,
        "duration_s": round(duration_s, 3),
    }


def format_score(s: dict) -> str:
    return (
        f"{s['commands']} commands, {s['detections']} detections: "
        f"{s['matched_pct']:.1f}% matched, {s['wrong_pct']:.1f}% wrong label, "
        f"{s['missed_pct']:.1f}% missed, {s['false_accepts_per_hour']:.1f} false accepts/hour "
        f"(tolerance {s['tolerance_s'] * 1000:.0f} ms)"
    )


def found_at(
    audio: np.ndarray, sample_rate: int, detections: Iterable[Detection], window_s: float
) -> list[Found]:
    """Detections placed as transcription places them: the loud part (within 20 dB of the
    peak) of the model window that ended at each one, so a sweep scores what a
    transcription at the same threshold would."""
    found = []
    for d in detections:
        start, end = word_span(lambda b, e: audio[b:e], len(audio), d.time_s, sample_rate, window_s)
        found.append(Found(d.label, start, end))
    return found


def sweep(
    probs: np.ndarray,
    labels: list[str],
    hop_s: float,
    audio: np.ndarray,
    sample_rate: int,
    truths: list[Truth],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    window_s: float = 1.0,
    tolerance_s: float = 0.75,
    **detector_options,
) -> list[dict]:
    """score() at each threshold of the detector run over one stream's per-hop
    probabilities [n_hops, n_labels]; window_s is the model's clip length. Each row is
    score()'s dict with the threshold first."""
    duration = len(audio) / sample_rate
    rows = []
    for t in thresholds:
        detector = CommandDetector(labels, hop_s, threshold=t, **detector_options)
        found = found_at(audio, sample_rate, detector.process(probs), window_s)
        rows.append({"threshold": t, **score(truths, found, duration, tolerance_s)})
    return rows


def pick_threshold(rows: list[dict], target_fa: float) -> dict | None:
    """The sweep row with the most matched commands at no more than target_fa false
    accepts per hour (the lowest threshold among equals); None when none is that quiet."""
    quiet = [r for r in rows if r["false_accepts_per_hour"] <= target_fa]
    return max(quiet, key=lambda r: (r["matched_pct"], -r["threshold"]), default=None)


def operating_point(detector: CommandDetector, row: dict, chosen_on: str, target_fa: float) -> dict:
    """The manifest's detector block for a detector picked from a sweep row: its settings
    and what they gave on the stream they were chosen on (matched: % of its commands, None
    on a negative stream)."""
    return {
        **detector.operating_point,
        "chosen_on": chosen_on,
        "target_fa_per_hour": target_fa,
        "fa_per_hour": row["false_accepts_per_hour"],
        "matched": row["matched_pct"] if row["commands"] else None,
    }


def write_operating_point(manifest_path: Path, block: dict) -> None:
    """Set the detector block of an export's manifest, keeping everything else; the file
    is replaced atomically, so a tool opening the export meanwhile reads the old manifest
    or the new one."""
    manifest = json.loads(Path(manifest_path).read_text())
    manifest[BLOCK] = block
    atomic_write_text(Path(manifest_path), json.dumps(manifest, indent=2) + "\n")


def format_pick(rows: list[dict], target_fa: float) -> str:
    """One line: the picked threshold and what it gives, or that none is quiet enough,
    and whether the stream is long enough to tell target_fa from none at all."""
    best = pick_threshold(rows, target_fa)
    if best is None:
        line = (
            f"no threshold up to {max(r['threshold'] for r in rows):g} keeps false "
            f"accepts at or below {target_fa:g}/hour"
        )
    else:
        recall = f", {best['matched_pct']:.1f}% of commands matched" if best["commands"] else ""
        line = (
            f"threshold {best['threshold']:g} for at most {target_fa:g} false accepts/hour: "
            f"{best['false_accepts_per_hour']:.1f}/hour{recall}"
        )
    one = 3600 / rows[0]["duration_s"]
    if one > target_fa:
        line += (
            f" (one false accept in this {rows[0]['duration_s'] / 60:.0f}-minute stream is "
            f"{one:.1f}/hour: {target_fa:g}/hour needs at least "
            f"{1 / target_fa:.1f} hours of audio to be seen)"
        )
    return line


def sweep_markdown(rows: list[dict], target_fa: float) -> str:
    """The sweep as a Markdown table (only false accepts on a negative stream) and the
    threshold format_pick names."""
    negative = not rows[0]["commands"]
    if negative:
        lines = ["| threshold | detections | false accepts / hour |", "| ---: | ---: | ---: |"]
        lines += [
            f"| {r['threshold']:g} | {r['detections']} | {r['false_accepts_per_hour']:.1f} |"
            for r in rows
        ]
    else:
        lines = [
            "| threshold | matched % | wrong label % | missed % | false accepts / hour |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['threshold']:g} | {r['matched_pct']:.1f} | {r['wrong_pct']:.1f} | "
            f"{r['missed_pct']:.1f} | {r['false_accepts_per_hour']:.1f} |"
            for r in rows
        ]
    what = "negative stream" if negative else f"{rows[0]['commands']} commands"
    head = (
        f"{rows[0]['duration_s'] / 60:.1f} minutes, {what}, tolerance "
        f"{rows[0]['tolerance_s'] * 1000:.0f} ms"
    )
    return "\n".join([head, "", *lines, "", format_pick(rows, target_fa) + "."]) + "\n"


def write_sweep(out: Path, rows: list[dict], target_fa: float) -> list[Path]:
    """sweep.csv (every score() field per threshold) and sweep.md in out."""
    out = Path(out)
    csv_path, md_path = out / "sweep.csv", out / "sweep.md"

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(csv_path, write_csv)
    atomic_write_text(md_path, sweep_markdown(rows, target_fa))
    return [csv_path, md_path]


def plot_sweep(path: Path, rows: list[dict], target_fa: float | None = None) -> None:
    """A DET curve (needs matplotlib): commands missed or mislabelled against false
    accepts per hour on a log axis; on a negative stream, false accepts per hour against
    the threshold. A point without false accepts is drawn hollow at half a false accept
    per stream, where a log axis can show it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 0.5 / (rows[0]["duration_s"] / 3600)
    th = np.array([r["threshold"] for r in rows])
    fa = np.array([r["false_accepts_per_hour"] for r in rows])
    none = fa == 0
    shown = np.where(none, floor, fa)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if rows[0]["commands"]:
        miss = np.array([100 - r["matched_pct"] for r in rows])
        x, y = shown, miss
        ax.set_xscale("log")
        ax.set_xlabel("false accepts per hour")
        ax.set_ylabel("commands missed or mislabelled (%)")
        step = max(1, len(rows) // 8)
        for i in range(0, len(rows), step):
            ax.annotate(
                f"{th[i]:g}", (x[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        if target_fa:
            ax.axvline(target_fa, ls="--", lw=0.8, color="0.5", label=f"{target_fa:g}/hour")
    else:
        x, y = th, shown
        ax.set_yscale("log")
        ax.set_xlabel("threshold")
        ax.set_ylabel("false accepts per hour (negative stream)")
        if target_fa:
            ax.axhline(target_fa, ls="--", lw=0.8, color="0.5", label=f"{target_fa:g}/hour")
    ax.plot(x, y, lw=1, color="C0")
    ax.scatter(x[~none], y[~none], s=12, color="C0", label="threshold")
    if none.any():
        ax.scatter(
            x[none],
            y[none],
            s=14,
            facecolors="none",
            edgecolors="C0",
            label=f"no false accept (drawn at {floor:.2g}/hour)",
        )
    ax.set_title(
        f"{rows[0]['duration_s'] / 60:.1f} min stream, thresholds {th.min():g}-{th.max():g}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
