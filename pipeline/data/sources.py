"""One interface over local folders and tensorflow-datasets: labels, noise and, per split,
a cached tf.data of (waveform, label)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.data.folders import Dataset, audio_files, load_dataset, load_noise
from pipeline.data.tfdata import decoded, eval_batches
from pipeline.runtime.labels import UNKNOWN, silence_index
from pipeline.runtime.params import FrontEnd
from pipeline.train.config import ConfigError

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

    @property
    def speakers(self) -> int | None:
        return self.dataset.speakers

    @property
    def split_rule(self) -> str:
        return self.dataset.split_rule

    @property
    def native_rate(self) -> int | None:
        return self.dataset.native_rate

    def waves(self, split: str) -> tf.data.Dataset:
        return decoded(self.dataset.splits[split], self.fe)

    def evaluation_splits(self) -> list[str]:
        """What a model is scored on: the test split of a Speech Commands archive folder,
        every clip of a test-layout or folder-per-label set."""
        if self.dataset.layout == "speech_commands":
            return ["test"]
        return [s for s in ("train", "validation", "test") if self.count(s)]


def source_exists(source: str | Path) -> bool:
    """A TFDS spec (checked when opened) or an existing local path."""
    return str(source).startswith(TFDS_PREFIX) or Path(source).exists()


def open_source(
    source: str | Path, data_cfg: dict, fe: FrontEnd, seed: int = 0, labels: list[str] | None = None
):
    """A local folder (any supported layout) or 'tfds:NAME[@DATA_DIR][?manual_dir=DIR]'.

    data.synthetic and data.negatives add to the training split only: evaluation and export
    pass the model's labels and score or calibrate on the set's own clips."""
    synthetic = data_cfg.get("synthetic") and labels is None
    negatives = data_cfg.get("negatives") if labels is None else None
    if str(source).startswith(TFDS_PREFIX):
        if synthetic:
            raise ConfigError("data.synthetic: TTS takes are added to local folder sets only")
        if negatives:
            raise ConfigError("data.negatives: added to local folder sets only")
        from pipeline.data.tfds_source import TfdsSource

        return TfdsSource(str(source)[len(TFDS_PREFIX) :], data_cfg, fe, seed, labels)
    ds = load_dataset(source, data_cfg, seed, labels)
    if synthetic:
        from pipeline.data.synthetic_words import add_synthetic

        ds = add_synthetic(ds, data_cfg, seed)
    if negatives:
        ds = add_negatives(ds, negatives)
    return FolderSource(ds, fe)


def add_negatives(ds: Dataset, folders: list[str]) -> Dataset:
    """ds with every audio file under folders added to its training split as _unknown_:
    recordings known to hold no command (mined false triggers) are each worth training on,
    so none is left out as the balanced sample of other words leaves some out."""
    if UNKNOWN not in ds.labels:
        raise ConfigError(f"data.negatives: the labels have no {UNKNOWN} class to add them to")
    files: list[str] = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise ConfigError(f"data.negatives: {folder}: folder not found")
        found = audio_files(Path(folder))
        if not found:
            raise ConfigError(f"data.negatives: {folder}: no audio files there")
        files += [str(f) for f in found]
    unknown = ds.labels.index(UNKNOWN)
    train = ds.splits.get("train", []) + [(f, unknown) for f in dict.fromkeys(files)]
    return replace(ds, splits={**ds.splits, "train": train})


def evaluation_batches(
    source, waves: tf.data.Dataset, cfg: dict, seed: int, batch_size: int = 64
) -> tf.data.Dataset:
    """Batches prepared as every evaluation prepares them: generated _silence_ clips get a
    fixed noise cut at the level the run's config sets."""
    return eval_batches(
        waves,
        source.fe,
        source.noise,
        cfg["augment"]["silence_dbfs"],
        silence_index(source.labels),
        batch_size,
        seed,
    )


def as_arrays(batches: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All (clips, labels) of a batched dataset; empty arrays when it has none."""
    xs, ys = [], []
    for x, y in batches:
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int32)
    return np.concatenate(xs), np.concatenate(ys)
