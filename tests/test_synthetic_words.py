"""data.synthetic: TTS takes of a set's own words, cached per word, in the training split.

A real espeak-ng run where it is installed; everything else (reuse of a cache made
elsewhere, unfinished entries, _unknown_ takes, config errors) runs without any engine.
"""

import math
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from pipeline.data.folders import SILENCE, UNKNOWN, load_dataset
from pipeline.data.sources import open_source
from pipeline.data.synthetic_words import (
    MARKER,
    add_synthetic,
    complete_clips,
    entry_stem,
    mark_complete,
    unknown_words,
)
from pipeline.runtime.params import FrontEnd
from pipeline.synthetic.synthesize import MAX_SAMPLES, SAMPLE_RATE
from pipeline.train.config import ConfigError, load_config

WORDS = {"lights_on": "yes", "lights_off": "no"}  # folder -> demo word whose takes it gets


@pytest.fixture
def word_set(demo_data, tmp_path) -> Path:
    """A folder-per-label set of two phrases, real recordings (demo words standing in)."""
    root = tmp_path / "set"
    for folder, demo_word in WORDS.items():
        (root / folder).mkdir(parents=True)
        for f in sorted((demo_data / demo_word).glob("*.wav")):
            shutil.copy(f, root / folder / f.name)
    return root


def _cfg(tmp_path: Path, **synthetic) -> dict:
    spec = ", ".join(f"{k}: {v}" for k, v in {"cache": tmp_path / "cache", **synthetic}.items())
    return load_config(None, ["data.words=null", f"data.synthetic={{{spec}}}"])["data"]


