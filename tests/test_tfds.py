"""The TFDS source on archives built here in the official Speech Commands layouts.

Every test runs with outbound sockets refused, so nothing can reach the network even by
mistake; TFDS would otherwise retry a failed download for minutes.
"""

from __future__ import annotations

import math
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.folders import NOISE_DIR, SILENCE, UNKNOWN
from pipeline.data.sources import open_source
from pipeline.data.tfds_source import ARCHIVES, LOCAL, parse_spec
from pipeline.runtime.params import FrontEnd
from pipeline.train.config import COMMANDS, DEFAULTS

TRAIN_ARCHIVE = "speech_commands_v0.02.tar.gz"
TEST_ARCHIVE = "speech_commands_test_set_v0.02.tar.gz"
FE = FrontEnd(sample_rate=8000, fmax=3800, stack=2)  # not TFDS's 16 kHz: exercises resampling


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


@pytest.fixture(scope="session")
def archives(tmp_path_factory, demo_data) -> Path:
    """Both archives: the training archive holds the demo folder as is (paths under ./);
    the test-set archive holds the demo's testing_list clips in the 12 class folders, with
    _silence_ cut from the noise as in the official one."""
    folder = tmp_path_factory.mktemp("archives")
    with tarfile.open(folder / TRAIN_ARCHIVE, "w:gz") as tar:
        tar.add(demo_data, arcname=".")
    staged = tmp_path_factory.mktemp("test_set")
    for rel in _lines(demo_data / "testing_list.txt"):
        word, name = rel.split("/")
        cls = word if word in COMMANDS else UNKNOWN
        (staged / cls).mkdir(exist_ok=True)
        (staged / cls / f"{word}_{name}").write_bytes((demo_data / rel).read_bytes())
    (staged / SILENCE).mkdir()
    for i, noise in enumerate(sorted((demo_data / NOISE_DIR).glob("*.wav"))[:3]):
        audio, rate = sf.read(noise, dtype="int16")
        sf.write(staged / SILENCE / f"{noise.stem}_{i}.wav", audio[:rate], rate, "PCM_16")
    with tarfile.open(folder / TEST_ARCHIVE, "w:gz") as tar:
        tar.add(staged, arcname=".")
    return folder


@pytest.fixture(scope="session")
def local_spec(archives, tmp_path_factory) -> str:
    return f"{LOCAL}@{tmp_path_factory.mktemp('tfds')}?manual_dir={archives}"


def _expected_counts(demo_data: Path, cfg: dict) -> dict[str, int]:
    """The folder source's balancing rule applied to what TFDS yields per split."""
    listed = {s: set(_lines(demo_data / f"{s}_list.txt")) for s in ("validation", "testing")}
    known = {"train": 0, "validation": 0}
    unknown = {"train": 0, "validation": 0}
    for wav in sorted(demo_data.glob("*/*.wav")):
        rel = f"{wav.parent.name}/{wav.name}"
        if wav.parent.name == NOISE_DIR or rel in listed["testing"]:
            continue
        split = "validation" if rel in listed["validation"] else "train"
        if wav.parent.name in cfg["words"]:
            known[split] += 1
        else:
            unknown[split] += 1
    cuts = {"train": 0, "validation": 0}
    for noise in (demo_data / NOISE_DIR).glob("*.wav"):  # 1 s cuts every 0.5 s
        n = len(range(0, sf.info(noise).frames - 16000, 8000))
        cuts["validation" if noise.name == "running_tap.wav" else "train"] += n
    out = {}
    for split in known:
        total = known[split] / (1 - cfg["silence_fraction"] - cfg["unknown_fraction"])
        out[split] = (
            known[split]
            + min(unknown[split], math.ceil(total * cfg["unknown_fraction"]))
            + min(cuts[split], math.ceil(total * cfg["silence_fraction"]))
        )
    out["test"] = len(_lines(demo_data / "testing_list.txt")) + 3
    return out


def test_archive_names_are_the_registered_ones():
    assert sorted(ARCHIVES.values()) == sorted([TRAIN_ARCHIVE, TEST_ARCHIVE])


def test_spec_parsing():
    assert parse_spec("speech_commands") == ("speech_commands", None, None)
    assert parse_spec("speech_commands@/d?manual_dir=/m") == ("speech_commands", "/d", Path("/m"))
    with pytest.raises(ValueError, match="unsupported dataset"):
        parse_spec("mnist")
    with pytest.raises(ValueError, match="unknown option"):
        parse_spec("speech_commands?download_dir=/x")


