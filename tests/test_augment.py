"""Waveform augmentation: stateless draws that repeat per seed and never share a seed."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from pipeline.data.augment import (
    NOISE_COLOURS,
    PURPOSES,
    VTLP_BOUNDARY,
    augment,
    coloured_noise,
    draw_seed,
    make_silence,
    source_frequency,
    warp_spectrum,
)
from pipeline.runtime.params import FrontEnd

FE = FrontEnd()
CFG = {
    "speed": 0.1,
    "time_shift_ms": 100.0,
    "gain_db": 6.0,
    "noise_prob": 1.0,
    "noise_snr_db": [10.0, 30.0],
    "silence_dbfs": [-70.0, -10.0],
}


def _all_draw_seeds(example_seed) -> list[tuple[int, int]]:
    """Every seed one example's augmentation uses, nested noise-crop draws included."""
    seeds = [draw_seed(example_seed, p) for p in PURPOSES]
    for parent in ("noise", "silence"):
        seeds += [
            draw_seed(draw_seed(example_seed, parent), p)
            for p in ("noise_file", "noise_start", "silence_level")
        ]
    return [tuple(int(v) for v in s.numpy()) for s in seeds]


def test_no_two_draws_share_a_seed():
    """Within an example (the noise crop's draws against the SNR and on/off draws) and
    across neighbouring examples (evaluation seeds are [seed, position])."""
    used = list(
        itertools.chain.from_iterable(_all_draw_seeds(tf.constant([7, i])) for i in range(40))
    )
    assert len(used) == len(set(used))


def test_same_seed_same_clip_other_seed_other_clip():
    rng = np.random.default_rng(0)
    wave = tf.constant(rng.normal(0, 0.1, FE.clip_samples).astype(np.float32))
    noise = tf.constant(rng.normal(0, 0.05, (2, 3 * FE.clip_samples)).astype(np.float32))
    a = augment(wave, tf.constant(False), noise, FE, CFG, tf.constant([1, 2]))
    b = augment(wave, tf.constant(False), noise, FE, CFG, tf.constant([1, 2]))
    c = augment(wave, tf.constant(False), noise, FE, CFG, tf.constant([1, 3]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3
    silences = [
        make_silence(noise, FE, (-40.0, -20.0), tf.constant([5, i])).numpy() for i in range(4)
    ]
    levels = [20 * np.log10(np.sqrt(np.mean(s**2))) for s in silences]
    assert all(-40.01 <= v <= -19.99 for v in levels)
    assert len({round(v, 3) for v in levels}) == 4


def _sine(hz: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(FE.clip_samples) / FE.sample_rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _welch(x: np.ndarray, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean Hann-windowed periodogram of half-overlapping segments: (frequencies, power)."""
    segments = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    power = np.mean(np.abs(np.fft.rfft(segments, axis=1)) ** 2, axis=0)
    return np.fft.rfftfreq(n, 1 / FE.sample_rate), power


def test_pitch_up_an_octave_doubles_the_frequency_and_keeps_the_length():
    out = warp_spectrum(tf.constant(_sine(1000.0)), 2 ** (12 / 12), 1.0, FE.sample_rate).numpy()
    assert out.shape == (FE.clip_samples,) and np.isfinite(out).all()
    freq, power = _welch(out, 1024)
    assert abs(freq[power.argmax()] - 2000.0) <= 2 * FE.sample_rate / 1024
    assert power[np.abs(freq - 1000.0) < 50].max() < 1e-3 * power.max()  # the old tone is gone


def test_identity_warp_gives_the_clip_back():
    rng = np.random.default_rng(1)
    x = _sine(440.0, 0.3) + rng.normal(0, 0.05, FE.clip_samples).astype(np.float32)
    out = warp_spectrum(tf.constant(x), 1.0, 1.0, FE.sample_rate).numpy()
    assert out.shape == x.shape
    assert np.abs(out - x).max() < 1e-4  # edges included: the STFT is padded past them


def _vtlp(f: np.ndarray, alpha: float, nyquist: float) -> np.ndarray:
    """Jaitly & Hinton's forward warp, written out independently of the code under test."""
    hi = VTLP_BOUNDARY * nyquist * min(alpha, 1.0)
    slope = (nyquist - hi) / (nyquist - hi / alpha)
    return np.where(f <= hi / alpha, f * alpha, nyquist - slope * (nyquist - f))


def test_vtlp_map_scales_low_frequencies_and_keeps_nyquist():
    nyquist = FE.sample_rate / 2
    f = np.linspace(0.0, nyquist, 257)
    for alpha in (0.9, 1.1):
        src = source_frequency(tf.constant(f, tf.float32), 1.0, alpha, nyquist).numpy()
        low = f < 0.5 * nyquist
        np.testing.assert_allclose(src[low], f[low] / alpha, rtol=1e-5, atol=1e-3)
        assert abs(src[-1] - nyquist) < 1e-2
        np.testing.assert_allclose(_vtlp(src, alpha, nyquist), f, rtol=1e-5, atol=1e-2)
    # pitch composes with vtlp: the input frequency is the vtlp source of f / factor
    both = source_frequency(tf.constant(f, tf.float32), 1.5, 1.1, nyquist).numpy()
    alone = source_frequency(tf.constant(f / 1.5, tf.float32), 1.0, 1.1, nyquist).numpy()
    np.testing.assert_allclose(both, alone, rtol=1e-5, atol=1e-2)


def test_voice_variation_off_is_the_published_recipe_and_on_changes_the_clip():
    # every draw that existed before pitch and vtlp keeps its seed
    old = (
        "noise_file noise_start silence_level shift gain noise snr noise_on speed mix_a mix_b "
        "mix_perm silence placement background"
    ).split()
    assert [PURPOSES[p] for p in old] == list(range(1, len(old) + 1))
    rng = np.random.default_rng(2)
    wave = tf.constant(rng.normal(0, 0.1, FE.clip_samples).astype(np.float32))
    noise = tf.constant(rng.normal(0, 0.05, (2, 3 * FE.clip_samples)).astype(np.float32))

    def run(**extra):
        cfg = {**CFG, **extra}
        return augment(wave, tf.constant(False), noise, FE, cfg, tf.constant([4, 5])).numpy()

    base = run()
    np.testing.assert_array_equal(base, run(pitch=None, vtlp=None))
    np.testing.assert_array_equal(base, run(pitch=0.0, vtlp=0))
    for extra in ({"pitch": 2.0}, {"vtlp": 0.1}, {"pitch": 2.0, "vtlp": 0.1}):
        warped = run(**extra)
        assert warped.shape == base.shape and np.isfinite(warped).all()
        assert np.abs(warped - base).max() > 1e-3


def test_coloured_noise_rows():
    a = coloured_noise(FE, 3, seconds=10.0)
    assert a.shape == (len(NOISE_COLOURS), 10 * FE.sample_rate) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_allclose(np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=1)), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(a, coloured_noise(FE, 3, seconds=10.0))
    assert np.abs(a - coloured_noise(FE, 4, seconds=10.0)).max() > 0.1
    for row, k in zip(a, NOISE_COLOURS.values()):
        freq, power = _welch(row)
        band = (freq >= 100) & (freq <= 4000)
        slope = np.polyfit(np.log2(freq[band]), 10 * np.log10(power[band]), 1)[0]
        assert abs(slope - 3.01 * k) < 1.0, (k, slope)  # dB per octave