def _no_engines(monkeypatch, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _prepare(root: Path, text: str, count: int, demo_data: Path, seed: int = 0) -> Path:
    """A finished cache entry made 'elsewhere': real recordings named like takes."""
    entry = root / f"{entry_stem(text, count, seed)}-elsewhere"
    entry.mkdir(parents=True)
    clips = []
    for i, f in enumerate(sorted((demo_data / "yes").glob("*.wav"))[:count]):
        clips.append(entry / f"tts-espeak-ng-en-us_s100p100r100_nohash_{i}.wav")
        shutil.copy(f, clips[-1])
    mark_complete(entry, clips, text=text)
    return entry


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_ng_takes_train_only_and_are_cached(word_set, tmp_path, capsys):
    cfg = _cfg(tmp_path, per_word=3)
    real = load_dataset(word_set, cfg)
    ds = add_synthetic(real, cfg, seed=0)
    assert ds.labels == real.labels
    for split in ("validation", "test"):
        assert ds.splits[split] == real.splits[split]
    added = ds.splits["train"][len(real.splits["train"]) :]
    assert ds.splits["train"][: len(real.splits["train"])] == real.splits["train"]
    assert sorted(ds.labels[i] for _, i in added) == ["lights_off"] * 3 + ["lights_on"] * 3
    for path, _ in added:
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (SAMPLE_RATE, 1)
        assert 0 < info.frames <= MAX_SAMPLES
        assert Path(path).is_relative_to(tmp_path / "cache")
    entries = {p.name: p for p in (tmp_path / "cache").iterdir()}
    assert len(entries) == 2 and not [n for n in entries if n.startswith(".")]
    assert "3 takes of each of 2 words" in capsys.readouterr().out

    times = {p: Path(p).stat().st_mtime_ns for p, _ in added}
    again = add_synthetic(real, cfg, seed=0)
    assert again.splits == ds.splits
    assert {p: Path(p).stat().st_mtime_ns for p in times} == times
    assert "(reused)" in capsys.readouterr().out

    # a new spelling is a new entry; the other word is reused
    spelled = add_synthetic(real, _cfg(tmp_path, per_word=3, spellings="{lights_on: lamp on}"), 0)
    assert "1 made in" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").iterdir())) == 3
    new = set(spelled.splits["train"]) - set(ds.splits["train"])
    assert len(new) == 3 and {spelled.labels[i] for _, i in new} == {"lights_on"}
    assert all(Path(p).parent.name.startswith("lamp-on-") for p, _ in new)

    # homophones of the set's words are no _unknown_ words
    assert "one" in unknown_words(["lights on"]) and "one" not in unknown_words(["won"])
    assert "light" in unknown_words(["lights on"]) and "two" not in unknown_words(["too"])


def test_a_cache_made_elsewhere_is_reused_without_engines(
    word_set, demo_data, tmp_path, capsys, monkeypatch
):
    _no_engines(monkeypatch, tmp_path)
    cfg = _cfg(tmp_path, per_word=2)
    entries = {w: _prepare(tmp_path / "cache", w.replace("_", " "), 2, demo_data) for w in WORDS}
    real = load_dataset(word_set, cfg)
    ds = add_synthetic(real, cfg, seed=0)
    added = ds.splits["train"][len(real.splits["train"]) :]
    assert sorted((Path(p).parent, ds.labels[i]) for p, i in added) == sorted(
        (entries[w], w) for w in WORDS for _ in range(2)
    )
    assert "2 takes of each of 2 words" in capsys.readouterr().out
    # another seed makes other takes: none cached here, and no engine to make them
    with pytest.raises(ConfigError, match=r"^data.synthetic: no TTS engine found .*espeak-ng`$"):
        add_synthetic(real, cfg, seed=1)


def test_an_unfinished_entry_does_not_count(word_set, demo_data, tmp_path, monkeypatch):
    _no_engines(monkeypatch, tmp_path)
    entry = _prepare(tmp_path / "cache", "lights on", 2, demo_data)
    _prepare(tmp_path / "cache", "lights off", 2, demo_data)
    assert len(complete_clips(entry)) == 2
    next(entry.glob("*.wav")).unlink()  # a take the marker lists is gone
    assert complete_clips(entry) is None
    (entry / MARKER).unlink()
    assert complete_clips(entry) is None
    cfg = _cfg(tmp_path, per_word=2)
    with pytest.raises(ConfigError, match="no TTS engine found"):
        add_synthetic(load_dataset(word_set, cfg), cfg, seed=0)


def test_unknown_takes_get_an_unknown_class(word_set, demo_data, tmp_path, monkeypatch):
    _no_engines(monkeypatch, tmp_path)
    others = unknown_words(["lights on", "lights off", "one"])
    assert "one" not in others and "two" in others and "light" in others
    cfg = _cfg(tmp_path, per_word=1, unknown="true", per_unknown_word=1)
    for text in ["lights on", "lights off"] + unknown_words(["lights on", "lights off"]):
        _prepare(tmp_path / "cache", text, 1, demo_data)
    real = load_dataset(word_set, cfg)
    ds = add_synthetic(real, cfg, seed=0)
    assert ds.labels == real.labels + [UNKNOWN] and real.labels == [SILENCE, *sorted(WORDS)]
    added = [ds.labels[i] for _, i in ds.splits["train"][len(real.splits["train"]) :]]
    n_unknown = len(unknown_words(["lights on", "lights off"]))
    spoken = n_unknown + 2
    assert added.count(UNKNOWN) == n_unknown > 50 and len(added) - added.count(SILENCE) == spoken
    # generated _silence_ keeps its share of the grown training split
    silence = sum(1 for label in ds.splits["train"] if label[1] == 0)
    assert silence == math.ceil((len(ds.splits["train"]) - silence) * 0.1 / 0.9)


def test_synthetic_is_for_training_on_local_folders(word_set, tmp_path, monkeypatch):
    _no_engines(monkeypatch, tmp_path)
    cfg, fe = _cfg(tmp_path), FrontEnd()
    with pytest.raises(ConfigError, match="local folder"):
        open_source("tfds:speech_commands", cfg, fe)
    # evaluation passes the model's labels and scores the set's own clips: nothing to make
    source = open_source(word_set, cfg, fe, labels=sorted(WORDS))
    assert source.counts() == load_dataset(word_set, cfg, labels=sorted(WORDS)).counts()
    with pytest.raises(ConfigError, match="no TTS engine found"):
        open_source(word_set, cfg, fe)


@pytest.mark.parametrize(
    "value, message",
    [
        ("{per_words: 3}", "expected true or a mapping of per_word"),
        ("{per_word: 0}", "data.synthetic.per_word: expected a positive integer"),
        ("{workers: 1.5}", "data.synthetic.workers: expected a positive integer"),
        ("{unknown: 1}", "data.synthetic.unknown: expected true or false"),
        ("{spellings: [lights_on]}", "data.synthetic.spellings: expected a mapping"),
        ("{spellings: {lights_on: ''}}", "data.synthetic.spellings: expected a mapping"),
        ("{cache: 3}", "data.synthetic.cache: expected a folder"),
        ("200", "expected true or a mapping"),
    ],
)
def test_bad_synthetic_config_is_one_clear_error(value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"data.synthetic={value}"])


def test_synthetic_true_means_the_defaults():
    on = load_config(None, ["data.synthetic=true"])["data"]["synthetic"]
    assert on["per_word"] == 200 and on["unknown"] is False and on["spellings"] == {}
    assert load_config(None, ["data.synthetic=false"])["data"]["synthetic"] is None
    spelled = load_config(None, ["data.synthetic={spellings: {lights_on: lights on}}"])
    assert spelled["data"]["synthetic"]["spellings"] == {"lights_on": "lights on"}
    assert load_config(None, ["data.synthetic=true"])["data"]["synthetic"]["spellings"] == {}
