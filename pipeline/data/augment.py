"""Waveform augmentation inside tf.data, with stateless random ops so runs repeat.

SpecAugment lives in the model (models/specaugment.py) because it acts on features.
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.runtime.params import FrontEnd

# Every random draw of one example gets its own seed, folded in from the example's seed
# with a distinct number: draws never share a seed, within an example or across examples.
PURPOSES = {
    name: i
    for i, name in enumerate(
        (
            "noise_file",
            "noise_start",
            "silence_level",
            "shift",
            "gain",
            "noise",
            "snr",
            "noise_on",
            "speed",
            "mix_a",
            "mix_b",
            "mix_perm",
            "silence",
            "placement",
            "background",
        ),
        start=1,
    )
}


def draw_seed(seed, purpose: str) -> tf.Tensor:
    """The seed of one named draw, derived from an example's (or batch's) seed."""
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), PURPOSES[purpose])


def _uniform(seed, purpose: str, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed=draw_seed(seed, purpose), minval=low, maxval=high)


def noise_crop(noise: tf.Tensor, fe: FrontEnd, seed, length: int | None = None) -> tf.Tensor:
    """A random cut of a random background-noise file, a clip long unless length says."""
    length = length or fe.clip_samples
    which = tf.random.stateless_uniform(
        [], seed=draw_seed(seed, "noise_file"), maxval=tf.shape(noise)[0], dtype=tf.int32
    )
    start = tf.random.stateless_uniform(
        [],
        seed=draw_seed(seed, "noise_start"),
        maxval=tf.shape(noise)[1] - length + 1,
        dtype=tf.int32,
    )
    return noise[which, start : start + length]


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)


def make_silence(noise, fe: FrontEnd, dbfs: tuple[float, float], seed) -> tf.Tensor:
    """A noise cut at an RMS level drawn uniformly in dBFS: levels are set in absolute
    terms so they do not depend on how loud the noise recordings happen to be."""
    if noise.shape[0] == 0:
        return tf.zeros([fe.clip_samples])
    crop = noise_crop(noise, fe, seed)
    return crop * (10 ** (_uniform(seed, "silence_level", *dbfs) / 20) / _rms(crop))


def augment(wave, is_silence, noise, fe: FrontEnd, cfg: dict, seed) -> tf.Tensor:
    """Speed perturbation, time shift, gain and background-noise mixing for one clip."""
    n = fe.clip_samples
    if cfg["speed"]:
        wave = change_speed(wave, _uniform(seed, "speed", 1 - cfg["speed"], 1 + cfg["speed"]), n)
    max_shift = int(cfg["time_shift_ms"] * fe.sample_rate / 1000)
    if max_shift:
        shift = tf.random.stateless_uniform(
            [],
            seed=draw_seed(seed, "shift"),
            minval=-max_shift,
            maxval=max_shift + 1,
            dtype=tf.int32,
        )
        padded = tf.pad(wave, [[max_shift, max_shift]])
        wave = padded[max_shift - shift : max_shift - shift + n]
    if cfg["gain_db"]:
        wave = wave * 10 ** (_uniform(seed, "gain", -cfg["gain_db"], cfg["gain_db"]) / 20)
    if noise.shape[0]:
        crop = noise_crop(noise, fe, draw_seed(seed, "noise"))
        snr = _uniform(seed, "snr", *cfg["noise_snr_db"])
        mixed = wave + crop * (_rms(wave) / (_rms(crop) * 10 ** (snr / 20)))
        add = _uniform(seed, "noise_on") < cfg["noise_prob"]
        wave = tf.where(add, mixed, wave)
        wave = tf.where(
            is_silence,
            make_silence(noise, fe, cfg["silence_dbfs"], draw_seed(seed, "silence")),
            wave,
        )
    return tf.clip_by_value(wave, -1.0, 1.0)


def change_speed(wave, factor, n: int):
    """Play the clip factor times faster (tempo and pitch together, like sox `speed`),
    by linear interpolation, then centre-crop or pad back to n samples."""
    length = tf.cast(tf.round(n / factor), tf.int32)
    resized = tf.image.resize(wave[:, None, None], tf.stack([length, 1]))[:, 0, 0]
    extra = length - n
    start = tf.maximum(extra // 2, 0)
    pad = tf.maximum(-extra, 0)
    resized = tf.pad(resized[start : start + n], [[pad // 2, pad - pad // 2]])
    return tf.ensure_shape(resized, [n])


def mixup(x, y, alpha: float, seed):
    """Blend each example of a batch with a shuffled partner (Zhang et al. 2018)."""
    a = tf.random.stateless_gamma([], seed=draw_seed(seed, "mix_a"), alpha=alpha)
    b = tf.random.stateless_gamma([], seed=draw_seed(seed, "mix_b"), alpha=alpha)
    lam = a / (a + b)
    perm = tf.argsort(
        tf.random.stateless_uniform([tf.shape(x)[0]], seed=draw_seed(seed, "mix_perm"))
    )
    return lam * x + (1 - lam) * tf.gather(x, perm), lam * y + (1 - lam) * tf.gather(y, perm)
