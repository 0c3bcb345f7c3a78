"""TTS takes of a set's own words, added to its training split (data.synthetic).

A custom word list has few speakers; offline TTS voices (pipeline/synthetic) add many more
at no recording cost. Takes are cached per spoken word in a folder named by a hash of
everything that changes them, so a second run, or another word list sharing a word,
reuses them, and a machine without engines can train on a cache made elsewhere.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from hashlib import sha1
from pathlib import Path

from pipeline.data.folders import SILENCE, UNKNOWN, Dataset, background_count
from pipeline.runtime.files import atomic_write_text
from pipeline.synthetic.synthesize import (
    AUX_WORDS,
    COMMON_WORDS,
    ENGINES,
    MAX_SAMPLES,
    SAMPLE_RATE,
    NoEngineError,
    finish,
    installed,
    plan,
    run_job,
    run_jobs,
    usable_voices,
)
from pipeline.train.config import ConfigError, check_synthetic

VERSION = 1  # bump when a take changes in a way the hashed settings do not show
MARKER = ".complete"


def spoken(word: str, spellings: dict[str, str]) -> str:
    """What the engines say for a label: its spelling, else the name with _ and - as spaces."""
    return spellings.get(word) or " ".join(re.split(r"[_\-\s]+", word)).strip()


def cache_root(synthetic: dict) -> Path:
    if synthetic["cache"]:
        return Path(synthetic["cache"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kws-rnn" / "tts"


def _digest(value: object) -> str:
    return sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _settings() -> dict:
    """What the synthesizer does to every take: plan's ranges, finish's trim, the limits."""
    defaults = {
        f"{f.__name__}.{k}": p.default
        for f in (plan, finish, run_job)
        for k, p in inspect.signature(f).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, "sample_rate": SAMPLE_RATE, "max_samples": MAX_SAMPLES}


def entry_stem(text: str, count: int, seed: int) -> str:
    """A cache entry's name without its voices part (what a machine without engines seeks)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "word"
    return f"{slug}-{_digest([VERSION, text, count, seed, _settings()])[:12]}"


def complete_clips(entry: Path) -> list[Path] | None:
    """The takes of a finished cache entry; None for a missing or unfinished one."""
    try:
        names = json.loads((entry / MARKER).read_text())["clips"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    clips = [entry / n for n in names]
    return clips if clips and all(c.is_file() for c in clips) else None


def mark_complete(entry: Path, clips: list[Path], **info: object) -> None:
    """Write the marker that makes entry count as finished (atomically, so never half)."""
    names = sorted(Path(c).name for c in clips)
    atomic_write_text(entry / MARKER, json.dumps({**info, "clips": names}, indent=1))


def _sounds(words: list[str]) -> dict[str, str]:
    """espeak-ng's phonemes of each word without stress marks, so homophones compare equal;
    the lower-case spelling where espeak-ng is missing."""
    espeak = ENGINES["espeak-ng"]
    if not espeak.available():
        return {w: w.lower() for w in words}
    out = {}
    for w in words:
        proc = subprocess.run(
            [espeak.binary, "-q", "-x", "-v", "en-us", w],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out[w] = re.sub(r"[',\s]+", " ", proc.stdout).strip() or w.lower()
    return out


def unknown_words(texts: list[str]) -> list[str]:
    """The synthesizer's auxiliary and common words, less the set's own words (and each word
    of a phrase) and their homophones: those would teach _unknown_ to be a keyword."""
    pool = list(dict.fromkeys(AUX_WORDS + COMMON_WORDS))
    said = list(dict.fromkeys(t.lower() for text in texts for t in [text, *text.split()]))
    sounds = _sounds(pool + said)
    heard = {sounds[s] for s in said}
    return [w for w in pool if w not in said and sounds[w] not in heard]


def _make(
    entry: Path, label: str, text: str, count: int, seed: int, voices: dict, workers: int
) -> tuple[list[Path], list[str]]:
    """Synthesise one entry in a private folder, mark it complete, then rename it into place,
    so an interrupted run leaves nothing that counts as finished."""
    word_seed = int(_digest([seed, text]), 16) % 2**32
    jobs = [replace(j, text=text) for j in plan({label: count}, voices, word_seed)]
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=entry.parent))
    try:
        written, failed = run_jobs(jobs, tmp, workers, lambda line: None)
        if not written:
            raise ValueError(f"synthetic: no take of '{text}' could be made ({failed[0]})")
        mark_complete(tmp / label, written, text=text, count=count, seed=seed, failed=failed)
        if entry.exists() and complete_clips(entry) is None:
            shutil.rmtree(entry)  # left unfinished by an older run
        try:
            os.rename(tmp / label, entry)
        except OSError:
            if complete_clips(entry) is None:  # else another process finished it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return complete_clips(entry) or [], failed


