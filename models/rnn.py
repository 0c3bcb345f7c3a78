"""Stacked SimpleRNN / LSTM / GRU over spectrogram chunks."""

from __future__ import annotations

from models.layers import Graph, classifier_head, conv_front_end, normalized_steps, recurrent_stack
from pipeline.runtime.params import FrontEnd


def stacked(
    fe: FrontEnd,
    n_classes: int,
    *,
    mode: str,
    batch_size: int | None,
    cell: str = "gru",
    units: tuple[int, ...] = (128, 128),
    dropout: float = 0.1,
    dense_units: int = 0,
    bidirectional: bool = False,
    spec_augment: dict | None = None,
    conv: dict | None = None,
):
    g = Graph(fe, mode, batch_size)
    x = normalized_steps(g, spec_augment)
    if conv is not None:
        x = conv_front_end(x, fe, **conv)
    x = recurrent_stack(g, x, cell, list(units), dropout, bidirectional)
    return g.model(classifier_head(x, n_classes, dense_units, dropout), name=f"stacked_{cell}")
