import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.folders import (
    SILENCE,
    UNKNOWN,
    detect_layout,
    hash_split,
    load_clip,
    load_dataset,
)
from pipeline.runtime.params import FrontEnd
from pipeline.train.config import load_config

CFG = load_config()["data"]


def _speaker(path: str) -> str:
    return Path(path).name.split("_nohash_")[0]


def test_archive_layout_gives_the_twelve_class_task(demo_data):
    ds = load_dataset(demo_data, CFG)
    assert ds.layout == "speech_commands"
    assert ds.labels == [SILENCE, UNKNOWN, *CFG["words"]]
    counts = {s: Counter(l for _, l in ex) for s, ex in ds.splits.items()}
    # 8 training clips per command word; silence and unknown about 10% of the split each
    assert all(counts["train"][i] == 8 for i in range(2, 12))
    n = sum(counts["train"].values())
    assert abs(counts["train"][0] / n - 0.1) < 0.02 and abs(counts["train"][1] / n - 0.1) < 0.02
    listed = set((demo_data / "testing_list.txt").read_text().split())
    assert {
        Path(p).relative_to(demo_data).as_posix() for p, l in ds.splits["test"] if p and l != 1
    } <= listed
    assert len(ds.noise_files) == 6


def test_fractions_are_configurable(demo_data):
    ds = load_dataset(demo_data, {**CFG, "silence_fraction": 0.0, "unknown_fraction": 0.2})
    labels = Counter(l for _, l in ds.splits["train"])
    assert labels[0] == 0 and labels[1] > 0


def test_without_list_files_speakers_never_cross_splits(demo_data, tmp_path):
    """No list files: the SHA-1 recipe on the speaker prefix decides, per speaker."""
    root = tmp_path / "sc"
    shutil.copytree(demo_data / "_background_noise_", root / "_background_noise_")
    clip = next((demo_data / "yes").glob("*.wav"))
    for word in ("yes", "no", "cat"):
        (root / word).mkdir(parents=True)
        for speaker in range(60):
            for take in range(2):
                shutil.copy(clip, root / word / f"{speaker * 7919:08x}_nohash_{take}.wav")
    ds = load_dataset(root, {**CFG, "words": ["yes", "no"]})
    speakers = {s: {_speaker(p) for p, _ in ex if p} for s, ex in ds.splits.items()}
    assert speakers["train"] and speakers["validation"] and speakers["test"]
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]
    for split, examples in ds.splits.items():
        for p, _ in examples:
            if p:
                assert hash_split(p, 10, 10) == split


def test_hash_split_follows_the_speaker_prefix():
    a = hash_split("yes/0a7c2a8d_nohash_0.wav", 10, 10)
    assert a == hash_split("no/0a7c2a8d_nohash_4.wav", 10, 10)
    splits = Counter(hash_split(f"{i:08x}_nohash_0.wav", 10, 10) for i in range(4000))
    assert 0.07 < splits["validation"] / 4000 < 0.13 and 0.07 < splits["test"] / 4000 < 0.13


def test_canonical_test_layout(demo_data, tmp_path):
    root = tmp_path / "test_layout"
    for word in ("yes", "no", SILENCE, UNKNOWN):
        (root / word).mkdir(parents=True)
    for f in sorted((demo_data / "yes").glob("*.wav"))[:3]:
        shutil.copy(f, root / "yes" / f"yes_{f.name}")
    shutil.copy(next((demo_data / "cat").glob("*.wav")), root / UNKNOWN / "cat_x_nohash_0.wav")
    noise, sr = sf.read(demo_data / "_background_noise_" / "white_noise.wav")
    sf.write(root / SILENCE / "noise_0.wav", noise[:sr], sr)
    assert detect_layout(root) == "speech_commands_test"
    labels = [SILENCE, UNKNOWN, *CFG["words"]]
    ds = load_dataset(root, CFG, labels=labels)
    assert Counter(labels[l] for _, l in ds.splits["test"]) == {"yes": 3, UNKNOWN: 1, SILENCE: 1}


