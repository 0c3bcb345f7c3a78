"""Waveform augmentation inside tf.data, with stateless random ops so runs repeat.

SpecAugment lives in the model (models/specaugment.py) because it acts on features.
"""

from __future__ import annotations

import numpy as np
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
            "pitch",
            "vtlp",
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
    """Speed, pitch and vocal-tract perturbation, time shift, gain and background-noise
    mixing for one clip. pitch and vtlp of None (not yet resolved) count as off."""
    n = fe.clip_samples
    if cfg["speed"]:
        wave = change_speed(wave, _uniform(seed, "speed", 1 - cfg["speed"], 1 + cfg["speed"]), n)
    pitch, vtlp = cfg.get("pitch") or 0.0, cfg.get("vtlp") or 0.0
    if pitch or vtlp:  # decided here so the recipe without them builds no STFT at all
        semitones = _uniform(seed, "pitch", -pitch, pitch) if pitch else 0.0
        alpha = _uniform(seed, "vtlp", 1 - vtlp, 1 + vtlp) if vtlp else 1.0
        wave = warp_spectrum(wave, 2 ** (semitones / 12), alpha, fe.sample_rate)
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


# Jaitly & Hinton (2013) keep the warp linear up to 4800 Hz of 8000 Hz: the same share of
# Nyquist at other rates.
VTLP_BOUNDARY = 0.6


def source_frequency(freq, factor, alpha, nyquist: float) -> tf.Tensor:
    """The input frequency each output frequency takes its magnitude from: the inverse of
    the warp f -> factor * vtlp(f), where factor (the pitch shift) moves harmonics and
    formants together and vtlp (Jaitly & Hinton 2013) scales frequencies below a boundary
    by alpha and joins Nyquist to itself by a straight line above it."""
    knee = VTLP_BOUNDARY * nyquist * tf.minimum(alpha, 1.0)  # output frequency of the boundary
    g = freq / factor
    below = g / alpha
    above = nyquist - (nyquist - g) * (nyquist - knee / alpha) / (nyquist - knee)
    return tf.where(g <= knee, below, above)


def warp_spectrum(wave, factor, alpha, sample_rate: int) -> tf.Tensor:
    """Warp the clip's STFT magnitude along frequency (source_frequency's map, linear
    interpolation between bins), keep its phase and resynthesise the same number of
    samples; factor 1 and alpha 1 give the clip back."""
    frame = 1 << (round(0.032 * sample_rate) - 1).bit_length()  # ~32 ms: resolves harmonics
    hop = frame // 4
    pad = frame - hop  # every kept sample then lies under a full set of overlapping frames
    n = tf.shape(wave)[0]
    spec = tf.signal.stft(
        tf.pad(wave, [[pad, pad]]), frame, hop, window_fn=tf.signal.hann_window, pad_end=True
    )
    bins = frame // 2 + 1
    nyquist = sample_rate / 2
    freq = tf.linspace(0.0, nyquist, bins)
    pos = source_frequency(freq, tf.cast(factor, tf.float32), tf.cast(alpha, tf.float32), nyquist)
    pos = pos * ((bins - 1) / nyquist)
    lo = tf.clip_by_value(tf.floor(pos), 0.0, bins - 2.0)
    frac = tf.clip_by_value(pos - lo, 0.0, 1.0)
    lo = tf.cast(lo, tf.int32)
    mag = tf.abs(spec)
    warped = tf.gather(mag, lo, axis=-1) * (1 - frac) + tf.gather(mag, lo + 1, axis=-1) * frac
    warped = tf.where(pos <= bins - 1 + 1e-3, warped, 0.0)  # nothing from above Nyquist
    phase = tf.math.angle(spec)
    out = tf.signal.inverse_stft(
        tf.complex(warped * tf.cos(phase), warped * tf.sin(phase)),
        frame,
        hop,
        window_fn=tf.signal.inverse_stft_window_fn(hop, tf.signal.hann_window),
    )
    return tf.ensure_shape(out[pad : pad + n], wave.shape)


# Exponent of each colour's power spectrum in frequency (power ~ f**k).
NOISE_COLOURS = {"white": 0, "pink": -1, "brown": -2, "blue": 1, "violet": 2}


def coloured_noise(fe: FrontEnd, seed: int, seconds: float = 30.0) -> np.ndarray:
    """Background noise for sets that bring no recordings of their own: one unit-RMS row
    per NOISE_COLOURS entry, white Gaussian noise shaped in the FFT domain. Shaping is
    flat below 20 Hz, so brown noise is not all inaudible drift."""
    n = max(round(seconds * fe.sample_rate), fe.clip_samples)
    white = np.random.default_rng(seed).standard_normal((len(NOISE_COLOURS), n))
    freq = np.maximum(np.fft.rfftfreq(n, 1 / fe.sample_rate), 20.0)
    gain = freq[None] ** (np.array(list(NOISE_COLOURS.values()))[:, None] / 2)
    gain[:, 0] = 0.0  # no DC
    rows = np.fft.irfft(np.fft.rfft(white) * gain, n)
    return (rows / np.sqrt(np.mean(rows**2, axis=1, keepdims=True))).astype(np.float32)


def mixup(x, y, alpha: float, seed):
    """Blend each example of a batch with a shuffled partner (Zhang et al. 2018)."""
    a = tf.random.stateless_gamma([], seed=draw_seed(seed, "mix_a"), alpha=alpha)
    b = tf.random.stateless_gamma([], seed=draw_seed(seed, "mix_b"), alpha=alpha)
    lam = a / (a + b)
    perm = tf.argsort(
        tf.random.stateless_uniform([tf.shape(x)[0]], seed=draw_seed(seed, "mix_perm"))
    )
    return lam * x + (1 - lam) * tf.gather(x, perm), lam * y + (1 - lam) * tf.gather(y, perm)
