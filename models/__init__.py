"""Model registry: architectures are built by name from a config section."""
from __future__ import annotations

from typing import Callable

import keras

from pipeline.params import FrontEnd

_REGISTRY: dict[str, Callable[..., keras.Model]] = {}


def register(name: str):
    def wrap(fn):
        _REGISTRY[name] = fn
        return fn
    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, front_end: FrontEnd, n_classes: int, mode: str = "clip",
                batch_size: int | None = None, **options) -> keras.Model:
    """mode 'clip': raw clip in, probabilities out. mode 'stream': one hop plus state in,
    probabilities plus new state out (same layer names, so clip weights load into it)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
    if mode not in ("clip", "stream"):
        raise ValueError(f"mode must be 'clip' or 'stream', got {mode!r}")
    return _REGISTRY[name](front_end, n_classes, mode=mode, batch_size=batch_size, **options)


def build_from_config(cfg: dict, front_end: FrontEnd, n_classes: int, mode: str = "clip",
                      batch_size: int | None = None) -> keras.Model:
    """The model a resolved training config describes (its model section plus SpecAugment)."""
    options = {k: v for k, v in cfg["model"].items() if k != "name"}
    options["units"] = tuple(options["units"])
    options["spec_augment"] = cfg["augment"]["spec_augment"]
    return build_model(cfg["model"]["name"], front_end, n_classes, mode, batch_size, **options)


from models import crnn, rnn  # noqa: E402,F401  (registration side effects)
