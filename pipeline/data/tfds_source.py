"""Speech Commands through tensorflow-datasets: the same interface as FolderSource.

Spec (after 'tfds:'):  NAME[@DATA_DIR][?manual_dir=DIR]

  speech_commands        TFDS's builder: downloads the two official archives when online,
                         or takes them from manual_dir (checksums verified, no network).
  speech_commands_local  the same builder code on archives in the same layout that are not
                         the official files (a subset, a re-pack, own recordings): read from
                         manual_dir without checksum pinning, never downloads.

DATA_DIR is TFDS's data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets); without
?manual_dir TFDS's default <DATA_DIR>/downloads/manual is searched. A prepared dataset is
reused as is, so TFDS acts as the cache of decoded examples between runs.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from pipeline.data.folders import extra_counts
from pipeline.data.sources import TFDS_PREFIX
from pipeline.runtime.audio import fit_to_length, resample
from pipeline.runtime.labels import SILENCE, UNKNOWN, silence_index
from pipeline.runtime.params import FrontEnd

AUTOTUNE = tf.data.AUTOTUNE
OFFICIAL = "speech_commands"
LOCAL = "speech_commands_local"
BALANCED_SPLITS = ("train", "validation")
_KEEP_ALL = np.iinfo(np.int64).max
_HASH_BUCKETS = 2**62

_SpeechCommands = tfds.builder_cls(OFFICIAL)
ARCHIVES = {url: info.filename for url, info in _SpeechCommands.url_infos.items()}


class _ManualArchives:
    """A download manager that resolves the builder's URLs to same-named files in
    manual_dir, so the builder's own split and example code runs without any download."""

    def __init__(self, dl_manager: tfds.download.DownloadManager):
        self._dl = dl_manager

    def download(self, urls: list[str]) -> list[Path]:
        return [self._dl.manual_dir / ARCHIVES[url] for url in urls]

    def iter_archive(self, path: Path) -> Iterator[tuple[str, BinaryIO]]:
        return self._dl.iter_archive(path)