def _newest(root: Path, stem: str) -> list[Path] | None:
    """The latest finished entry of stem for any voice set."""
    found = [c for e in root.glob(f"{stem}-*") if (c := complete_clips(e))]
    return max(found, key=lambda c: (c[0].parent / MARKER).stat().st_mtime_ns, default=None)


def cached_takes(
    words: dict[str, str],
    count: int,
    seed: int,
    synthetic: dict,
    log: Callable[[str], object] = print,
) -> tuple[dict[str, list[Path]], int, float]:
    """Takes of each label (label -> spoken text) from the cache, synthesising the missing
    ones; also how many words were made and in how many seconds."""
    root = cache_root(synthetic)
    present = [e for e in ENGINES.values() if e.available()]
    tag = _digest({e.name: sorted(e.voices()) for e in present})[:8]
    takes: dict[str, list[Path]] = {}
    for label, text in words.items():
        stem = entry_stem(text, count, seed)
        # without engines, takes made on a machine that has them
        takes[label] = complete_clips(root / f"{stem}-{tag}") if present else _newest(root, stem)
    missing = [label for label, clips in takes.items() if clips is None]
    if not missing:
        return takes, 0, 0.0
    start = time.monotonic()
    try:
        voices = usable_voices(installed(list(ENGINES)), synthetic["workers"])
    except NoEngineError as exc:
        raise ConfigError(f"data.synthetic: {exc}") from None
    shown = start
    for i, label in enumerate(missing, 1):
        entry = root / f"{entry_stem(words[label], count, seed)}-{tag}"
        takes[label], failed = _make(
            entry, label, words[label], count, seed, voices, synthetic["workers"]
        )
        for line in failed:
            log(f"warning: {line}")
        if time.monotonic() - shown > 10 or i == len(missing):
            shown = time.monotonic()
            log(f"synthetic: {i}/{len(missing)} words made ({shown - start:.0f} s)")
    return takes, len(missing), time.monotonic() - start


def add_synthetic(ds: Dataset, data_cfg: dict, seed: int, verbose: bool = True) -> Dataset:
    """ds with TTS takes of its words (and, if asked, of other words as _unknown_) added to
    the training split only: validation and test stay real recordings."""
    synthetic = check_synthetic(data_cfg.get("synthetic"))
    if synthetic is None:
        return ds
    log = print if verbose else lambda line: None
    labels = list(ds.labels)
    words = {w: spoken(w, synthetic["spellings"]) for w in labels if w not in (SILENCE, UNKNOWN)}
    groups = [(words, synthetic["per_word"], "words")]
    if synthetic["unknown"]:
        if UNKNOWN not in labels:
            labels.append(UNKNOWN)
        others = {w: w for w in unknown_words(list(words.values()))}
        groups.append((others, synthetic["per_unknown_word"], f"other words for {UNKNOWN}"))
    train = list(ds.splits.get("train", []))
    for group, count, what in groups:
        takes, made, seconds = cached_takes(group, count, seed, synthetic, log)
        for label, clips in takes.items():
            index = labels.index(UNKNOWN if group is not words else label)
            train += [(str(c), index) for c in clips]
        n = sum(len(c) for c in takes.values())
        amount = (
            f"{count} takes of each of {len(group)} {what}"
            if n == count * len(group)
            else f"{n} takes of {len(group)} {what} ({count} asked each)"
        )
        how = (
            f"made in {seconds:.0f} s"
            if made == len(group)
            else f"{made} made in {seconds:.0f} s, {len(group) - made} reused"
            if made
            else "reused"
        )
        log(f"synthetic: {amount}, cached in {cache_root(synthetic)} ({how})")
    if SILENCE in labels:  # generated _silence_ keeps its share of the grown split
        silence = labels.index(SILENCE)
        spoken_takes = sum(1 for p, i in train if p or i != silence)
        missing = background_count(spoken_takes, data_cfg) - (len(train) - spoken_takes)
        train += [("", silence)] * max(0, missing)
    return replace(ds, labels=labels, splits={**ds.splits, "train": train})
