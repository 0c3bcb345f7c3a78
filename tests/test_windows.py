"""Stream-native training windows: where the targets fall, and a run trained on them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data.folders import load_noise
from pipeline.data.windows import Windows, word_extent
from pipeline.runtime.audio import fit_to_length, load_audio, speech_span
from pipeline.runtime.params import FrontEnd
from tests.conftest import DEMO, held_out_clip

FE = FrontEnd(stack=2)
LABELS = ["_silence_", "_unknown_", "yes", "no"]
AUG = {
    "speed": 0.0,
    "time_shift_ms": 0.0,
    "gain_db": 0.0,
    "noise_prob": 1.0,
    "noise_snr_db": [20.0, 20.0],
    "silence_dbfs": [-50.0, -50.0],
}
CFG = {"seconds": 2.0, "target_s": 0.5, "burn_in_s": 0.3, "target_weight": 2.0}


def _windows() -> Windows:
    noise = load_noise(sorted((DEMO / "_background_noise_").glob("*.wav")), FE)
    return Windows(FE, noise, AUG, CFG, 0, len(LABELS))


def test_word_extent_is_the_stream_builders_rule():
    clip = fit_to_length(load_audio(held_out_clip("yes"), 16000), 16000)
    start, end = word_extent(tf.constant(clip), 16000).numpy()
    assert (start / 16000, end / 16000) == speech_span(clip, 16000)


def test_targets_follow_the_word_and_nothing_is_learnt_inside_it():
    w = _windows()
    clip = fit_to_length(load_audio(held_out_clip("no"), 16000), 16000)
    for i in range(5):
        window, onehot, weight = (
            t.numpy()
            for t in w.make(tf.constant(clip), tf.constant(3), tf.constant([4, i]), training=True)
        )
        assert window.shape == (32000,) and onehot.shape == (100, 4) and weight.shape == (100,)
        target = onehot.argmax(1)
        ends = (np.arange(100) + 1) * FE.step_samples
        # the word sits where the clip was placed: find it from the window's own energy
        spoken = np.flatnonzero(target == 3)
        assert 20 <= len(spoken) <= 26  # 0.5 s of 20 ms steps, cut by the window's end
        assert np.all(weight[spoken] == 2.0)
        assert np.all(weight[ends <= 4800] == 0)  # burn-in
        silent_loss = (weight == 0) & (ends > 4800)
        assert silent_loss.any() and ends[silent_loss].max() < ends[spoken].min()  # the word
        assert set(target[weight > 0]) <= {0, 3}


def test_silence_windows_are_background_everywhere():
    w = _windows()
    window, onehot, weight = (
        t.numpy()
        for t in w.make(tf.zeros(16000), tf.constant(0), tf.constant([1, 2]), training=True)
    )
    assert np.all(onehot.argmax(1) == 0) and np.all(weight[15:] == 1) and np.all(weight[:15] == 0)
    level = 20 * np.log10(np.sqrt(np.mean(window**2)))
    assert abs(level + 50) < 0.5


@pytest.mark.slow
def test_windowed_training_saves_the_clip_build(tmp_path):
    """Trained in sequence mode on windows, saved and scored as the clip model every other
    stage (export, evaluation, transcription) expects."""
    from pipeline.train.config import load_config
    from pipeline.train.fit import train
    from pipeline.train.runs import load_run
    from tests.conftest import TINY

    overrides = [o for o in TINY if not o.startswith("train.epochs")]
    cfg = load_config(None, [*overrides, "train.epochs=1", "train.windows={seconds: 1.5}"])
    metrics = train(cfg, str(DEMO), tmp_path / "run", verbose=0)
    model, fe, labels = load_run(tmp_path / "run")
    assert model.input_shape == (None, fe.clip_samples)
    assert model.output_shape == (None, len(labels))
    assert metrics["test"]["n"] > 0 and 0 < metrics["parameters"] == model.count_params()
