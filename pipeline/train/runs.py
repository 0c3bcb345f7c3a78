"""Loading a trained model with the facts that travel with it (front end, labels)."""

from __future__ import annotations

from pathlib import Path

import keras

import models.logmel  # noqa: F401  (registers the custom layers for safe loading)
import models.specaugment  # noqa: F401
from pipeline.runtime.params import FrontEnd, load_model_info
from pipeline.train.config import load_yaml


def model_file(path: str | Path) -> Path:
    p = Path(path)
    return p / "model.keras" if p.is_dir() else p


def load_run(path: str | Path) -> tuple[keras.Model, FrontEnd, list[str]]:
    """A run directory or its model.keras -> (model, front end, labels)."""
    f = model_file(path)
    if not f.exists():
        raise FileNotFoundError(f"{f}: no trained model there")
    model = keras.models.load_model(f, safe_mode=True)
    fe, labels = load_model_info(f.parent)
    if model.get_layer("logmel").fe != fe:
        raise ValueError(f"{f.parent}/frontend.json does not match the model's front end")
    return model, fe, labels


def run_config(path: str | Path) -> dict:
    """The resolved training config saved beside the model (rebuilds it in stream mode)."""
    return load_yaml((model_file(path).parent / "config.yaml").read_text())


def build_like(path: str | Path, mode: str, batch_size: int | None = None) -> keras.Model:
    """The trained model rebuilt in 'clip' or 'stream' mode with a fixed batch, weights copied."""
    from models import build_from_config
    from models.layers import copy_weights

    model, fe, labels = load_run(path)
    twin = build_from_config(run_config(path), fe, len(labels), mode, batch_size)
    copy_weights(model, twin)
    return twin
