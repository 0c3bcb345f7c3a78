import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO, ROOT, TINY

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]


def _epochs(run: Path) -> list[int]:
    lines = (run / "history.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def test_a_key_added_since_a_run_was_saved_does_not_block_it(tiny_run, tmp_path):
    """A run saved before a config key existed is the same run when that key is at its
    default, so it resumes or reports its scores instead of being refused."""
    import shutil

    import yaml

    from pipeline.train.config import load_config
    from pipeline.train.fit import train

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    request = yaml.safe_load((run / "request.yaml").read_text())
    del request["train"]["min_steps"]
    (run / "request.yaml").write_text(yaml.safe_dump(request, sort_keys=False))
    metrics = train(load_config(None, TINY), str(DEMO), run, verbose=0)
    assert metrics == json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_killed_training_resumes_from_last_epoch(tmp_path):
    run = tmp_path / "run"
    cmd = TRAIN + [
        "--data",
        str(DEMO),
        "--out",
        str(run),
        "--quiet",
        *[o for o in TINY if not o.startswith("train.epochs")],
        "train.epochs=6",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if (run / "history.csv").exists() and len(_epochs(run)) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, "training finished before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before = _epochs(run)
    assert 2 <= len(done_before) < 6

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    started = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert started[0] != "Epoch 1/6", "resumed run started over"
    assert int(started[0].split()[1].split("/")[0]) >= len(done_before)
    assert set(_epochs(run)) == set(range(6))
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0


@pytest.mark.slow
def test_same_seed_same_run(tmp_path):
    from pipeline.train.config import load_config
    from pipeline.train.fit import train

    cfg = load_config(
        None, [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=1"]
    )
    a = train(cfg, str(DEMO), tmp_path / "a", verbose=0)
    b = train(cfg, str(DEMO), tmp_path / "b", verbose=0)
    assert (tmp_path / "a" / "history.csv").read_text() == (
        tmp_path / "b" / "history.csv"
    ).read_text()
    assert a["test"] == b["test"]


def test_resume_refuses_a_different_config(tiny_run):
    from pipeline.train.config import ConfigError, load_config
    from pipeline.train.fit import train

    with pytest.raises(ConfigError, match="different config"):
        train(load_config(None, TINY + ["model.units=[8]"]), str(DEMO), tiny_run, verbose=0)


@pytest.mark.slow
def test_bad_config_fails_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: gru\n  unitz: [8]\n")
    out = tmp_path / "run"
    result = subprocess.run(
        TRAIN + ["--config", str(bad), "--data", str(DEMO), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown config key: model.unitz" in result.stderr
    assert not out.exists()
    result = subprocess.run(
        TRAIN + ["--data", str(DEMO), "--out", str(out), "train.epochs=many"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "train.epochs: expected int" in result.stderr


@pytest.mark.slow
def test_training_on_custom_words_uses_folder_names(demo_data, tmp_path):
    import shutil

    from pipeline.train.config import load_config
    from pipeline.train.fit import train

    data = tmp_path / "my_words"
    for word in ("on", "off"):
        (data / word).mkdir(parents=True)
        for i, clip in enumerate(sorted((demo_data / word).glob("*.wav"))):
            shutil.copy(clip, data / word / f"take{i}.wav")  # no speaker prefix: split by file
    metrics = train(
        load_config(None, TINY + ["data.validation_percent=25", "data.testing_percent=25"]),
        str(data),
        tmp_path / "run",
        verbose=0,
    )
    assert (tmp_path / "run" / "labels.txt").read_text().split() == ["_silence_", "off", "on"]
    assert metrics["validation"]["n"] > 0


def test_resumed_run_never_overwrites_a_better_model(tmp_path):
    """A resumed run's first epoch is compared with the best epoch saved before the kill."""
    import keras

    from pipeline.train.fit import BestCheckpoint

    path = tmp_path / "model.keras"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    before = BestCheckpoint(path)
    before.set_model(model)
    before.on_epoch_end(0, {"val_accuracy": 0.9})
    saved = path.read_bytes()

    model.layers[0].set_weights([w + 1 for w in model.layers[0].get_weights()])
    after = BestCheckpoint(path)  # a new process after the kill
    after.set_model(model)
    after.on_epoch_end(1, {"val_accuracy": 0.5})
    assert path.read_bytes() == saved
    after.on_epoch_end(2, {"val_accuracy": 0.95})
    assert path.read_bytes() != saved


def test_a_tie_in_accuracy_goes_to_the_lower_validation_loss(tmp_path):
    import keras

    from pipeline.train.fit import BestCheckpoint

    path = tmp_path / "model.keras"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best = BestCheckpoint(path)
    best.set_model(model)
    best.on_epoch_end(0, {"val_accuracy": 0.9, "val_loss": 0.5})
    for epoch, loss in ((1, 0.7), (2, 0.3), (3, 0.4)):
        best.on_epoch_end(epoch, {"val_accuracy": 0.9, "val_loss": loss})
    assert json.loads((tmp_path / "best.json").read_text()) == {
        "val_accuracy": 0.9,
        "val_loss": 0.3,
        "epoch": 3,
    }
    again = BestCheckpoint(path)  # resumed: the loss of the saved epoch is kept too
    again.set_model(model)
    again.on_epoch_end(4, {"val_accuracy": 0.9, "val_loss": 0.35})
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 3


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_small_8khz_set_trains_on_its_band_and_resumes(tmp_path):
    import keras

    from pipeline.runtime.params import load_model_info
    from pipeline.train.config import load_config, load_yaml
    from pipeline.train.fit import Workers, train
    from pipeline.train.runs import load_run
    from tests.test_data import write_word_set

    class KillAfterAnEpoch(keras.callbacks.Callback):
        """Stops training once an epoch is saved, as a kill would."""

        def on_epoch_end(self, epoch, logs=None):
            raise _Killed

    data, run = str(write_word_set(tmp_path / "digits")), tmp_path / "run"
    cfg = load_config(None, TINY)
    with pytest.raises(_Killed):
        train(cfg, data, run, verbose=0, workers=Workers(callbacks=[KillAfterAnEpoch()]))
    assert _epochs(run) == [0]
    assert load_model_info(run)[0].fmax == 3800.0
    saved = load_yaml((run / "config.yaml").read_text())
    assert saved["front_end"]["fmax"] == 3800.0 and saved["augment"]["pitch"] == 2.0
    assert load_yaml((run / "request.yaml").read_text()) == {**cfg, "source": data}

    metrics = train(cfg, data, run, verbose=0)  # the same command resumes
    assert _epochs(run) == [0, 1] and metrics["validation"]["n"] > 0
    assert load_run(run)[1].fmax == 3800.0  # the model's own front end, as export reads it
    assert train(cfg, data, run, verbose=0) == metrics  # and then knows it is finished
