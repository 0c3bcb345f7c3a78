"""CRNN: a small convolution across frequency on each chunk, then the recurrent stack.

The kernel spans one step in time, so the convolution needs no state and streams exactly;
the frames stacked into a step are its input channels.
"""
from __future__ import annotations

from keras import layers

from models import register
from pipeline.params import FrontEnd


def conv_front_end(x, fe: FrontEnd, filters: tuple[int, ...] = (16,), kernel: int = 5,
                   stride: int = 2):
    steps = x.shape[1]
    x = layers.Reshape((steps, fe.stack, fe.n_features), name="chunks")(x)
    x = layers.Permute((1, 3, 2), name="freq_major")(x)  # [batch, steps, freq, frames]
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, (1, kernel), strides=(1, stride), padding="same",
                          activation="relu", name=f"conv{i}")(x)
    return layers.Reshape((steps, x.shape[2] * x.shape[3]), name="conv_out")(x)


@register("crnn")
def crnn(fe: FrontEnd, n_classes: int, *, conv: dict | None = None, **kw):
    from models.rnn import stacked

    return stacked(fe, n_classes, conv=conv or {}, **kw)
