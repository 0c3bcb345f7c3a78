"""One interface over local folders and tensorflow-datasets: labels, noise and, per split,
a cached tf.data of (waveform, label)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.data import Dataset, load_dataset, load_noise
from pipeline.inputs import decoded
from pipeline.params import FrontEnd

TFDS_PREFIX = "tfds:"


class FolderSource:
    def __init__(self, dataset: Dataset, fe: FrontEnd):
        self.dataset, self.fe = dataset, fe
        self.labels = dataset.labels
        self.noise = load_noise(dataset.noise_files, fe)

    def count(self, split: str) -> int:
        return len(self.dataset.splits.get(split, []))

    def counts(self) -> dict[str, int]:
        return self.dataset.counts()

    def waves(self, split: str) -> tf.data.Dataset:
        return decoded(self.dataset.splits[split], self.fe)


def open_source(source: str | Path, data_cfg: dict, fe: FrontEnd, seed: int = 0,
                labels: list[str] | None = None):
    """A local folder (any supported layout) or 'tfds:NAME[@DATA_DIR][?manual_dir=DIR]'."""
    if str(source).startswith(TFDS_PREFIX):
        from pipeline.tfds_source import TfdsSource

        return TfdsSource(str(source)[len(TFDS_PREFIX):], data_cfg, fe, seed, labels)
    return FolderSource(load_dataset(source, data_cfg, seed, labels), fe)
