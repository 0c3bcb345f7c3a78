"""tf.data pipelines: parallel decode, cache, augment, batch, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.data.augment import augment, make_silence, mixup
from pipeline.data.folders import load_clip
from pipeline.runtime.audio import AudioError
from pipeline.runtime.params import FrontEnd

AUTOTUNE = tf.data.AUTOTUNE


def decoded(examples: list[tuple[str, int]], fe: FrontEnd) -> tf.data.Dataset:
    """(waveform, label) for each example; files that fail to decode are reported and
    dropped, so one broken clip never stops a training run."""

    def load(path):
        try:
            return load_clip(path.decode(), fe), True
        except AudioError as exc:
            print(f"warning: skipping {exc}", flush=True)
            return np.zeros(fe.clip_samples, np.float32), False

    def tf_load(path, label):
        wave, ok = tf.numpy_function(load, [path], (tf.float32, tf.bool))
        return tf.ensure_shape(wave, [fe.clip_samples]), label, ok

    paths = [p for p, _ in examples]
    labels = np.array([l for _, l in examples], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(tf_load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.filter(_is_ok).map(_drop_flag).cache()


def _is_ok(wave, label, ok):
    return ok


def _drop_flag(wave, label, ok):
    return wave, label


def _seeds(seed: int) -> tf.data.Dataset:
    return tf.data.Dataset.random(seed=seed).map(lambda s: tf.cast(s % (2**31), tf.int32)).batch(2)


def training_batches(
    waves: tf.data.Dataset,
    size: int,
    fe: FrontEnd,
    noise: np.ndarray,
    aug_cfg: dict,
    silence_index: int,
    n_classes: int,
    batch_size: int,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented batches of (waveform, one-hot label)."""
    noise_t = tf.constant(noise)

    def aug(pair, s):
        wave, label = pair
        return (
            augment(wave, label == silence_index, noise_t, fe, aug_cfg, s),
            tf.one_hot(label, n_classes),
        )

    def mix(batch, s):
        return mixup(*batch, aug_cfg["mixup"], s)

    ds = waves.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, _seeds(seed))).map(aug, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size)
    if aug_cfg["mixup"]:
        ds = tf.data.Dataset.zip((ds, _seeds(seed + 1))).map(mix, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def eval_batches(
    waves: tf.data.Dataset,
    fe: FrontEnd,
    noise: np.ndarray,
    silence_dbfs: list[float],
    silence_index: int,
    batch_size: int,
    seed: int,
) -> tf.data.Dataset:
    """Generated _silence_ clips get a fixed noise cut per position, so scores repeat."""
    noise_t = tf.constant(noise)

    def fill(i, pair):
        wave, label = pair
        s = tf.stack([tf.constant(seed, tf.int32), tf.cast(i, tf.int32)])
        is_gen = (label == silence_index) & tf.reduce_all(wave == 0)
        return tf.where(is_gen, make_silence(noise_t, fe, silence_dbfs, s), wave), label

    return (
        waves.enumerate()
        .map(fill, num_parallel_calls=AUTOTUNE)
        .batch(batch_size)
        .prefetch(AUTOTUNE)
    )
