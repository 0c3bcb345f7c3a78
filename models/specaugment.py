"""SpecAugment (Park et al. 2019): masks on the features, inside the model so it acts on
exactly what the network sees and switches off outside training."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kws")
class SpecAugment(keras.layers.Layer):
    """Time and frequency masks on [batch, frames, features], active only in training."""

    def __init__(
        self,
        time_masks: int = 2,
        time_width: int = 10,
        freq_masks: int = 2,
        freq_width: int = 5,
        **kwargs,
    ):
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
        return {
            **super().get_config(),
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "freq_masks": self.freq_masks,
            "freq_width": self.freq_width,
        }