class SpeechCommandsLocal(_SpeechCommands):
    """speech_commands built from archives in manual_dir that are not checksum-pinned."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {' and '.join(sorted(ARCHIVES.values()))} (Speech Commands layout) in manual_dir."
    )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return super()._split_generators(_ManualArchives(dl_manager))


def parse_spec(spec: str) -> tuple[str, str | None, Path | None]:
    """'NAME[@DATA_DIR][?manual_dir=DIR]' -> (name, data_dir, manual_dir)."""
    head, _, query = spec.partition("?")
    name, _, data_dir = head.partition("@")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(options) - {"manual_dir"}
    if unknown:
        raise ValueError(
            f"{TFDS_PREFIX}{spec}: unknown option(s) {', '.join(sorted(unknown))} (only manual_dir)"
        )
    if name not in (OFFICIAL, LOCAL):
        raise ValueError(
            f"{TFDS_PREFIX}{spec}: unsupported dataset {name!r} (use {OFFICIAL} or {LOCAL})"
        )
    manual = options.get("manual_dir", [""])[-1]
    return name, data_dir or None, Path(manual).expanduser() if manual else None


def prepared_builder(spec: str) -> tfds.core.DatasetBuilder:
    """The builder with its data prepared; fails in one line instead of letting TFDS retry
    downloads for minutes when offline without the archives."""
    name, data_dir, manual_dir = parse_spec(spec)
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    folder = manual_dir or Path(builder.data_dir_root) / "downloads" / "manual"
    missing = [f for f in sorted(ARCHIVES.values()) if not (folder / f).is_file()]
    if missing and (manual_dir or name == LOCAL):
        raise FileNotFoundError(f"{TFDS_PREFIX}{spec}: {', '.join(missing)} not found in {folder}")
    if missing:
        _check_reachable(spec, next(u for u, f in ARCHIVES.items() if f == missing[0]), folder)
    config = tfds.download.DownloadConfig(manual_dir=str(folder), try_download_gcs=False)
    try:
        builder.download_and_prepare(download_config=config)
    except NonMatchingChecksumError:
        raise ValueError(
            f"{TFDS_PREFIX}{spec}: the archives in {folder} are not the official ones "
            f"(checksum differs); use {TFDS_PREFIX}{LOCAL} for other archives"
        ) from None
    return builder


def _check_reachable(spec: str, url: str, folder: Path) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except OSError as exc:
        raise FileNotFoundError(
            f"{TFDS_PREFIX}{spec}: cannot download {url} ({type(exc).__name__}); offline, put "
            f"{' and '.join(sorted(ARCHIVES.values()))} in {folder} or add ?manual_dir=DIR"
        ) from None


def label_map(names: list[str], labels: list[str]) -> np.ndarray:
    """TFDS class index -> index in labels; words outside labels count as _unknown_."""
    index = {n: i for i, n in enumerate(labels)}
    out = []
    for n in names:
        if n not in index and UNKNOWN not in index:
            raise ValueError(f"TFDS class {n!r} is neither a label nor mappable to {UNKNOWN}")
        out.append(index.get(n, index.get(UNKNOWN)))
    return np.array(out, np.int32)


class TfdsSource:
    """Train and validation keep every command word and, like the folder source, only
    silence_fraction / unknown_fraction of _silence_ and _unknown_ (TFDS yields all of
    them: most of its training set is _unknown_); the test split is the official test set.
    The selection hashes each example's TFDS id with the seed, so it is the same in every
    pass and counts are exact. TFDS's _silence_ clips are real noise cuts; the training
    ones also serve as background noise for augmentation."""

    def __init__(
        self,
        spec: str,
        data_cfg: dict,
        fe: FrontEnd,
        seed: int = 0,
        labels: list[str] | None = None,
    ):
        self._builder = prepared_builder(spec)
        self.fe, self.seed = fe, seed
        info = self._builder.info
        names = info.features["label"].names
        self._rate = info.features["audio"].sample_rate
        # what adapt_to_data asks of a source: TFDS names no speakers; its splits are the
        # dataset's own, speaker-disjoint ones
        self.speakers: int | None = None
        self.split_rule = "the TFDS splits (speakers kept apart)"
        self.native_rate: int | None = self._rate
        if labels is None:
            tfds_words = [n for n in names if n not in (SILENCE, UNKNOWN)]
            words = data_cfg["words"] if data_cfg["words"] is not None else tfds_words
            extra = [w for w in words if w not in tfds_words]
            if extra:
                raise ValueError(
                    f"{TFDS_PREFIX}{spec}: no class for the word(s) {', '.join(extra)} "
                    f"(it has {', '.join(tfds_words)})"
                )
            labels = [SILENCE, UNKNOWN, *words]
        self.labels = list(labels)
        self._to_label = label_map(names, self.labels)
        self._thresholds: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        noise: list[np.ndarray] = []
        for split in map(str, info.splits):
            self._scan(split, data_cfg, noise if split == "train" else None)
        self.noise = np.stack(noise) if noise else np.zeros((0, fe.clip_samples), np.float32)

    def evaluation_splits(self) -> list[str]:
        return ["test"]

    def count(self, split: str) -> int:
        return self._counts.get(split, 0)

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def waves(self, split: str) -> tf.data.Dataset:
        thresholds = tf.constant(self._thresholds[split])
        ds = self._examples(split).filter(lambda label, h, audio: h <= tf.gather(thresholds, label))
        return ds.map(
            lambda label, h, audio: (self._wave(audio), label),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        ).cache()

    def _examples(self, split: str) -> tf.data.Dataset:
        """(label index, selection hash, int16 audio) in the prepared order."""
        table = tf.constant(self._to_label)
        salt = tf.constant(f"{self.seed}:")
        ds = self._builder.as_dataset(
            split=split, shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        return ds.map(
            lambda x: (
                tf.gather(table, x["label"]),
                tf.strings.to_hash_bucket_fast(salt + x["tfds_id"], _HASH_BUCKETS),
                x["audio"],
            ),
            num_parallel_calls=AUTOTUNE,
        )

    def _to_wave(self, audio: np.ndarray) -> np.ndarray:
        wave = resample(audio.astype(np.float32) / 32768.0, self._rate, self.fe.sample_rate)
        return fit_to_length(wave, self.fe.clip_samples)

    def _wave(self, audio: tf.Tensor) -> tf.Tensor:
        wave = tf.numpy_function(self._to_wave, [audio], tf.float32)
        return tf.ensure_shape(wave, [self.fe.clip_samples])

    def _scan(self, split: str, cfg: dict, noise: list[np.ndarray] | None) -> None:
        """One pass over labels and hashes; fixes the kept set and collects noise."""
        silence = silence_index(self.labels)
        ds = self._examples(split).map(
            lambda label, h, audio: (
                label,
                h,
                audio[: tf.where(label == silence, tf.size(audio), 0)],
            )
        )
        labels, hashes = [], []
        for label, h, audio in ds.ragged_batch(4096).as_numpy_iterator():
            labels.append(label)
            hashes.append(h)
            if noise is not None:
                noise += [self._to_wave(a) for a in audio if len(a)]
        label = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        h = np.concatenate(hashes) if hashes else np.zeros(0, np.int64)
        thresholds = np.full(len(self.labels), _KEEP_ALL, np.int64)
        if split in BALANCED_SPLITS:
            extra = [self.labels.index(n) for n in (SILENCE, UNKNOWN) if n in self.labels]
            keeps = extra_counts(int(np.isin(label, extra, invert=True).sum()), cfg)
            for i in extra:
                pool = np.sort(h[label == i])
                keep = keeps[self.labels[i]]
                if keep < len(pool):
                    thresholds[i] = pool[keep - 1] if keep else -1
        self._thresholds[split] = thresholds
        self._counts[split] = int((h <= thresholds[label]).sum())
