"""Stacked SimpleRNN / LSTM / GRU over spectrogram chunks."""
from __future__ import annotations

from models import register
from models.layers import Graph, classifier_head, normalized_steps, recurrent_stack
from pipeline.params import FrontEnd


def stacked(fe: FrontEnd, n_classes: int, *, mode: str, batch_size: int | None,
            cell: str = "gru", units: tuple[int, ...] = (128, 128), dropout: float = 0.1,
            dense_units: int = 0, bidirectional: bool = False,
            spec_augment: dict | None = None, conv: dict | None = None):
    from models.crnn import conv_front_end

    g = Graph(fe, mode, batch_size)
    x = normalized_steps(g, spec_augment)
    if conv is not None:
        x = conv_front_end(x, fe, **conv)
    x = recurrent_stack(g, x, cell, list(units), dropout, bidirectional)
    return g.model(classifier_head(x, n_classes, dense_units, dropout), name=f"stacked_{cell}")


for _cell in ("rnn", "lstm", "gru"):
    register(_cell)(lambda fe, n, _c=_cell, **kw: stacked(fe, n, **{"cell": _c, **kw}))
