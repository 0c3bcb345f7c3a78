"""Waveform augmentation inside tf.data, with stateless random ops so runs repeat.

SpecAugment lives in the model (pipeline/features.py) because it acts on features.
"""
from __future__ import annotations

import tensorflow as tf

from pipeline.runtime.params import FrontEnd


def _uniform(seed, salt: int, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed=seed + [0, salt], minval=low, maxval=high)


def noise_crop(noise: tf.Tensor, fe: FrontEnd, seed) -> tf.Tensor:
    """A random clip-length cut of a random background-noise file."""
    which = tf.random.stateless_uniform([], seed=seed + [0, 1], maxval=tf.shape(noise)[0],
                                        dtype=tf.int32)
    start = tf.random.stateless_uniform([], seed=seed + [0, 2],
                                        maxval=tf.shape(noise)[1] - fe.clip_samples + 1,
                                        dtype=tf.int32)
    return noise[which, start:start + fe.clip_samples]


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)


def make_silence(noise, fe: FrontEnd, dbfs: tuple[float, float], seed) -> tf.Tensor:
    """A noise cut at an RMS level drawn uniformly in dBFS: levels are set in absolute
    terms so they do not depend on how loud the noise recordings happen to be."""
    if noise.shape[0] == 0:
        return tf.zeros([fe.clip_samples])
    crop = noise_crop(noise, fe, seed)
    return crop * (10 ** (_uniform(seed, 3, *dbfs) / 20) / _rms(crop))


def augment(wave, is_silence, noise, fe: FrontEnd, cfg: dict, seed) -> tf.Tensor:
    """Speed perturbation, time shift, gain and background-noise mixing for one clip."""
    n = fe.clip_samples
    if cfg["speed"]:
        wave = change_speed(wave, _uniform(seed, 9, 1 - cfg["speed"], 1 + cfg["speed"]), n)
    max_shift = int(cfg["time_shift_ms"] * fe.sample_rate / 1000)
    if max_shift:
        shift = tf.random.stateless_uniform([], seed=seed + [0, 4], minval=-max_shift,
                                            maxval=max_shift + 1, dtype=tf.int32)
        padded = tf.pad(wave, [[max_shift, max_shift]])
        wave = padded[max_shift - shift:max_shift - shift + n]
    if cfg["gain_db"]:
        wave = wave * 10 ** (_uniform(seed, 5, -cfg["gain_db"], cfg["gain_db"]) / 20)
    if noise.shape[0]:
        crop = noise_crop(noise, fe, seed + [0, 6])
        snr = _uniform(seed, 7, *cfg["noise_snr_db"])
        mixed = wave + crop * (_rms(wave) / (_rms(crop) * 10 ** (snr / 20)))
        add = _uniform(seed, 8) < cfg["noise_prob"]
        wave = tf.where(add, mixed, wave)
        wave = tf.where(is_silence, make_silence(noise, fe, cfg["silence_dbfs"], seed), wave)
    return tf.clip_by_value(wave, -1.0, 1.0)


def change_speed(wave, factor, n: int):
    """Play the clip factor times faster (tempo and pitch together, like sox `speed`),
    by linear interpolation, then centre-crop or pad back to n samples."""
    length = tf.cast(tf.round(n / factor), tf.int32)
    resized = tf.image.resize(wave[:, None, None], tf.stack([length, 1]))[:, 0, 0]
    extra = length - n
    start = tf.maximum(extra // 2, 0)
    pad = tf.maximum(-extra, 0)
    resized = tf.pad(resized[start:start + n], [[pad // 2, pad - pad // 2]])
    return tf.ensure_shape(resized, [n])


def mixup(x, y, alpha: float, seed):
    """Blend each example of a batch with a shuffled partner (Zhang et al. 2018)."""
    a = tf.random.stateless_gamma([], seed=seed + [0, 10], alpha=alpha)
    b = tf.random.stateless_gamma([], seed=seed + [0, 11], alpha=alpha)
    lam = a / (a + b)
    perm = tf.argsort(tf.random.stateless_uniform([tf.shape(x)[0]], seed=seed + [0, 12]))
    return lam * x + (1 - lam) * tf.gather(x, perm), lam * y + (1 - lam) * tf.gather(y, perm)