def test_local_archives_through_tfds(local_spec, demo_data):
    cfg = DEFAULTS["data"]
    src = open_source(f"tfds:{local_spec}", cfg, FE, seed=0)
    assert src.labels == [SILENCE, UNKNOWN, *COMMANDS]
    assert src.counts() == _expected_counts(demo_data, cfg)
    assert src.noise.shape == (20, FE.clip_samples) and src.noise.dtype == np.float32
    assert np.abs(src.noise).max() > 0

    for split in ("train", "validation", "test"):
        pairs = list(src.waves(split).as_numpy_iterator())
        assert len(pairs) == src.count(split)
        waves = np.stack([w for w, _ in pairs])
        labels = np.array([l for _, l in pairs])
        assert waves.shape == (src.count(split), FE.clip_samples) and waves.dtype == np.float32
        assert labels.dtype == np.int32 and set(labels) <= set(range(len(src.labels)))
        assert np.abs(waves).max(axis=1).min() > 0  # silence is real noise, not zeros
    test_labels = [src.labels[l] for _, l in src.waves("test").as_numpy_iterator()]
    assert test_labels.count(SILENCE) == 3
    assert test_labels.count(UNKNOWN) == sum(
        r.split("/")[0] not in COMMANDS for r in _lines(demo_data / "testing_list.txt")
    )

    again = open_source(f"tfds:{local_spec}", cfg, FE, seed=0)  # reuses the prepared data
    assert again.counts() == src.counts()
    assert [l for _, l in again.waves("train").as_numpy_iterator()] == [
        l for _, l in src.waves("train").as_numpy_iterator()
    ]


def test_word_subset_and_model_label_order(local_spec, demo_data):
    cfg = {**DEFAULTS["data"], "words": ["yes", "no"]}
    src = open_source(f"tfds:{local_spec}", cfg, FE, seed=1)
    assert src.labels == [SILENCE, UNKNOWN, "yes", "no"]
    test = [src.labels[l] for _, l in src.waves("test").as_numpy_iterator()]
    words = [r.split("/")[0] for r in _lines(demo_data / "testing_list.txt")]
    assert test.count("yes") == words.count("yes")
    assert test.count(UNKNOWN) == sum(w not in cfg["words"] for w in words)

    order = ["no", "yes", UNKNOWN, SILENCE]
    evaluated = open_source(f"tfds:{local_spec}", cfg, FE, labels=order)
    assert evaluated.labels == order
    assert sorted(
        evaluated.labels[l] for _, l in evaluated.waves("test").as_numpy_iterator()
    ) == sorted(test)

    with pytest.raises(ValueError, match="no class for the word"):
        open_source(f"tfds:{local_spec}", {**cfg, "words": ["yes", "bed"]}, FE)


@pytest.mark.slow
def test_training_run_from_tfds(local_spec, tmp_path):
    from conftest import TINY

    from pipeline.train.config import load_config
    from pipeline.train.fit import train

    metrics = train(
        load_config(None, [*TINY, "train.epochs=1"]),
        f"tfds:{local_spec}",
        tmp_path / "run",
        verbose=0,
    )
    src = open_source(f"tfds:{local_spec}", DEFAULTS["data"], FrontEnd())
    assert metrics["counts"] == src.counts()
    assert metrics["test"]["n"] == src.count("test")
    assert (tmp_path / "run" / "labels.txt").read_text().split() == src.labels


def test_official_builder_rejects_archives_that_are_not_official(archives, tmp_path):
    with pytest.raises(ValueError, match="not the official ones"):
        open_source(f"tfds:speech_commands@{tmp_path}?manual_dir={archives}", DEFAULTS["data"], FE)


def test_missing_archives_fail_fast(tmp_path):
    start = time.time()
    with pytest.raises(FileNotFoundError, match=TRAIN_ARCHIVE):
        open_source(f"tfds:speech_commands@{tmp_path}?manual_dir={tmp_path}", DEFAULTS["data"], FE)
    with pytest.raises(FileNotFoundError, match="not found in"):
        open_source(f"tfds:{LOCAL}@{tmp_path}", DEFAULTS["data"], FE)
    with pytest.raises(FileNotFoundError, match="cannot download"):
        open_source(f"tfds:speech_commands@{tmp_path}", DEFAULTS["data"], FE)
    assert time.time() - start < 30
