"""Waveform augmentation: stateless draws that repeat per seed and never share a seed."""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from pipeline.data.augment import PURPOSES, augment, draw_seed, make_silence
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
