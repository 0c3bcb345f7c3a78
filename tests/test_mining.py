"""Hard-negative mining: data.negatives, train.init_from and scripts/mine_negatives.py on
the demo sample, with real training, real exports and real streams."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tests.conftest import DEMO, TINY

NOISE = DEMO / "_background_noise_"


def _negatives(folder: Path) -> list[Path]:
    """Three seconds of real background noise as three files, one in a subfolder."""
    audio, sr = sf.read(sorted(NOISE.glob("*.wav"))[0], dtype="float32")
    paths = [folder / "a.wav", folder / "b.wav", folder / "deeper" / "c.wav"]
    for i, p in enumerate(paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, audio[i * sr : (i + 1) * sr], sr)
    return paths


def _stream(out: Path, split: str, seed: int) -> Path:
    from scripts.make_stream import main

    argv = ["--negative", "--clips", str(DEMO), "--split", split, "--noise", str(NOISE)]
    assert main([*argv, "--minutes", "0.5", "--seed", str(seed), "--out", str(out)]) == 0
    return out


def test_config_checks_the_new_keys():
    from pipeline.train.config import ConfigError, load_config

    cfg = load_config(None, ["data.negatives=[mined/a, mined/b]", "train.init_from=runs/x"])
    assert cfg["data"]["negatives"] == ["mined/a", "mined/b"]
    assert cfg["train"]["init_from"] == "runs/x"
    defaults = load_config(None)
    assert defaults["data"]["negatives"] == [] and defaults["train"]["init_from"] is None
    with pytest.raises(ConfigError, match="data.negatives"):
        load_config(None, ["data.negatives=[1]"])
    with pytest.raises(ConfigError, match="train.init_from"):
        load_config(None, ["train.init_from=3"])


def test_negatives_join_the_training_split_only_as_unknown(tmp_path):
    from pipeline.data.sources import open_source
    from pipeline.runtime.labels import UNKNOWN
    from pipeline.runtime.params import FrontEnd
    from pipeline.train.config import ConfigError, load_config

    files = _negatives(tmp_path / "neg")
    data = load_config(None, [f"data.negatives=[{tmp_path / 'neg'}]"])["data"]
    plain = open_source(DEMO, {**data, "negatives": []}, FrontEnd()).dataset
    mined = open_source(DEMO, data, FrontEnd()).dataset
    unknown = mined.labels.index(UNKNOWN)
    assert mined.labels == plain.labels
    assert mined.splits["train"] == plain.splits["train"] + [(str(f), unknown) for f in files]
    for split in ("validation", "test"):
        assert mined.splits[split] == plain.splits[split]
    # evaluation and export open the data with the model's labels: no negatives then
    scored = open_source(DEMO, data, FrontEnd(), labels=plain.labels).dataset
    assert scored.splits == plain.splits

    words = tmp_path / "words"  # folder per label: _silence_, no, yes and no _unknown_
    for word in ("yes", "no"):
        shutil.copytree(DEMO / word, words / word)
    with pytest.raises(ConfigError, match="no _unknown_ class"):
        open_source(words, data, FrontEnd())
    with pytest.raises(ConfigError, match="folder not found"):
        open_source(DEMO, {**data, "negatives": [str(tmp_path / "nowhere")]}, FrontEnd())


def test_init_from_starts_from_the_source_weights(tiny_run, tmp_path):
    from pipeline.train.config import ConfigError, load_config
    from pipeline.train.fit import train
    from pipeline.train.runs import load_run

    files = _negatives(tmp_path / "neg")
    frozen = [  # a learning rate of 0: the run keeps the weights it started from
        f"train.init_from={tiny_run}",
        f"data.negatives=[{tmp_path / 'neg'}]",
        "train.epochs=1",
        "train.schedule=constant",
        "train.learning_rate=0",
    ]
    metrics = train(load_config(None, TINY + frozen), str(DEMO), tmp_path / "run", verbose=0)
    source, tuned = load_run(tiny_run)[0], load_run(tmp_path / "run")[0]
    assert [w.path for w in tuned.weights] == [w.path for w in source.weights]
    for mine, theirs in zip(tuned.weights, source.weights):  # feature_norm's statistics too
        assert np.array_equal(np.asarray(mine), np.asarray(theirs)), mine.path
    before = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["counts"]["train"] == before["counts"]["train"] + len(files)

    with pytest.raises(ConfigError, match=r"^train.init_from: layer \w+ has weights [^\n]*$"):
        train(
            load_config(None, TINY + [f"train.init_from={tiny_run}", "model.units=[8,8]"]),
            str(DEMO),
            tmp_path / "narrow",
            verbose=0,
        )
    with pytest.raises(ConfigError, match="train.init_from: .*no trained model"):
        train(
            load_config(None, TINY + [f"train.init_from={tmp_path / 'none'}"]),
            str(DEMO),
            tmp_path / "orphan",
            verbose=0,
        )


def test_mine_negatives_cuts_windows_at_triggers_and_fine_tunes(tiny_run, tmp_path, capsys):
    from scripts.mine_negatives import main

    source = _stream(tmp_path / "mine" / "negative_train.wav", "train", 1)
    held_out = _stream(tmp_path / "negative_validation.wav", "validation", 2)
    out = tmp_path / "out"
    argv = [
        "--run",
        str(tiny_run),
        "--data",
        str(DEMO),
        "--negatives",
        str(tmp_path / "mine"),
        "--held-out",
        str(held_out),
        "--out",
        str(out),
        "--rounds",
        "1",
        "--epochs",
        "1",
        "--threshold",
        "0.05",
        "--generate",
        "0.25",
        "--quiet",
        *TINY,
    ]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    line = re.search(r"round 1: (\d+) false triggers in [\d.]+ min, (\d+) windows added", printed)
    assert line, printed
    state = json.loads((out / "mining.json").read_text())
    (record,) = state["rounds"]
    assert record["triggers"] == int(line[1]) > 0 and record["windows"] == int(line[2])

    windows = sorted((out / "mined" / "round1").glob("*.wav"))
    assert len(windows) == record["windows"] == record["triggers"]  # one per trigger
    stream, sr = sf.read(source, dtype="int16")
    from_source = [w for w in windows if w.name.startswith("negative_train-")]
    assert from_source and len(from_source) < len(windows)  # the --generate stream's too
    for w in windows:
        info = sf.info(w)
        assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
    for w in from_source:  # the second of the stream that ended at the trigger
        end = round(float(re.search(r"_(\d+\.\d+)s\.wav$", w.name)[1]) * sr)
        cut = sf.read(w, dtype="int16")[0]
        expected = stream[max(0, end - sr) : end]
        assert np.array_equal(cut[sr - len(expected) :], expected), w.name
        assert not cut[: sr - len(expected)].any()  # zeros before the stream's start

    run = out / "round1"
    request = yaml.safe_load((run / "request.yaml").read_text())
    assert request["train"]["init_from"] == str(tiny_run.resolve())
    assert request["data"]["negatives"] == [str(out.resolve() / "mined" / "round1")]
    tuned = json.loads((run / "metrics.json").read_text())
    before = json.loads((tiny_run / "metrics.json").read_text())
    assert tuned["counts"]["train"] == before["counts"]["train"] + len(windows)
    fa = state["fa_per_hour"]
    assert record["fa_per_hour_before"] == fa[str(tiny_run.resolve())]
    assert record["fa_per_hour_after"] == fa[str(run.resolve())]
    assert state["final"] == min(fa, key=lambda r: (fa[r], r != str(tiny_run.resolve())))

    # a second start finds every step done: nothing mined or trained again
    stamps = {p: p.stat().st_mtime_ns for p in [run / "history.csv", *windows]}
    assert main(argv) == 0
    assert line[0] in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_held_out_stream_that_is_mined_is_refused(tmp_path, capsys):
    from scripts.mine_negatives import main

    source = _stream(tmp_path / "mine" / "negative.wav", "train", 1)
    common = ["--run", str(tmp_path / "run"), "--data", str(DEMO), "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main([*common, "--negatives", str(source), "--held-out", str(source)]) == 2
    assert "is the mining source" in capsys.readouterr().err
    assert main([*common, "--negatives", str(tmp_path), "--held-out", str(source)]) == 2
    assert "lies in the mining folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
