"""The label names with a fixed meaning in every model and data set."""

from __future__ import annotations

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
NOISE_DIR = "_background_noise_"  # a data folder of long noise recordings, not a label
IGNORED = (SILENCE, UNKNOWN)  # labels that never fire as a command


def silence_index(labels: list[str]) -> int:
    """Index of _silence_ in labels, -1 when the model has none."""
    return labels.index(SILENCE) if SILENCE in labels else -1
