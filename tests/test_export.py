"""TFLite export of the tiny demo run: real conversions, LiteRT interpreters and clips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from tests.conftest import STREAM_BATCH, demo_clips

FILES = [
    "model_float.tflite",
    "model_dynamic.tflite",
    "model_batch_float.tflite",
    "model_int8.tflite",
    "stream_float.tflite",
    "stream_int8.tflite",
    "stream_batch_float.tflite",
]


def test_every_file_and_the_manifest(tiny_export, tiny_run):
    from pipeline.export.convert import model_ops
    from pipeline.runtime.params import load_model_info

    fe, labels = load_model_info(tiny_run)
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(FILES)
    assert manifest["labels"] == labels == (tiny_export / "labels.txt").read_text().split()
    assert manifest["hop_samples"] == fe.step_samples and manifest["sample_rate"] == fe.sample_rate
    for name, entry in manifest["files"].items():
        content = (tiny_export / name).read_bytes()
        assert entry["bytes"] == len(content), name
        assert not {"VAR_HANDLE", "READ_VARIABLE", "CUSTOM"} & set(model_ops(content, name))
        # accuracy can differ from Keras's by at most the share of clips they disagree on
        disagree = 1 - entry["vs_keras"]["top1_agreement"]
        assert abs(entry["accuracy"] - manifest["check"]["keras_accuracy"]) <= disagree + 1e-4, name
        outputs = {o["name"]: o for o in entry["outputs"]}
        assert outputs["probs"]["shape"] == [entry["batch"], len(labels)]
        assert outputs["probs"]["dtype"] == "float32"
    stream = manifest["files"]["stream_float.tflite"]
    states = {s["input"]: s for s in stream["states"]}
    assert states["audio_state"]["shape"] == [1, fe.context_samples]
    assert states["h0_state"]["shape"] == states["h1_state"]["shape"] == [1, 16]
    inputs = {i["name"]: i["shape"] for i in stream["inputs"]}
    assert inputs == {"audio": [1, fe.step_samples], **{k: s["shape"] for k, s in states.items()}}
    assert {o["name"] for o in stream["outputs"]} == {
        "probs",
        *(s["output"] for s in states.values()),
    }
    assert manifest["files"]["model_batch_float.tflite"]["inputs"][0]["shape"] == [8, 16000]
    lanes = manifest["files"]["stream_batch_float.tflite"]
    assert lanes["batch"] == STREAM_BATCH and lanes["kind"] == "stream"
    assert [(s["input"], s["output"]) for s in lanes["states"]] == [
        (s["input"], s["output"]) for s in stream["states"]
    ]
    assert {i["name"]: i["shape"] for i in lanes["inputs"]} == {
        k: [STREAM_BATCH, *v[1:]] for k, v in inputs.items()
    }


def test_int8_files_hold_int8_weights_and_are_smaller(tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    for name in ("model_int8.tflite", "stream_int8.tflite"):
        kinds = {d["dtype"] for d in Interpreter(str(tiny_export / name)).get_tensor_details()}
        assert np.int8 in kinds, name
    size = {n: (tiny_export / n).stat().st_size for n in FILES}
    assert size["stream_int8.tflite"] < size["stream_float.tflite"]
    assert size["model_dynamic.tflite"] < size["model_float.tflite"]


def test_float_models_match_keras(tiny_export, tiny_run, demo_data):
    from pipeline.runtime.model import ClipModel, StreamingModel
    from pipeline.train.runs import load_run

    model, fe, _ = load_run(tiny_run)
    x = demo_clips()
    expected = model.predict(x, verbose=0)
    for name in ("model_float.tflite", "model_batch_float.tflite"):
        got = ClipModel(tiny_export / name).predict(x)  # 12 clips: one padded batch of 8
        assert np.abs(got - expected).max() <= 1e-4, name
        assert (got.argmax(1) == expected.argmax(1)).all(), name
    stream = StreamingModel(tiny_export / "stream_float.tflite")
    last = np.stack([stream.run(clip)[-1] for clip in x])
    assert np.abs(last - expected).max() <= 1e-4
    assert (last.argmax(1) == expected.argmax(1)).all()
    lanes = StreamingModel(tiny_export / "stream_batch_float.tflite")
    assert lanes.batch == STREAM_BATCH
    # 12 clips in lanes of 5: the last call leaves two lanes unused.
    side_by_side = np.concatenate(
        [lanes.run(x[i : i + STREAM_BATCH])[:, -1] for i in range(0, len(x), STREAM_BATCH)]
    )
    assert np.abs(side_by_side - expected).max() <= 1e-4
    assert np.abs(side_by_side - last).max() <= 1e-5


def test_quantized_models_stay_close_to_float(tiny_export, demo_data):
    from pipeline.runtime.model import ClipModel, StreamingModel

    x = demo_clips()
    reference = ClipModel(tiny_export / "model_float.tflite").predict(x)
    for name in ("model_dynamic.tflite", "model_int8.tflite"):
        assert np.abs(ClipModel(tiny_export / name).predict(x) - reference).max() < 0.1, name
    stream = StreamingModel(tiny_export / "stream_int8.tflite")
    last = np.stack([stream.run(clip)[-1] for clip in x])
    assert np.abs(last - reference).max() < 0.1


def test_op_outside_builtins_fails_naming_it(tmp_path):
    import keras
    import tensorflow as tf

    from pipeline.export.convert import ExportError, convert, saved_model

    audio = keras.Input((4,), batch_size=1, name="audio")
    odd = keras.layers.Lambda(lambda a: tf.linalg.det(tf.reshape(a, [-1, 2, 2])), name="det")
    model = keras.Model(audio, odd(audio))
    with pytest.raises(
        ExportError, match="odd.tflite: needs ops outside the TFLite builtins: MatrixDeterminant"
    ):
        convert(saved_model(model, ["probs"], tmp_path / "saved"), "odd.tflite")


def test_variable_ops_are_rejected(tmp_path):
    import tensorflow as tf

    from pipeline.export.convert import ExportError, model_ops

    class Counter(tf.Module):
        def __init__(self):
            self.count = tf.Variable(tf.zeros([1, 4]))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="audio")])
        def serve(self, audio):
            self.count.assign_add(audio)
            return {"probs": self.count + 0}

    module = Counter()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    content = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path)).convert()
    with pytest.raises(
        ExportError, match="counter.tflite: needs ops outside the TFLite builtins: .*VAR_HANDLE"
    ):
        model_ops(content, "counter.tflite")


def test_matmul_spectrum_matches_logmel(demo_data, tiny_export):
    """The export-only spectrum (two small DFTs) gives LogMel's features: real clips,
    silence, near-silence and full scale, for front ends whose window is and is not a
    multiple of the inner DFT, with and without MFCCs."""
    from models.logmel import LogMel, MatmulLogMel
    from pipeline.export.export import FRONT_END_TOLERANCE, front_end_difference
    from pipeline.runtime.params import FrontEnd

    rng = np.random.default_rng(0)
    clips = demo_clips()
    scale = np.float32([1, 1e-3, 1e-6, 0])[:, None]
    noise = rng.uniform(-1, 1, (4, 16000)).astype(np.float32) * scale
    assert front_end_difference(FrontEnd(stack=2), clips) < 2e-4
    for fe in (
        FrontEnd(stack=2),
        FrontEnd(n_mels=64, window_ms=25),
        FrontEnd(window_ms=20, hop_ms=10, fmax=8000),
        FrontEnd(n_mfcc=13),
    ):
        assert front_end_difference(fe, np.concatenate([clips[:4], noise])) < FRONT_END_TOLERANCE
        for causal in (True, False):
            same = [
                layer(fe.to_dict(), causal=causal)(noise[:2]).shape
                for layer in (LogMel, MatmulLogMel)
            ]
            assert same[0] == same[1]
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    for name in ("model_batch_float.tflite", "stream_batch_float.tflite"):
        assert manifest["files"][name]["log_mel_max_diff"] < FRONT_END_TOLERANCE


def test_missing_training_data_asks_for_calibration(tiny_run, tmp_path, capsys):
    from scripts.export import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["source"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--model", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gone" in err and "--calibration" in err
    assert not (tmp_path / "out").exists()


def test_evaluate_scores_clip_and_streaming_files_alike(tiny_export, demo_data):
    from pipeline.train.evaluate import evaluate

    clip, _ = evaluate(tiny_export / "model_float.tflite", str(demo_data))
    for name in ("stream_float.tflite", "stream_batch_float.tflite"):
        stream, _ = evaluate(tiny_export / name, str(demo_data))
        assert stream["n"] == clip["n"] > 0
        assert abs(stream["accuracy"] - clip["accuracy"]) <= 1 / clip["n"]


def test_running_normalisation_exports_with_builtins_and_starts_from_its_constant(tmp_path):
    """normalize: running through the exporter's own steps: the float clip, streaming and
    lane files equal Keras with builtin ops only, the manifest starts the norm state at the
    front end's constant mean, reset() returns to it, and the int8 file keeps it float."""
    from models import build_from_config
    from models.logmel import LogMel, norm_start
    from pipeline.export.convert import convert, convert_int8, saved_model
    from pipeline.export.export import FILES, describe, fixed_batch_twin, stream_calibration
    from pipeline.runtime.model import ClipModel, StreamingModel
    from pipeline.runtime.params import FrontEnd

    fe = FrontEnd(stack=2, normalize="running", norm_seconds=0.5)
    cfg = {"model": {"name": "gru", "units": [8]}, "augment": {"spec_augment": None}}
    x = demo_clips()
    model = build_from_config(cfg, fe, 3)
    model.get_layer("feature_norm").adapt(LogMel(fe.to_dict())(x))
    expected = model.predict(x, verbose=0)
    assert np.ptp(expected, axis=0).max() > 1e-3  # the clips get different answers
    manifest = {"front_end": fe.to_dict(), "labels": ["a", "b", "c"]}
    specs = {spec.name: spec for spec in FILES}

    def exported(name: str, batch: int = 1):
        """(SavedModel, manifest entry as written) of the exporter's twin for a file."""
        spec = specs[name]
        twin = fixed_batch_twin(model, cfg, fe, 3, spec.kind, batch, matmul_fft=spec.matmul_fft)
        entry = json.loads(json.dumps(describe(spec, batch, twin, fe, {})))
        return saved_model(twin, list(twin.output_names), tmp_path / name), entry

    # convert() raises on any op outside the TFLite builtins
    saved, entry = exported("model_float.tflite")
    clip = ClipModel.from_bytes(convert(saved, "clip"), manifest, entry)
    assert np.abs(clip.predict(x) - expected).max() <= 1e-4
    saved, entry = exported("stream_batch_float.tflite", batch=3)
    lanes = StreamingModel.from_bytes(convert(saved, "lanes"), manifest, entry)
    assert np.abs(lanes.classify(x) - expected).max() <= 1e-4
    saved, entry = exported("stream_float.tflite")
    stream = StreamingModel.from_bytes(convert(saved, "stream"), manifest, entry)
    assert np.abs(stream.classify(x) - expected).max() <= 1e-4
    calibration = stream_calibration(stream, x[:4])
    quantized = StreamingModel.from_bytes(
        convert_int8(saved, "int8", calibration, per_channel=False), manifest, entry
    )

    states = {s["input"]: s for s in stream.entry["states"]}
    assert list(states) == ["audio_state", "norm_state", "h0_state"]
    norm = states["norm_state"]
    assert (norm["output"], norm["shape"]) == ("next_norm_state", [1, fe.n_mels])
    assert np.array_equal(np.float32(norm["initial"]), norm_start(fe))
    assert states["audio_state"]["initial"] == states["h0_state"]["initial"] == 0.0
    start = np.broadcast_to(norm_start(fe), (1, fe.n_mels))
    assert np.abs(start).min() > 3  # a speech level, not zero
    lanes.reset()
    assert np.array_equal(lanes.state["norm_state"], np.broadcast_to(start, (3, fe.n_mels)))
    stream.run(x[0])
    moved = stream.state["norm_state"].copy()
    assert np.abs(moved - start).max() > 0.1
    stream.reset()
    assert np.array_equal(stream.state["norm_state"], start)
    assert not stream.state["h0_state"].any()

    assert np.abs(quantized.run(x[0])[-1] - stream.run(x[0])[-1]).max() < 0.1
    assert np.abs(quantized.state["norm_state"] - moved).max() < 1e-4