def test_folder_per_label_takes_any_audio(tmp_path):
    """Custom words: any rate, channel count, sample format and length."""
    rng = np.random.default_rng(0)
    formats = [
        (8000, 2, "PCM_16", 0.6, ".wav"),
        (44100, 1, "PCM_24", 2.5, ".wav"),
        (48000, 1, "FLOAT", 1.0, ".wav"),
        (22050, 1, "PCM_16", 0.8, ".flac"),
    ]
    for word in ("lights", "music"):
        for i, (sr, ch, subtype, seconds, ext) in enumerate(formats * 3):
            shape = (int(sr * seconds), ch) if ch > 1 else (int(sr * seconds),)
            path = tmp_path / word / f"take{i}{ext}"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, (rng.normal(0, 0.1, shape)).clip(-1, 1), sr, subtype=subtype)
    ds = load_dataset(tmp_path, CFG, seed=3)
    assert ds.layout == "folders" and ds.labels == [SILENCE, "lights", "music"]
    assert sum(1 for v in ds.splits.values() for p, _ in v if p) == 24
    assert ds.counts()["train"] > 12 and ("", 0) in ds.splits["train"]
    again = load_dataset(tmp_path, CFG, seed=3)
    assert again.splits == ds.splits
    fe = FrontEnd()
    for path in [p for p, _ in ds.splits["train"] if p]:
        clip = load_clip(path, fe)
        assert clip.shape == (fe.clip_samples,) and clip.dtype == np.float32
        assert np.isfinite(clip).all() and np.abs(clip).max() > 0


def test_broken_training_file_is_skipped_not_fatal(demo_data, tmp_path, capfd):
    from pipeline.data.tfdata import decoded

    root = tmp_path / "words"
    shutil.copytree(demo_data / "yes", root / "yes")
    shutil.copytree(demo_data / "no", root / "no")
    (root / "no" / "broken_nohash_0.wav").write_text("not audio at all")
    ds = load_dataset(root, CFG)
    examples = [e for s in ds.splits.values() for e in s]
    waves = list(decoded(examples, FrontEnd()).as_numpy_iterator())
    assert len(waves) == len(examples) - 1
    assert "broken_nohash_0.wav: cannot decode audio" in capfd.readouterr().out


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        load_dataset(tmp_path / "nope", CFG)


def write_word_set(root: Path, speakers=("jackson", "nicolas", "theo", "yweweler"), takes=6):
    """A folder-per-label set like the Free Spoken Digit Dataset: 8 kHz clips named
    <digit>_<speaker>_<take>.wav, a different tone per word and per speaker."""
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    for w, word in enumerate(("zero", "one", "two")):
        (root / word).mkdir(parents=True)
        for s, speaker in enumerate(speakers):
            for take in range(takes):
                tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * w + 40 * s) * t)
                sf.write(
                    root / word / f"{w}_{speaker}_{take}.wav",
                    tone + rng.normal(0, 0.01, t.size),
                    8000,
                    subtype="PCM_16",
                )
    return root


def test_speaker_of_names_the_speaker():
    from pipeline.data.folders import speaker_of

    d = Path("data")
    assert speaker_of(d / "yes" / "0a7c2a8d_nohash_1.wav", d / "yes", None) == "0a7c2a8d"
    assert speaker_of(d / "zero" / "0_jackson_12.wav", d / "zero", None) == "jackson"
    assert speaker_of(d / "0" / "0_jackson_12.wav", d / "0", None) == "jackson"
    assert speaker_of(d / "lights" / "anna" / "take-3.wav", d / "lights", None) == "anna"
    assert speaker_of(d / "yes" / "yes_3.wav", d / "yes", None) is None
    # a multi-word label is removed whole, and only where it stands as its own token
    assert speaker_of(d / "lights_on" / "lights_on_bob_3.wav", d / "lights_on", None) == "bob"
    assert speaker_of(d / "on" / "jon_on_1.wav", d / "on", None) == "jon"
    pattern = r"^rec-([a-z]+)-\d+"
    assert speaker_of(d / "go" / "rec-bob-07.wav", d / "go", pattern) == "bob"
    assert speaker_of(d / "go" / "bob_nohash_0.wav", d / "go", pattern) is None


def test_few_speakers_hold_out_takes_so_every_voice_trains(tmp_path):
    ds = load_dataset(write_word_set(tmp_path / "digits"), CFG)
    assert ds.speakers == 4 and ds.native_rate == 8000
    assert ds.split_rule.startswith("take split (4 speakers")
    speakers = {s: {Path(p).stem.split("_")[1] for p, _ in ex if p} for s, ex in ds.splits.items()}
    assert speakers["train"] == {"jackson", "nicolas", "theo", "yweweler"}
    assert (
        ds.counts()["validation"] > 0
        and sum(1 for ex in ds.splits.values() for p, _ in ex if p) == 72
    )


