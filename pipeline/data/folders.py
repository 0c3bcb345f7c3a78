"""Training and evaluation data: every source becomes (waveform, label index) pairs.

Sources, picked from the path:
  * a folder in the Speech Commands training-archive layout (word folders,
    _background_noise_/, optional validation_list.txt / testing_list.txt);
  * the canonical 12-class test layout (word folders plus _silence_ and _unknown_);
  * any folder-per-label collection of audio (labels are folder names);
  * "tfds:speech_commands[@DATA_DIR][?manual_dir=DIR]" through tensorflow-datasets
    (pipeline/data/tfds_source.py).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.runtime.audio import AUDIO_EXTENSIONS, fit_to_length, load_audio
from pipeline.runtime.errors import AudioError
from pipeline.runtime.labels import NOISE_DIR, SILENCE, UNKNOWN
from pipeline.runtime.params import FrontEnd

__all__ = [
    "SILENCE",
    "UNKNOWN",
    "NOISE_DIR",
    "Dataset",
    "load_dataset",
    "load_noise",
    "load_clip",
    "hash_split",
    "audio_files",
    "detect_layout",
    "labelled_clips",
    "extra_counts",
    "speaker_of",
    "native_rate",
]
SPLITS = ("train", "validation", "test")
_MAX_WAVS = 2**27 - 1


def hash_split(filename: str, validation_percent: float, testing_percent: float) -> str:
    """The Speech Commands recipe: SHA-1 of the name up to _nohash_, so a speaker never
    crosses splits and a file keeps its split as the dataset grows."""
    speaker = re.sub(r"_nohash_.*$", "", Path(filename).name)
    return _split_for(_speaker_percent(speaker), validation_percent, testing_percent)


def _speaker_percent(speaker: str) -> float:
    h = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    return (h % (_MAX_WAVS + 1)) * (100.0 / _MAX_WAVS)


def _split_for(pct: float, validation_percent: float, testing_percent: float) -> str:
    if pct < validation_percent:
        return "validation"
    if pct < validation_percent + testing_percent:
        return "test"
    return "train"


@dataclass
class Dataset:
    """File lists per split; path '' stands for a _silence_ clip cut from the noise."""

    labels: list[str]
    layout: str
    splits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    noise_files: list[Path] = field(default_factory=list)
    speakers: int | None = None  # distinct speakers in the label folders; None: unknown
    split_rule: str = ""  # how the held-out splits were drawn, and why
    native_rate: int | None = None  # lowest sample rate the recordings have

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


def audio_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )


def detect_layout(root: Path) -> str:
    names = {p.name for p in root.iterdir() if p.is_dir()}
    if SILENCE in names and UNKNOWN in names:
        return "speech_commands_test"
    if (
        NOISE_DIR in names
        or (root / "validation_list.txt").exists()
        or (root / "testing_list.txt").exists()
    ):
        return "speech_commands"
    return "folders"


def _read_list(path: Path) -> set[str]:
    return (
        {l.strip() for l in path.read_text().splitlines() if l.strip()} if path.exists() else set()
    )


def _label_folders(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != NOISE_DIR
    )


def speaker_of(path: str | Path, label_folder: str | Path, pattern: str | None) -> str | None:
    """Who speaks in a file, from its name or folder: pattern's first group when a pattern
    is given, else the name before _nohash_ (Speech Commands), else a subfolder of the
    label folder (word/speaker/take.wav), else the name's tokens that are neither numbers
    nor the label (FSDD's 0_jackson_12.wav is jackson, lights_on_bob_3.wav in lights_on/ is
    bob). None when nothing names one."""
    path, label_folder = Path(path), Path(label_folder)
    if pattern is not None:
        match = re.search(pattern, path.name)
        return (match.group(1) or None) if match else None
    if "_nohash_" in path.name:
        return path.name.split("_nohash_")[0] or None
    inner = path.relative_to(label_folder).parts
    if len(inner) > 1:
        return inner[0]
    label = label_folder.name.lower()
    stem = re.sub(rf"(?<![a-z0-9]){re.escape(label)}(?![a-z0-9])", " ", path.stem.lower())
    tokens = [t for t in re.split(r"[_\-. ]+", stem) if t and not t.isdigit() and t != label]
    return "_".join(tokens) or None


def native_rate(files: list[Path], most: int = 300) -> int | None:
    """The lowest sample rate of an even sample of files, from their headers: recordings
    made at 8 kHz hold nothing above 4 kHz whatever rate they are resampled to."""
    rates = []
    for f in files[:: max(1, -(-len(files) // most))]:
        try:
            rates.append(sf.info(str(f)).samplerate)
        except (RuntimeError, OSError):  # unreadable: skipped again when decoded
            continue
    return min(rates, default=None)


def _assign_splits(
    root: Path, found: list[tuple[Path, Path]], lists: dict[str, set[str]], cfg: dict, seed: int
) -> tuple[dict[Path, str], int | None, str]:
    """Every file's split, the number of speakers (None: not found in most names) and the
    rule used. Without list files a set with many speakers keeps each speaker in one split
    (the Speech Commands recipe); one with few holds out takes instead, so that every
    voice trains (data.split chooses)."""
    pattern = cfg["speaker_pattern"]
    try:
        if pattern is not None and re.compile(pattern).groups < 1:
            raise ValueError("it needs a group, (...), around the speaker")
    except (re.error, ValueError) as exc:
        raise ValueError(f"data.speaker_pattern {pattern!r}: {exc}") from None
    who = {f: speaker_of(f, folder, pattern) for folder, f in found}
    named = {s for s in who.values() if s is not None}
    known = len(named) >= 2 and len(who) - list(who.values()).count(None) >= 0.9 * len(who)
    speakers = len(named) if known else None
    rel = {f: f.relative_to(root).as_posix() for f in who}
    if lists["validation"] or lists["test"]:
        splits = {
            f: next((s for s in ("validation", "test") if rel[f] in lists[s]), "train") for f in who
        }
        return splits, speakers, "the validation/testing list files"
    vp, tp = cfg["validation_percent"], cfg["testing_percent"]

    def by_take(f: Path) -> str:
        pct = int(hashlib.sha1(f"{seed}:{rel[f]}".encode()).hexdigest(), 16) % 10000 / 100
        return _split_for(pct, vp, tp)

    few = cfg["few_speakers"]
    if cfg["split"] == "take":
        rule = "take split (data.split take)"
    elif speakers is None:
        rule = "take split (no speaker in most file names; see data.speaker_pattern)"
    elif cfg["split"] == "auto" and speakers < few:
        rule = f"take split ({speakers} speakers, fewer than data.few_speakers {few})"
    else:
        by_speaker = _speaker_splits(sorted(named), vp, tp)
        splits = {f: by_speaker[s] if s is not None else by_take(f) for f, s in who.items()}
        return splits, speakers, f"speaker split ({speakers} speakers)"
    return {f: by_take(f) for f in who}, speakers, rule


def _speaker_splits(speakers: list[str], vp: float, tp: float) -> dict[str, str]:
    """Each speaker's split by the SHA-1 of its name, then, as few speakers can all hash
    alike, the nearest speakers moved so training and validation each get one."""
    pct = {s: _speaker_percent(s) for s in speakers}
    split = {s: _split_for(pct[s], vp, tp) for s in speakers}
    order = sorted(speakers, key=pct.__getitem__)
    if "train" not in split.values():
        split[order[-1]] = "train"
    if "validation" not in split.values():
        donors = [s for s in order if split[s] == "test"] or [
            s for s in order if split[s] == "train"
        ][:-1]
        split[donors[0]] = "validation"
    return split


def load_dataset(
    source: str | Path,
    data_cfg: dict,
    seed: int = 0,
    labels: list[str] | None = None,
    balance: bool = True,
) -> Dataset:
    """Lists the examples of a local source. labels fixes the label order (evaluation).
    balance=False keeps every _unknown_ clip of an archive folder and makes no _silence_
    (test streams draw their own words)."""
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"{source}: data folder not found")
    layout = detect_layout(root)
    if layout == "speech_commands_test":
        return _test_layout(root, labels)
    from pipeline.train.config import DEFAULTS

    # configs saved before the speaker keys existed (bundled models) take their defaults
    data_cfg = {**DEFAULTS["data"], **data_cfg}
    words = data_cfg["words"] if layout == "speech_commands" else None
    folders = _label_folders(root)
    if not folders:
        raise ValueError(f"{root}: no label folders with audio")
    lists = {
        "validation": _read_list(root / "validation_list.txt"),
        "test": _read_list(root / "testing_list.txt"),
    }
    noise = audio_files(root / NOISE_DIR) if (root / NOISE_DIR).is_dir() else []
    found = [(folder, f) for folder in folders for f in audio_files(folder)]
    split_of, speakers, rule = _assign_splits(root, found, lists, data_cfg, seed)
    rate = native_rate([f for _, f in found])
    if words is None:
        names = labels or [p.name for p in folders]
        # A model that listens to a stream must be able to say "nothing": training on a
        # folder-per-label set adds a _silence_ class cut from the noise (data.silence_fraction).
        background = labels is None and data_cfg["silence_fraction"] > 0 and SILENCE not in names
        if background:
            names = [SILENCE, *names]
        ds = Dataset(list(names), layout, {s: [] for s in SPLITS}, noise, speakers, rule, rate)
        index = {n: i for i, n in enumerate(ds.labels)}
        for folder, f in found:
            if folder.name not in index:
                raise ValueError(f"{folder}: folder is not one of the model's labels")
            ds.splits[split_of[f]].append((str(f), index[folder.name]))
        if background:
            for examples in ds.splits.values():
                examples += [("", 0)] * background_count(len(examples), data_cfg)
        return ds

    ds = Dataset(labels or [SILENCE, UNKNOWN, *words], layout, {}, noise, speakers, rule, rate)
    index = {n: i for i, n in enumerate(ds.labels)}
    missing = [w for w in words if not (root / w).is_dir()]
    if missing:
        raise ValueError(f"{root}: no folder for the word(s) {', '.join(missing)}")
    known, unknown = ({s: [] for s in SPLITS} for _ in range(2))
    for folder, f in found:
        if folder.name in index:
            known[split_of[f]].append((str(f), index[folder.name]))
        else:
            unknown[split_of[f]].append((str(f), index[UNKNOWN]))
    rng = random.Random(seed)
    for split in SPLITS:
        if not balance:
            ds.splits[split] = known[split] + sorted(unknown[split])
            continue
        extra = extra_counts(len(known[split]), data_cfg)
        pool = sorted(unknown[split])
        rng.shuffle(pool)
        n_silence = extra[SILENCE] if noise else 0
        ds.splits[split] = (
            known[split] + pool[: extra[UNKNOWN]] + [("", index[SILENCE])] * n_silence
        )
    return ds


def background_count(n_spoken: int, data_cfg: dict) -> int:
    """How many generated _silence_ examples go with n_spoken takes of a folder-per-label
    set, so they are data.silence_fraction of the whole."""
    share = data_cfg["silence_fraction"]
    return math.ceil(n_spoken * share / (1 - share))


def extra_counts(n_known: int, data_cfg: dict) -> dict[str, int]:
    """How many _silence_ and _unknown_ examples go with n_known command examples, so each
    is its configured fraction of the whole split (the Speech Commands recipe)."""
    fractions = {SILENCE: data_cfg["silence_fraction"], UNKNOWN: data_cfg["unknown_fraction"]}
    total = n_known / max(1e-9, 1 - sum(fractions.values()))
    return {label: math.ceil(total * f) for label, f in fractions.items()}


def _test_layout(root: Path, labels: list[str] | None) -> Dataset:
    folders = _label_folders(root)
    names = labels or [SILENCE, UNKNOWN] + [
        p.name for p in folders if p.name not in (SILENCE, UNKNOWN)
    ]
    index = {n: i for i, n in enumerate(names)}
    test = []
    for folder in folders:
        if folder.name not in index:
            raise ValueError(f"{folder}: folder is not one of the model's labels")
        test += [(str(f), index[folder.name]) for f in audio_files(folder)]
    return Dataset(
        list(names),
        "speech_commands_test",
        {"train": [], "validation": [], "test": test},
        [],
        split_rule="test layout: every clip is a test clip",
    )


def load_noise(files: list[Path], fe: FrontEnd) -> np.ndarray:
    """Background noise as one [n_files, shortest_length] float32 array (at least one clip)."""
    clips = []
    for f in files:
        try:
            clips.append(load_audio(f, fe.sample_rate))
        except AudioError as exc:
            print(f"warning: skipping noise file {exc}")
    if not clips:
        return np.zeros((0, fe.clip_samples), np.float32)
    n = max(fe.clip_samples, min(len(c) for c in clips))
    return np.stack([fit_to_length(c, n) if len(c) < n else c[:n] for c in clips])


def load_clip(path: str, fe: FrontEnd) -> np.ndarray:
    """One training example at the model's rate and length; '' gives zeros (silence)."""
    if not path:
        return np.zeros(fe.clip_samples, np.float32)
    return fit_to_length(load_audio(path, fe.sample_rate), fe.clip_samples)


def labelled_clips(
    root: str | Path, split: str = "test", balance: bool = True
) -> list[tuple[str, str]]:
    """(path, label) of one split of a clip set: the 12-class test layout (everything is
    'test') or a training-archive folder (its list files; other words become _unknown_,
    the training recipe's share of them unless balance=False)."""
    from pipeline.train.config import DEFAULTS

    ds = load_dataset(root, DEFAULTS["data"], balance=balance)
    return [(p, ds.labels[i]) for p, i in ds.splits.get(split, []) if p]
