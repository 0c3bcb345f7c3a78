"""Model registry: architectures built by name from a config section.

Every model is written once and built in two modes, 'clip' (raw clip in, probabilities
out: training, evaluation, clip export) and 'stream' (one hop plus state in, probabilities
plus new state out), with the same layer names so weights move between them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras

from models.crnn import crnn
from models.rnn import stacked
from pipeline.runtime.params import FrontEnd

REGISTRY: dict[str, Callable[..., keras.Model]] = {
    "rnn": functools.partial(stacked, cell="rnn"),
    "lstm": functools.partial(stacked, cell="lstm"),
    "gru": functools.partial(stacked, cell="gru"),
    "crnn": crnn,
}
MODES = ("clip", "stream")


def names() -> list[str]:
    return sorted(REGISTRY)


def build_model(
    name: str,
    front_end: FrontEnd,
    n_classes: int,
    mode: str = "clip",
    batch_size: int | None = None,
    **options,
) -> keras.Model:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
    if mode not in MODES:
        raise ValueError(f"mode must be 'clip' or 'stream', got {mode!r}")
    return REGISTRY[name](front_end, n_classes, mode=mode, batch_size=batch_size, **options)


def build_from_config(
    cfg: dict,
    front_end: FrontEnd,
    n_classes: int,
    mode: str = "clip",
    batch_size: int | None = None,
) -> keras.Model:
    """The model a resolved training config describes (its model section plus SpecAugment)."""
    options = {k: v for k, v in cfg["model"].items() if k != "name"}
    options["units"] = tuple(options["units"])
    options["spec_augment"] = cfg["augment"]["spec_augment"]
    return build_model(cfg["model"]["name"], front_end, n_classes, mode, batch_size, **options)
