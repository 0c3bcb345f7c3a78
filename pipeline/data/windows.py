"""Training windows for stream-native training: seconds of audio with a target at every step.

A recurrent model that listens for hours is trained the way it runs: on windows of a few
seconds in which one word (or none) sits over background noise, its state carried from
the window's start. Every step gets a target: the word's label from the word's end for a
short span (and at least to the end of its one-second clip, where a clip model answers),
where a streaming detector should fire; _unknown_ throughout an other word; _silence_
(background) elsewhere; and no loss inside a command word, where the label is not yet
knowable, or during the burn-in steps while the state warms up from zero. Word extents
come from energy, by the rule the test-stream builder marks words with (10 ms frames
within 20 dB of the loudest).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.data.augment import _rms, _uniform, augment, draw_seed, noise_crop
from pipeline.runtime.params import FrontEnd

AUTOTUNE = tf.data.AUTOTUNE


def word_extent(wave: tf.Tensor, sample_rate: int, floor_db: float = -20.0) -> tf.Tensor:
    """[start, end) sample of the speech in a clip (speech_span's rule, in TensorFlow)."""
    frame = sample_rate // 100
    n = tf.shape(wave)[0] // frame
    power = tf.reduce_mean(tf.square(tf.reshape(wave[: n * frame], [n, frame])), axis=1)
    loud = tf.where(power >= tf.reduce_max(power) * 10 ** (floor_db / 10))[:, 0]
    return tf.cast(tf.stack([loud[0], loud[-1] + 1]) * frame, tf.int32)


class Windows:
    """Builds (window, per-step one-hot targets, per-step weights) from labelled clips.

    cfg (the config's train.windows): seconds (window length), target_s (how long after
    the word's end its label is the target), burn_in_s, target_weight (loss weight of the
    target steps, which are few against the background ones)."""

    def __init__(
        self,
        fe: FrontEnd,
        noise: np.ndarray,
        aug_cfg: dict,
        cfg: dict,
        silence_index: int,
        n_classes: int,
        unknown_index: int = -1,
    ):
        if silence_index < 0:
            raise ValueError(
                "stream-native training (train.windows) needs a _silence_ label for the background"
            )
        self.fe, self.aug, self.n_classes, self.silence = fe, aug_cfg, n_classes, silence_index
        self.unknown = unknown_index
        step = fe.step_samples
        self.length = round(cfg["seconds"] * fe.sample_rate / step) * step
        if self.length < fe.clip_samples:
            raise ValueError(
                f"train.windows.seconds must be at least a clip "
                f"({fe.clip_seconds} s), got {cfg['seconds']}"
            )
        self.steps = self.length // step
        self.target = round(cfg["target_s"] * fe.sample_rate)
        self.burn_in = round(cfg["burn_in_s"] * fe.sample_rate)
        self.target_weight = float(cfg["target_weight"])
        if len(noise) and noise.shape[1] < self.length:  # short noise files are tiled
            noise = np.tile(noise, (1, -(-self.length // noise.shape[1])))
        self.noise = tf.constant(noise, tf.float32)
        self._clip_aug = {**aug_cfg, "time_shift_ms": 0.0}  # placement does the shifting
        self._no_noise = tf.zeros([0, fe.clip_samples])

    def make(self, wave: tf.Tensor, label: tf.Tensor, seed, training: bool):
        fe, c, w = self.fe, self.fe.clip_samples, self.length
        is_silence = tf.equal(label, self.silence)
        is_unknown = tf.equal(label, self.unknown)
        if training:
            wave = augment(wave, tf.constant(False), self._no_noise, fe, self._clip_aug, seed)
        start, end = tf.unstack(word_extent(wave, fe.sample_rate))
        lo = tf.minimum(tf.maximum(0, self.burn_in - start), w - c)
        hi = tf.maximum(lo, tf.minimum(w - c, w - self.target - end))
        offset = tf.random.stateless_uniform(
            [], seed=draw_seed(seed, "placement"), minval=lo, maxval=hi + 1, dtype=tf.int32
        )
        speech = tf.where(is_silence, tf.zeros_like(wave), wave)
        canvas = tf.pad(speech, [[offset, w - c - offset]])
        background = self._background(speech, is_silence, seed)
        window = tf.clip_by_value(tf.ensure_shape(canvas + background, [w]), -1.0, 1.0)

        ends = (tf.range(self.steps) + 1) * fe.step_samples  # the sample each step ends at
        in_word = (ends > offset + start) & (ends <= offset + end) & ~is_silence
        # the label holds from the word's end for target_s, and at least to the end of the
        # clip, where a clip model answers
        last = tf.maximum(offset + end + self.target, offset + c)
        in_target = (ends > offset + end) & (ends <= last) & ~is_silence
        target = tf.where(in_target | (in_word & is_unknown), label, self.silence)
        weight = tf.where(in_target, self.target_weight, 1.0)
        # no loss inside a command word, where its label is not yet knowable; an _unknown_
        # word is _unknown_ throughout, so the model learns not to fire during other words
        weight = tf.where((in_word & ~is_unknown) | (ends <= self.burn_in), 0.0, weight)
        return window, tf.one_hot(target, self.n_classes), weight

    def _background(self, speech, is_silence, seed) -> tf.Tensor:
        if self.noise.shape[0] == 0:
            return tf.zeros([self.length])
        crop = noise_crop(self.noise, self.fe, draw_seed(seed, "background"), self.length)
        snr = _uniform(seed, "snr", *self.aug["noise_snr_db"])
        under_speech = crop * (_rms(speech) / (_rms(crop) * 10 ** (snr / 20)))
        under_speech = tf.where(
            _uniform(seed, "noise_on") < self.aug["noise_prob"], under_speech, tf.zeros_like(crop)
        )
        level = 10 ** (_uniform(seed, "silence_level", *self.aug["silence_dbfs"]) / 20)
        return tf.where(is_silence, crop * (level / _rms(crop)), under_speech)

    def training(
        self, waves: tf.data.Dataset, size: int, batch_size: int, seed: int
    ) -> tf.data.Dataset:
        seeds = (
            tf.data.Dataset.random(seed=seed).map(lambda s: tf.cast(s % (2**31), tf.int32)).batch(2)
        )
        ds = waves.shuffle(size, seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: self.make(*pair, s, training=True), num_parallel_calls=AUTOTUNE
        )
        return ds.batch(batch_size).prefetch(AUTOTUNE)

    def evaluation(self, waves: tf.data.Dataset, batch_size: int, seed: int) -> tf.data.Dataset:
        """The same windows every time: a fixed seed per position, no clip augmentation."""

        def make(i, pair):
            s = tf.stack([tf.constant(seed, tf.int32), tf.cast(i, tf.int32)])
            return self.make(*pair, s, training=False)

        return (
            waves.enumerate()
            .map(make, num_parallel_calls=AUTOTUNE)
            .batch(batch_size)
            .prefetch(AUTOTUNE)
        )
