"""Long-audio test streams with ground truth, and the scorer for detections on them.

The stream follows TensorFlow's generate_streaming_test_wav: background noise laid end to
end with cross-fades, and one labelled one-second clip per (clip + gap) stride at a random
offset inside the gap. Unlike it, the ground truth records where the speech lies inside
each clip (energy above -20 dB of the clip's peak), so a detection is matched on the word
itself rather than on the start of a mostly silent second.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.runtime.audio import fit_to_length, load_audio, speech_span
from pipeline.runtime.errors import AudioError
from pipeline.runtime.files import atomic_write
from pipeline.runtime.labels import IGNORED, SILENCE, UNKNOWN
from pipeline.runtime.rows import read_rows


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


def _crossfade_mix(track: np.ndarray, offset: int, sample: np.ndarray, volume: float,
                   ramp: int) -> None:
    n = min(len(sample), len(track) - offset)
    if n <= 0:
        return
    env = np.ones(n, np.float32)
    r = min(ramp, n // 2)
    if r:
        env[:r] = np.arange(r) / r
        env[n - r:] = np.arange(r, 0, -1) / r
    track[offset:offset + n] += sample[:n] * env * volume


def build_stream(clips: list[tuple[str, str]], noise_files: list[Path], seconds: float,
                 sample_rate: int = 16000, seed: int = 0, word_gap_s: float = 2.0,
                 unknown_percent: float = 30.0, background_volume: float = 0.1,
                 clip_seconds: float = 1.0) -> tuple[np.ndarray, list[Truth]]:
    """A test stream from (path, label) clips and background noise files.

    _silence_ clips are left out; _unknown_ words are mixed in at unknown_percent and
    recorded as such (a detector should stay quiet on them)."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for path, label in sorted(clips):
        if label != SILENCE:
            by_label.setdefault(label, []).append(path)
    commands = [l for l in by_label if l not in IGNORED]
    if not commands:
        raise ValueError("no command clips to build a stream from")
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
        _crossfade_mix(track, offset, src[start:start + seg], rng.uniform(0, background_volume),
                       ramp)

    truths: list[Truth] = []
    stride = clip_n + round(word_gap_s * sample_rate)
    for i in range(total // stride):
        offset = i * stride + rng.randrange(max(1, round(word_gap_s * sample_rate)))
        unknown = UNKNOWN in by_label and rng.uniform(0, 100) < unknown_percent
        label = UNKNOWN if unknown else rng.choice(commands)
        path = rng.choice(by_label[label])
        clip = fit_to_length(load_audio(path, sample_rate), clip_n)
        _crossfade_mix(track, offset, clip, 1.0, 500)
        s, e = speech_span(clip, sample_rate)
        t0 = offset / sample_rate
        truths.append(Truth(label, round(t0 + s, 3), round(t0 + e, 3), str(path)))
    np.clip(track, -1.0, 1.0, out=track)
    return track, truths


def write_truth(path: str | Path, truths: list[Truth]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "start_s", "end_s", "source"])
            w.writerows((t.label, t.start_s, t.end_s, t.source) for t in truths)
    atomic_write(Path(path), write)


def read_truth(path: str | Path) -> list[Truth]:
    with open(path, newline="") as f:
        return [Truth(r["label"], float(r["start_s"]), float(r["end_s"]), r.get("source", ""))
                for r in csv.DictReader(f)]


def read_detections(path: str | Path, audio_path: str | None = None) -> list[Found]:
    """Detection rows of a transcription output (CSV or JSONL), optionally of one input."""
    return [Found(r["label"], float(r["start_s"]), float(r["end_s"]))
            for r in read_rows(Path(path))
            if r.get("kind") == "detection" and (audio_path is None or r["path"] == audio_path)]


def score(truths: list[Truth], found: list[Found], duration_s: float,
          tolerance_s: float = 0.75, ignore: tuple[str, ...] = IGNORED) -> dict:
    """Match detections to spoken commands whose centres lie within tolerance_s.

    Same-label pairs are matched first (nearest first), then the remaining detections
    take the remaining commands as wrong labels. A detection left over, including one on
    an _unknown_ word, is a false accept. Percentages are of the spoken commands."""
    words = [t for t in truths if t.label not in ignore]
    pairs = sorted(((abs(t.time_s - d.time_s), ti, di)
                    for ti, t in enumerate(words) for di, d in enumerate(found)
                    if abs(t.time_s - d.time_s) <= tolerance_s), key=lambda p: p[0])
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

    return {"commands": n, "detections": len(found), "correct": correct, "wrong": wrong,
            "missed": n - len(used_t), "false_accepts": false_accepts,
            "matched_pct": pct(correct), "wrong_pct": pct(wrong), "missed_pct": pct(n - len(used_t)),
            "false_accepts_per_hour": round(false_accepts / hours, 2) if hours else 0.0,
            "tolerance_s": tolerance_s, "duration_s": round(duration_s, 3)}


def format_score(s: dict) -> str:
    return (f"{s['commands']} commands, {s['detections']} detections: "
            f"{s['matched_pct']:.1f}% matched, {s['wrong_pct']:.1f}% wrong label, "
            f"{s['missed_pct']:.1f}% missed, {s['false_accepts_per_hour']:.1f} false accepts/hour "
            f"(tolerance {s['tolerance_s'] * 1000:.0f} ms)")

