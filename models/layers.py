"""Building blocks shared by the recurrent models.

Every model is written once and built in two modes: 'clip' (a whole clip, used for
training, evaluation and clip export) and 'stream' (one hop with explicit state, used for
streaming export). Both modes create layers with the same names, so weights move between
them with copy_weights().
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from models.logmel import LogMel, norm_start
from models.specaugment import SpecAugment
from pipeline.runtime.params import FrontEnd

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def state_names(cell: str, index: int) -> list[str]:
    return [f"h{index}", f"c{index}"] if cell == "lstm" else [f"h{index}"]


def initial_state(name: str, fe: FrontEnd) -> np.ndarray:
    """The value a stream build's state input starts from, broadcast over its batch: zeros,
    except the log-mel running mean, which starts where the clip build's does."""
    return norm_start(fe) if name == "norm_state" else np.zeros((), np.float32)


class Graph:
    """Inputs, features and the extra state outputs of one model build."""

    def __init__(self, fe: FrontEnd, mode: str, batch_size: int | None):
        self.fe, self.mode = fe, mode
        self.state_inputs: list[keras.KerasTensor] = []
        self.state_outputs: list[keras.KerasTensor] = []
        if mode in ("clip", "sequence"):
            # a sequence model takes audio of any length and answers at every step
            length = fe.clip_samples if mode == "clip" else None
            self.audio = keras.Input((length,), batch_size=batch_size, name="audio")
            self.inputs = [self.audio]
            x = LogMel(fe.to_dict(), causal=True, name="logmel")(self.audio)
        else:
            b = batch_size or 1
            self.audio = keras.Input((fe.step_samples,), batch_size=b, name="audio")
            context = keras.Input((fe.context_samples,), batch_size=b, name="audio_state")
            self.inputs = [self.audio, context]
            joined = layers.Concatenate(axis=1, name="join_audio")([context, self.audio])
            self.state_outputs.append(
                layers.Lambda(lambda a: a[:, -fe.context_samples :], name="next_audio_state")(
                    joined
                )
            )
            logmel = LogMel(fe.to_dict(), causal=False, name="logmel")
            if fe.normalize == "none":
                x = logmel(joined)
            else:  # the running mean of the log-mel is one more state
                x, mean = logmel(joined, norm_state=self.state_input("norm", fe.n_mels))
                self.state_outputs.append(layers.Identity(name="next_norm_state")(mean))
        self.features = x

    def state_input(self, name: str, units: int) -> keras.KerasTensor:
        t = keras.Input((units,), batch_size=self.audio.shape[0], name=f"{name}_state")
        self.inputs.append(t)
        return t

    def model(self, probs, name: str) -> keras.Model:
        if self.mode != "stream":
            return keras.Model(self.inputs, probs, name=name)
        return keras.Model(self.inputs, [probs, *self.state_outputs], name=name)


def normalized_steps(g: Graph, spec_augment: dict | None) -> keras.KerasTensor:
    """Standardise features (statistics adapted on training data), mask, stack into steps."""
    fe = g.fe
    x = layers.Normalization(axis=-1, name="feature_norm")(g.features)
    if spec_augment and g.mode != "stream":
        x = SpecAugment(**spec_augment, name="spec_augment")(x)
    steps = {"clip": fe.n_steps, "sequence": -1, "stream": 1}[g.mode]
    return layers.Reshape((steps, fe.stack * fe.n_features), name="stack_frames")(x)


def recurrent_stack(
    g: Graph, x, cell: str, units: list[int], dropout: float, bidirectional: bool
) -> keras.KerasTensor:
    """Stacked recurrent layers; the top layer's last step feeds the head (every step in
    sequence mode, which trains the model on long audio as it will stream)."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if bidirectional and g.mode != "clip":
        raise ValueError("a bidirectional model needs the whole clip and cannot stream")
    for i, n in enumerate(units):
        last = i == len(units) - 1
        if g.mode != "stream":
            every_step = not last or g.mode == "sequence"
            layer = CELLS[cell](n, return_sequences=every_step, name=f"{cell}{i}")
            if bidirectional:
                layer = layers.Bidirectional(layer, name=f"bi{cell}{i}")
            x = layer(x)
        else:
            layer = CELLS[cell](
                n, return_sequences=True, return_state=True, unroll=True, name=f"{cell}{i}"
            )
            states = [g.state_input(s, n) for s in state_names(cell, i)]
            out = layer(x, initial_state=states if len(states) > 1 else states[0])
            x, new_states = out[0], out[1:]
            g.state_outputs.extend(
                layers.Identity(name=f"next_{s}_state")(t)
                for s, t in zip(state_names(cell, i), new_states)
            )
            if last:
                x = layers.Reshape((n,), name="last_step")(x)
        if dropout and not last:
            x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    return x


def conv_front_end(
    x, fe: FrontEnd, filters: tuple[int, ...] = (16,), kernel: int = 5, stride: int = 2
):
    """A convolution across frequency on each step's chunk (the CRNN front end). The kernel
    spans one step in time, so it needs no state and streams exactly; the frames stacked
    into a step are its input channels."""
    steps = x.shape[1] or -1  # None in sequence mode
    x = layers.Reshape((steps, fe.stack, fe.n_features), name="chunks")(x)
    x = layers.Permute((1, 3, 2), name="freq_major")(x)  # [batch, steps, freq, frames]
    for i, f in enumerate(filters):
        x = layers.Conv2D(
            f, (1, kernel), strides=(1, stride), padding="same", activation="relu", name=f"conv{i}"
        )(x)
    return layers.Reshape((steps, x.shape[2] * x.shape[3]), name="conv_out")(x)


def classifier_head(x, n_classes: int, dense_units: int, dropout: float):
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    return layers.Dense(n_classes, activation="softmax", name="probs")(x)


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copy weights layer by layer by name (clip model -> stream model or fixed-batch copy)."""
    for layer in dst.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())
            if hasattr(layer, "finalize_state"):  # Normalization derives mean/std from its weights
                layer.finalize_state()
