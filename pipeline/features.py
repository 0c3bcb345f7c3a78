"""Log-mel (or MFCC) features computed inside the Keras model with tf.signal.

Keeping the front end in the graph means an exported model takes raw audio and the
numbers in FrontEnd are the only description of it.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline.params import FrontEnd


def mel_matrix(fe: FrontEnd) -> np.ndarray:
    """[fft_length//2+1, n_mels] filterbank: librosa's Slaney mel filters."""
    import librosa

    return librosa.filters.mel(sr=fe.sample_rate, n_fft=fe.fft_length, n_mels=fe.n_mels,
                               fmin=fe.fmin, fmax=fe.fmax).T.astype(np.float32)


@keras.saving.register_keras_serializable(package="kws")
class LogMel(keras.layers.Layer):
    """Raw audio [batch, samples] -> features [batch, frames, n_features].

    With causal=True the input is left-padded with window - hop zeros (clip models);
    streaming models pass causal=False and prepend their saved audio context instead.
    """

    def __init__(self, front_end: dict, causal: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.front_end = dict(front_end)
        self.causal = causal
        self.fe = FrontEnd.from_dict(self.front_end)
        self._mel = mel_matrix(self.fe)
        self._window = tf.signal.hann_window(self.fe.window_samples, periodic=True).numpy()

    def call(self, audio):
        fe = self.fe
        if self.causal:
            audio = tf.pad(audio, [[0, 0], [fe.context_samples, 0]])
        frames = tf.signal.frame(audio, fe.window_samples, fe.hop_samples)
        spectrum = tf.abs(tf.signal.rfft(frames * self._window, [fe.fft_length]))
        mel = tf.matmul(tf.square(spectrum), self._mel)
        features = tf.math.log(mel + fe.log_floor)
        if fe.n_mfcc:
            features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., :fe.n_mfcc]
        return features

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        if n is not None:
            n = (n + (self.fe.context_samples if self.causal else 0) - self.fe.window_samples) \
                // self.fe.hop_samples + 1
        return (input_shape[0], n, self.fe.n_features)

    def get_config(self):
        return {**super().get_config(), "front_end": self.front_end, "causal": self.causal}


@keras.saving.register_keras_serializable(package="kws")
class SpecAugment(keras.layers.Layer):
    """Time and frequency masks on [batch, frames, features], active only in training."""

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2,
                 freq_width: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width

    @staticmethod
    def _masks(shape_len, batch, count, width):
        keep = tf.ones([batch, shape_len], tf.bool)
        pos = tf.range(shape_len)[None, :]
        for _ in range(count):
            w = tf.random.uniform([batch, 1], 0, width + 1, tf.int32)
            room = tf.cast(tf.maximum(shape_len - w + 1, 1), tf.float32)
            start = tf.cast(tf.random.uniform([batch, 1]) * room, tf.int32)
            keep &= ~((pos >= start) & (pos < start + w))
        return tf.cast(keep, tf.float32)

    def call(self, x, training=None):
        if not training:
            return x
        shape = tf.shape(x)
        batch, frames, bins = shape[0], shape[1], shape[2]
        t = self._masks(frames, batch, self.time_masks, self.time_width)[:, :, None]
        f = self._masks(bins, batch, self.freq_masks, self.freq_width)[:, None, :]
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        mask = t * f
        return x * mask + mean * (1 - mask)

    def get_config(self):
        return {**super().get_config(), "time_masks": self.time_masks,
                "time_width": self.time_width, "freq_masks": self.freq_masks,
                "freq_width": self.freq_width}
