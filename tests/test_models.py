import dataclasses

import numpy as np
import pytest

from models import build_model, names
from models.layers import copy_weights, initial_state
from pipeline.runtime.params import FrontEnd

FE = FrontEnd(stack=2)
# a short time constant, so a one-second clip is well past the start of the running mean
RUNNING = FrontEnd(stack=2, normalize="running", norm_seconds=0.3)
OPTIONS = {"gru": {}, "lstm": {}, "rnn": {}, "crnn": {"conv": {"filters": [4], "kernel": 3}}}


def _stream(model_stream, audio, fe):
    state = [
        np.broadcast_to(initial_state(t.name, fe), t.shape).astype(np.float32)
        for t in model_stream.inputs[1:]
    ]
    for start in range(0, audio.shape[1], fe.step_samples):
        out = model_stream([audio[:, start : start + fe.step_samples], *state])
        probs, state = out[0].numpy(), [o.numpy() for o in out[1:]]
    return probs


@pytest.mark.parametrize(
    "name, fe",
    [(name, FE) for name in sorted(OPTIONS)]
    + [("gru", RUNNING), ("lstm", dataclasses.replace(RUNNING, n_mfcc=13))],
)
def test_streaming_twin_matches_clip_model(name, fe):
    """One code path: the stream build, fed hop by hop, equals the clip build."""
    assert name in names()
    clip = build_model(name, fe, 5, units=(12, 8), **OPTIONS[name])
    stream = build_model(name, fe, 5, mode="stream", units=(12, 8), **OPTIONS[name])
    norm = clip.get_layer("feature_norm")
    norm.adapt(np.random.default_rng(1).normal(2, 3, (4, fe.n_frames, fe.n_features)))
    copy_weights(clip, stream)
    audio = np.random.default_rng(0).normal(0, 0.1, (1, fe.clip_samples)).astype(np.float32)
    expected = clip(audio).numpy()
    assert np.abs(_stream(stream, audio, fe) - expected).max() < 1e-5
    names_in = [t.name for t in stream.inputs]
    third = "norm_state" if fe.normalize == "running" else "h0_state"
    assert names_in[:3] == ["audio", "audio_state", third]
    # probs, then each state's next value in the order of the inputs
    assert stream.output_names == ["probs", *(f"next_{n}" for n in names_in[1:])]


@pytest.mark.parametrize("name, fe", [("gru", FE), ("crnn", FE), ("gru", RUNNING)])
def test_sequence_build_answers_at_every_step_as_the_stream_does(name, fe):
    """Trained on long audio, used on clips and streams: the sequence build's step k equals
    the stream build after k + 1 hops, and its last step on a clip equals the clip build."""
    clip = build_model(name, fe, 5, units=(12, 8), **OPTIONS[name])
    sequence = build_model(name, fe, 5, mode="sequence", units=(12, 8), **OPTIONS[name])
    stream = build_model(name, fe, 5, mode="stream", units=(12, 8), **OPTIONS[name])
    clip.get_layer("feature_norm").adapt(
        np.random.default_rng(1).normal(2, 3, (4, fe.n_frames, fe.n_features))
    )
    copy_weights(clip, sequence)
    copy_weights(clip, stream)
    audio = np.random.default_rng(0).normal(0, 0.1, (1, 3 * fe.clip_samples)).astype(np.float32)
    steps = sequence(audio).numpy()
    assert steps.shape == (1, 3 * fe.n_steps, 5)
    np.testing.assert_allclose(
        steps[:, fe.n_steps - 1], clip(audio[:, : fe.clip_samples]), atol=1e-5
    )
    np.testing.assert_allclose(
        steps[:, 2 * fe.n_steps - 1],
        _stream(stream, audio[:, : 2 * fe.clip_samples], fe),
        atol=1e-5,
    )


def test_bidirectional_is_clip_only():
    model = build_model("gru", FE, 3, units=(8,), bidirectional=True)
    assert model.output_shape == (None, 3)
    with pytest.raises(ValueError, match="cannot stream"):
        build_model("gru", FE, 3, mode="stream", units=(8,), bidirectional=True)


def test_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: crnn, gru, lstm, rnn"):
        build_model("transformer", FE, 3)
