"""The LiteRT runtime: clip and streaming models without TensorFlow, and command events."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio import fit_to_length, load_audio
from pipeline.runtime import ClipModel, CommandDetector, Detection, ModelError, StreamingModel
from test_export import demo_clips, exported

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_dir(tiny_run, tmp_path_factory) -> Path:
    return exported(tiny_run, tmp_path_factory)


def test_inference_never_imports_tensorflow(export_dir, demo_data):
    wav = sorted((demo_data / "yes").glob("*.wav"))[0]
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from pipeline.audio import fit_to_length, load_audio
from pipeline.runtime import ClipModel, StreamingModel
clip = ClipModel({str(export_dir / 'model_int8.tflite')!r})
audio = fit_to_length(load_audio({str(wav)!r}, clip.front_end.sample_rate), clip.front_end.clip_samples)
stream = StreamingModel({str(export_dir / 'stream_float.tflite')!r})
print(json.dumps({{"clip": clip.predict(audio[None])[0].tolist(),
                  "stream": stream.run(audio)[-1].tolist(),
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    audio = fit_to_length(load_audio(wav, 16000), 16000)
    np.testing.assert_allclose(out["clip"], ClipModel(export_dir / "model_int8.tflite")
                               .predict(audio[None])[0], atol=1e-6)
    np.testing.assert_allclose(out["stream"], StreamingModel(export_dir / "stream_float.tflite")
                               .run(audio)[-1], atol=1e-6)


def test_streaming_state_is_carried_and_reset(export_dir, demo_data):
    model = StreamingModel(export_dir / "stream_float.tflite")
    audio = demo_clips(demo_data, 2)
    hop = model.hop_samples
    whole = model.run(audio[0])
    assert whole.shape == (16000 // hop, len(model.labels))
    model.reset()
    stepped = np.stack([model.step(h) for h in audio[0].reshape(-1, hop)])
    np.testing.assert_array_equal(stepped, whole)
    np.testing.assert_allclose(whole.sum(1), 1, atol=1e-5)
    # Continuing the stream differs from a fresh start: the state carries the past.
    continued = model.run(audio[1], reset=False)
    fresh = model.run(audio[1])
    assert np.abs(continued[0] - fresh[0]).max() > 1e-4
    # A partial last hop is zero-padded, not dropped.
    assert model.run(audio[0][: 3 * hop + 1]).shape[0] == 4


def test_clip_model_rejects_bad_input_and_files(export_dir, tmp_path):
    model = ClipModel(export_dir / "model_batch_float.tflite")
    assert model.batch_size == 8
    assert model.predict(np.zeros((0, 16000), np.float32)).shape == (0, len(model.labels))
    with pytest.raises(ValueError, match=r"expected \[n, 16000\] audio"):
        model.predict(np.zeros((2, 8000), np.float32))
    lonely = tmp_path / "model_float.tflite"
    lonely.write_bytes((export_dir / "model_float.tflite").read_bytes())
    with pytest.raises(ModelError, match=f"{lonely}: no manifest.json beside it"):
        ClipModel(lonely)
    with pytest.raises(ModelError, match="not a clip model"):
        ClipModel(export_dir / "stream_float.tflite")


LABELS = ["_silence_", "_unknown_", "yes", "no"]


def probs_track(segments: list[tuple[str, float, float]], hop: float = 0.02) -> np.ndarray:
    """Per-hop probabilities: each (label, seconds, confidence) segment, rest spread evenly."""
    rows = []
    for label, seconds, confidence in segments:
        row = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1), np.float32)
        row[LABELS.index(label)] = confidence
        rows += [row] * round(seconds / hop)
    return np.stack(rows)


def test_detector_reports_each_word_once_at_its_time():
    detector = CommandDetector(LABELS, 0.02, average_window_s=0.2, threshold=0.6,
                               suppression_s=0.5)
    track = probs_track([("_silence_", 1.0, 0.9), ("yes", 0.4, 0.95), ("_silence_", 1.0, 0.9),
                         ("no", 0.4, 0.95), ("_silence_", 0.5, 0.9)])
    events = detector.process(track)
    assert [e.label for e in events] == ["yes", "no"]
    assert 1.0 < events[0].time_s < 1.2 and 2.4 < events[1].time_s < 2.6
    assert all(e.score > 0.6 for e in events)


def test_detector_threshold_suppression_and_ignored_labels():
    quiet = CommandDetector(LABELS, 0.02, threshold=0.99)
    assert quiet.process(probs_track([("yes", 1.0, 0.9)])) == []
    ignoring = CommandDetector(LABELS, 0.02)
    assert ignoring.process(probs_track([("_unknown_", 1.0, 0.95)])) == []
    # "no" right after "yes" falls inside the suppression period.
    suppressed = CommandDetector(LABELS, 0.02, average_window_s=0.1, suppression_s=1.0)
    events = suppressed.process(probs_track([("yes", 0.3, 0.95), ("no", 0.3, 0.95)]))
    assert [e.label for e in events] == ["yes"]


def test_detector_keeps_state_across_calls():
    track = probs_track([("_silence_", 0.5, 0.9), ("yes", 0.4, 0.95), ("_silence_", 0.6, 0.9),
                         ("yes", 0.4, 0.95)])
    whole = CommandDetector(LABELS, 0.02, suppression_s=0.3).process(track)
    split = CommandDetector(LABELS, 0.02, suppression_s=0.3)
    pieces = [split.process(chunk) for chunk in np.array_split(track, 7)]
    assert [e for p in pieces for e in p] == whole
    assert [e.label for e in whole] == ["yes", "yes"]
    assert isinstance(whole[0], Detection)
