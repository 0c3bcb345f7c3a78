"""Model registry: architectures built by name from a config section.

Every model is written once and built in three modes with the same layer names, so
weights move between them: 'clip' (raw clip in, probabilities out: training, evaluation,
clip export), 'sequence' (audio of any length in, probabilities at every step out: training
on long windows as the model will stream) and 'stream' (one hop plus state in,
probabilities plus new state out).
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
MODES = ("clip", "sequence", "stream")


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
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
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
