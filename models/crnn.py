"""CRNN: a small convolution across frequency on each chunk, then the recurrent stack
(models/layers.py: conv_front_end)."""

from __future__ import annotations

from models.rnn import stacked
from pipeline.runtime.params import FrontEnd


def crnn(fe: FrontEnd, n_classes: int, *, conv: dict | None = None, **kw):
    return stacked(fe, n_classes, conv=conv or {}, **kw)
