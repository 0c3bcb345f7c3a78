"""Log-mel (or MFCC) features computed inside the Keras model with tf.signal.

Keeping the front end in the graph means an exported model takes raw audio and the
numbers in FrontEnd are the only description of it.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline.runtime.params import FrontEnd


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
