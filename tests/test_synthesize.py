"""Synthetic clips: post-processing, layout, merging and the no-engine path.

Real demo recordings stand in for engine output, so everything but the engines themselves
is tested on machines without any TTS installed; a real espeak-ng run is added where it is.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.folders import NOISE_DIR, UNKNOWN, load_dataset
from pipeline.runtime.audio import fit_to_length
from pipeline.synthetic.synthesize import (
    COMMAND_FRAGMENTS,
    CONFUSABLE_WORDS,
    ENGINES,
    MAX_SAMPLES,
    SAMPLE_RATE,
    Engine,
    Job,
    Mbrola,
    SynthesisError,
    Variant,
    Voice,
    clip_path,
    confusables,
    finish,
    merge,
    plan,
    run_job,
    run_jobs,
    working_voices,
    write_clip,
)
from pipeline.train.config import COMMANDS, load_config
from scripts.synthesize import main as synthesize_main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "synthesize.py"
CFG = load_config()["data"]


def _speech(demo_data: Path) -> tuple[np.ndarray, int]:
    """A demo clip, trimmed, then padded with 0.3 s of digital silence on each side."""
    audio, rate = sf.read(next((demo_data / "yes").glob("*.wav")), dtype="float32")
    return np.pad(audio, int(0.3 * rate)), rate


def test_finish_trims_resamples_and_sets_the_peak(demo_data):
    audio, rate = _speech(demo_data)
    up = np.interp(np.arange(0, len(audio), rate / 22050), np.arange(len(audio)), audio)
    clip = finish(up.astype(np.float32), 22050, 1.0, -12.0)
    assert len(clip) <= len(audio) - 0.5 * rate  # both silences gone
    assert abs(20 * np.log10(np.abs(clip).max()) + 12.0) < 0.05
    faster = finish(up.astype(np.float32), 22050, 1.25, -12.0)
    assert abs(len(faster) - len(clip) / 1.25) < 0.02 * SAMPLE_RATE
    with pytest.raises(ValueError):
        finish(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, 1.0, -6.0)


def test_finish_keeps_quiet_tails_and_drops_a_noise_floor():
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE // 4) / SAMPLE_RATE
    vowel, fricative = np.sin(2 * np.pi * 200 * t), 0.006 * rng.standard_normal(len(t))
    silence = np.zeros(SAMPLE_RATE // 2)
    word = np.concatenate([silence, vowel, fricative, silence]).astype(np.float32)
    assert abs(len(finish(word, SAMPLE_RATE, 1.0, -6.0)) - 2 * len(t)) <= 0.03 * SAMPLE_RATE
    floor = (word + 3e-4 * rng.standard_normal(len(word))).astype(np.float32)
    assert abs(len(finish(floor, SAMPLE_RATE, 1.0, -6.0)) - 2 * len(t)) <= 0.03 * SAMPLE_RATE


def test_plan_is_seeded_and_spread_over_engines():
    voices = {"a": [Voice("a", f"v{i}") for i in range(50)], "b": [Voice("b", "x")], "none": []}
    jobs = plan({"yes": 300, "cat": 20}, voices, seed=3)
    assert jobs == plan({"yes": 300, "cat": 20}, voices, seed=3)
    assert jobs != plan({"yes": 300, "cat": 20}, voices, seed=4)
    assert [j.word for j in jobs].count("cat") == 20
    share_b = sum(j.voice.engine == "b" for j in jobs) / len(jobs)
    assert 0.08 < share_b < 0.35  # few voices, but not drowned by the 50
    assert all(-20 <= j.peak_db <= -1 and 0.9 <= j.variant.stretch <= 1.1 for j in jobs)


def _fake_synth(demo_data: Path, out: Path) -> list[Path]:
    """Demo recordings written the way synthesized clips are."""
    paths = []
    for word in ("yes", "bed", "apple"):  # a command, an auxiliary word, a new word
        for i, src in enumerate(
            sorted((demo_data / ("yes" if word == "apple" else word)).glob("*.wav"))[:3]
        ):
            audio, rate = sf.read(src, dtype="float32")
            variant = Variant(1.0, 1.0, 1.0 + i / 20)
            path = clip_path(out, word, Voice("espeak-ng", "en-us+f2"), variant, i)
            write_clip(path, finish(audio, rate, variant.stretch, -6.0))
            paths.append(path)
    return paths


def test_clips_have_the_training_format(demo_data, tmp_path):
    for path in _fake_synth(demo_data, tmp_path):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert info.frames <= MAX_SAMPLES
        assert path.name.startswith("tts-espeak-ng-en-us-f2_s100p100r")
        assert "_nohash_" in path.name and not list(path.parent.glob(".*"))


def _names(examples: list[tuple[str, int]], skip: int) -> list[str]:
    return sorted(Path(p).name for p, label in examples if label != skip)


def test_merge_puts_every_synthetic_clip_in_train(demo_data, tmp_path):
    synth = tmp_path / "synth"
    clips = _fake_synth(demo_data, synth)
    merged = tmp_path / "merged"
    added = merge(demo_data, synth, merged)
    assert dict(added) == {"yes": 3, "bed": 3, "apple": 3}
    assert (merged / "validation_list.txt").is_symlink()
    assert (merged / NOISE_DIR).is_dir() and not (merged / NOISE_DIR).is_symlink()

    real, both = load_dataset(demo_data, CFG), load_dataset(merged, CFG)
    assert len(both.noise_files) == len(real.noise_files)
    for split in ("validation", "test"):
        # same command clips; the _unknown_ draw may differ (the shared RNG first shuffles a
        # bigger training pool) but keeps its size and stays real
        assert _names(both.splits[split], 1) == _names(real.splits[split], 1)
        assert len(both.splits[split]) == len(real.splits[split])
        assert not any("tts-" in p for p, _ in both.splits[split])
    train = {Path(p).relative_to(merged): label for p, label in both.splits["train"] if p}
    yes = both.labels.index("yes")
    assert all(train[c.relative_to(synth)] == yes for c in clips if c.parent.name == "yes")
    pool = load_dataset(merged, {**CFG, "silence_fraction": 0.0, "unknown_fraction": 0.8})
    unknown = {Path(p).relative_to(merged) for p, label in pool.splits["train"] if label == 1}
    assert {c.relative_to(synth) for c in clips if c.parent.name != "yes"} <= unknown
    assert pool.labels[1] == UNKNOWN

    (synth / "yes" / clips[0].name).unlink()
    assert dict(merge(demo_data, synth, merged)) == {"yes": 2, "bed": 3, "apple": 3}
    other = tmp_path / "other"
    (other / "x").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        merge(demo_data, synth, other)


class _Replay(Engine):
    """Stands in for a TTS program: a subprocess that writes a given recording."""

    name, binary = "replay", sys.executable

    def __init__(self, sources: dict[str, Path], stderr: str = "", default: Path | None = None):
        self.sources, self.stderr, self.default = sources, stderr, default

    def voices(self) -> list[str]:
        return ["a", "mute", "b"]

    def command(self, voice: str, text: str, wav: Path, v: Variant) -> list[str]:
        code = (
            "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2]); "
            "sys.stderr.write(sys.argv[3])"
        )
        if voice == "mute":
            code = "import sys; sys.exit('no voice data')"
        return [
            self.binary,
            "-c",
            code,
            str(self.sources.get(text, self.default)),
            str(wav),
            self.stderr,
        ]


def test_jobs_run_engines_and_skip_what_is_not_a_clip(demo_data, tmp_path, monkeypatch):
    audio, rate = _speech(demo_data)
    sf.write(tmp_path / "word.wav", audio, rate)
    sf.write(tmp_path / "long.wav", np.tile(audio, 2), rate)  # two words, 2.6 s
    sources = {
        "yes": tmp_path / "word.wav",
        "test": tmp_path / "word.wav",
        "no": tmp_path / "long.wav",
    }
    monkeypatch.setitem(ENGINES, "replay", _Replay(sources))
    voices = working_voices([ENGINES["replay"]], workers=2)
    assert [v.name for v in voices["replay"]] == ["a", "b"]  # "mute" made no sound
    jobs = plan({"yes": 4, "no": 1}, voices, seed=0)
    written, failed = run_jobs(jobs, tmp_path / "out", report=lambda line: None)
    assert sorted(p.parent.name for p in written) == ["yes"] * 4
    assert len(failed) == 1 and "longer than 1 s" in failed[0]
    assert all(p.name.startswith("tts-replay-") for p in written)
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left behind

    monkeypatch.setitem(ENGINES, "replay", _Replay(sources, "_-O2 unknown, replaced with _-_"))
    monkeypatch.setattr(ENGINES["replay"], "garbled", Mbrola().garbled)
    with pytest.raises(SynthesisError, match="cannot say 'yes'"):
        run_job(jobs[0], tmp_path / "out2")


def test_confusables_are_real_single_words_and_no_homophones():
    assert set(CONFUSABLE_WORDS) == set(COMMAND_FRAGMENTS) == set(COMMANDS)
    every = confusables(COMMANDS)
    assert len(every) == len(set(every))  # each once ("aw" is the first half of on and off)
    assert all(re.fullmatch(r"[a-z]+", w) for w in every)
    assert not set(every) & set(COMMANDS)
    # homophones of a command are the command to a listener; "one" is a Speech Commands
    # word already, and its homophone "won" is no command's
    assert not set(every) & {"know", "noh", "write", "rite", "wright", "won", "one"}
    assert all(len(CONFUSABLE_WORDS[c]) >= 4 for c in COMMANDS)
    assert confusables(["yes"]) == CONFUSABLE_WORDS["yes"] + ["ye"]
    assert confusables(["lights_on", "lights_off"]) == []


def test_confusables_become_unknown_word_folders(demo_data, tmp_path, monkeypatch):
    audio, rate = _speech(demo_data)
    sf.write(tmp_path / "word.wav", fit_to_length(audio, rate // 2), rate)  # any take fits 1 s
    monkeypatch.setitem(ENGINES, "replay", _Replay({}, default=tmp_path / "word.wav"))
    out, merged = tmp_path / "synth", tmp_path / "merged"
    assert (
        synthesize_main(
            [
                "--out",
                str(out),
                "--engines",
                "replay",
                "--words",
                "yes",
                "left",
                "--unknown-words",
                "bed",
                "yet",
                "--confusables",
                "--per-word",
                "1",
                "--per-unknown-word",
                "1",
                "--per-confusable-word",
                "2",
                "--merge-with",
                str(demo_data),
                "--merged",
                str(merged),
            ]
        )
        == 0
    )
    alike = confusables(["yes", "left"])
    assert "yet" in alike and "lef" in alike and "ye" in alike
    counts = {d.name: len(list(d.glob("tts-replay-*.wav"))) for d in out.iterdir()}
    assert counts == {"yes": 1, "left": 1, "bed": 1, **{w: 2 for w in alike}}
    data = load_dataset(merged, {**CFG, "silence_fraction": 0.0, "unknown_fraction": 0.9})
    unknown = {
        Path(p).parent.name
        for p, label in data.splits["train"]
        if label == data.labels.index(UNKNOWN) and "tts-" in p
    }
    assert set(alike) <= unknown


def _run(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PATH": path} if path is not None else {})}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_no_engine_is_one_clear_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _run("--out", str(tmp_path / "s"), path=str(empty))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no TTS engine found" in proc.stderr and "apt-get install espeak-ng" in proc.stderr
    assert not (tmp_path / "s").exists()
    proc = _run("--out", str(tmp_path / "s"), "--engines", "no-such-tts")
    assert proc.returncode == 2 and "unknown engine(s) no-such-tts" in proc.stderr


def test_merge_only_needs_no_engine(demo_data, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    _fake_synth(demo_data, tmp_path / "synth")
    proc = _run(
        "--out",
        str(tmp_path / "synth"),
        "--merge-only",
        "--merge-with",
        str(demo_data),
        "--merged",
        str(tmp_path / "merged"),
        path=str(empty),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "merged" / "apple").iterdir())) == 3


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_ng_clips(tmp_path):
    job = Job("left", 0, Voice("espeak-ng", "en-us"), Variant(0.8, 1.1, 1.05), -9.0)
    path = run_job(job, tmp_path)
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and 0.15 * rate < len(audio) <= MAX_SAMPLES
    assert abs(20 * np.log10(np.abs(audio).max()) + 9.0) < 0.1
    # speech energy fills the trimmed clip: no long silent head or tail left
    frames = np.sqrt((audio[: len(audio) // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1))
    assert frames[:3].max() > frames.max() * 0.01 and frames[-3:].max() > frames.max() * 0.01
    proc = _run(
        "--out",
        str(tmp_path / "s"),
        "--engines",
        "espeak-ng",
        "--words",
        "yes",
        "--unknown-words",
        "bed",
        "--per-word",
        "4",
        "--per-unknown-word",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "s" / "yes").glob("tts-espeak-ng-*_nohash_*.wav"))) == 4
    assert len(list((tmp_path / "s" / "bed").glob("*.wav"))) == 2