def test_speaker_split_keeps_a_voice_for_validation_and_for_training(tmp_path):
    root = write_word_set(tmp_path / "digits")
    for cfg in ({**CFG, "few_speakers": 2}, {**CFG, "split": "speaker"}):
        ds = load_dataset(root, cfg)
        assert ds.split_rule == "speaker split (4 speakers)"
        speakers = {
            s: {Path(p).stem.split("_")[1] for p, _ in ex if p} for s, ex in ds.splits.items()
        }
        assert speakers["validation"] and speakers["train"]
        assert not speakers["train"] & (speakers["validation"] | speakers["test"])
    two = load_dataset(write_word_set(tmp_path / "two", ("ann", "bo")), {**CFG, "split": "speaker"})
    assert all(sum(1 for p, _ in two.splits[s] if p) == 18 for s in ("train", "validation"))
    pattern = load_dataset(root, {**CFG, "split": "speaker", "speaker_pattern": r"^(\d+)_"})
    assert pattern.speakers == 3  # the pattern decides: here the digit stands for the speaker
    with pytest.raises(ValueError, match="needs a group"):
        load_dataset(root, {**CFG, "speaker_pattern": r"^\d+_"})


def test_nameless_takes_fall_back_to_a_take_split(tmp_path):
    root = write_word_set(tmp_path / "digits")
    for folder in root.iterdir():
        for i, f in enumerate(sorted(folder.glob("*.wav"))):
            f.rename(f.with_name(f"{folder.name}_{i}.wav"))
    ds = load_dataset(root, {**CFG, "split": "speaker"})
    assert ds.speakers is None and ds.split_rule.startswith("take split (no speaker")


def _without_lists(src: Path, dst: Path) -> Path:
    """The archive through symlinks, its validation/testing list files left out."""
    dst.mkdir()
    for p in src.iterdir():
        if not p.name.endswith("_list.txt"):
            (dst / p.name).symlink_to(p)
    return dst


def test_archive_without_list_files_keeps_the_speech_commands_split(demo_data, tmp_path):
    src = demo_data
    root = _without_lists(src, tmp_path / "archive")
    for words in (CFG["words"], None):
        ds = load_dataset(root, {**CFG, "words": words, "unknown_fraction": 0.9}, balance=False)
        files = {p for ex in ds.splits.values() for p, _ in ex if p}
        assert ds.split_rule.startswith("speaker split") and ds.speakers == len(
            {_speaker(p) for p in files}
        )
        assert all(hash_split(p, 10, 10) == s for s, ex in ds.splits.items() for p, _ in ex if p)
    assert load_dataset(src, CFG).split_rule == "the validation/testing list files"


def test_adapt_to_data_follows_a_small_band_limited_set(tmp_path):
    from pipeline.data.sources import FolderSource
    from pipeline.train.adapt import adapt_to_data

    cfg = load_config()
    data = FolderSource(load_dataset(write_word_set(tmp_path / "digits"), cfg["data"]), FrontEnd())
    adapted, lines = adapt_to_data(cfg, data)
    assert adapted["front_end"]["fmax"] == 3800.0 and cfg["front_end"]["fmax"] == 7600.0
    assert adapted["augment"]["pitch"] == 2.0 and adapted["augment"]["vtlp"] == 0.1
    assert cfg["augment"]["pitch"] is None
    assert "recordings at 8000 Hz: front_end.fmax 7600 -> 3800" in lines
    assert lines[0].startswith("data: 4 speakers; take split")
    FrontEnd.from_dict(adapted["front_end"])
    kept, _ = adapt_to_data(
        load_config(None, ["data.follow_bandwidth=false", "augment.pitch=0.5"]), data
    )
    assert kept["front_end"]["fmax"] == 7600.0 and kept["augment"]["pitch"] == 0.5


def test_adapt_to_data_leaves_the_speech_commands_recipe_alone(demo_data):
    from pipeline.data.sources import FolderSource
    from pipeline.train.adapt import adapt_to_data

    cfg = load_config()
    adapted, lines = adapt_to_data(
        cfg, FolderSource(load_dataset(demo_data, cfg["data"]), FrontEnd())
    )
    assert adapted["augment"]["pitch"] == 0.0 and adapted["augment"]["vtlp"] == 0.0
    cfg["augment"].update(pitch=0.0, vtlp=0.0)
    assert adapted == cfg
    assert lines[0] == "data: 90 speakers; the validation/testing list files"
