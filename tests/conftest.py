"""Shared fixtures: the demo sample, one tiny model trained on it and its export, each made
once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "demo" / "speech_commands_sample"

TINY = [
    "seed=0",
    "model.units=[16,16]",
    "front_end.stack=2",
    "train.epochs=2",
    "train.batch_size=32",
    "train.patience=5",
]


@pytest.fixture(scope="session")
def demo_data() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A 2-layer GRU(16) trained for two epochs on the demo sample: a real, small run dir."""
    from pipeline.train.config import load_config
    from pipeline.train.fit import train

    run = tmp_path_factory.mktemp("tiny_run")
    train(load_config(None, TINY), str(DEMO), run, verbose=0)
    return run


@pytest.fixture(scope="session")
def pretrained() -> Path:
    """The bundled export (models/pretrained): a real model that labels demo words right."""
    from pipeline.runtime.recognizer import pretrained_dir

    return pretrained_dir()


def held_out_clip(word: str, i: int = 0) -> Path:
    """The i-th (0 or 1) demo test clip of a command word: its speaker is in the test split
    of the data the bundled model was trained on, so it never heard it."""
    listed = [
        rel for rel in (DEMO / "testing_list.txt").read_text().split() if rel.split("/")[0] == word
    ]
    return DEMO / listed[i]


STREAM_BATCH = 5  # lanes of stream_batch_float.tflite in the test export
CLIP_BATCH = 8  # clips per call of model_batch_float.tflite in the test export


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """Every exported file of the tiny run, written by the real exporter."""
    from pipeline.export.export import export

    out = tmp_path_factory.mktemp("tiny_export")
    export(
        tiny_run,
        out,
        batch_size=CLIP_BATCH,
        calibration_clips=40,
        log=lambda line: None,
        stream_batch=STREAM_BATCH,
    )
    return out


def demo_clips(n: int = 12) -> np.ndarray:
    """n one-second demo clips spread over the words, at 16 kHz."""
    from pipeline.runtime.audio import fit_to_length, load_audio

    files = sorted(p for p in DEMO.glob("*/*.wav") if p.parent.name != "_background_noise_")
    pick = files[:: max(1, len(files) // n)][:n]
    return np.stack([fit_to_length(load_audio(f, 16000), 16000) for f in pick])


def pytest_collection_modifyitems(items):
    """Tests that train or export (through the tiny run's fixtures) are slow."""
    for item in items:
        if {"tiny_run", "tiny_export"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
