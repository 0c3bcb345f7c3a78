"""Shared fixtures: the demo sample and one tiny model trained on it once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "demo" / "speech_commands_sample"

TINY = ["seed=0", "model.units=[16,16]", "front_end.stack=2", "train.epochs=2",
        "train.batch_size=32", "train.patience=5"]


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
