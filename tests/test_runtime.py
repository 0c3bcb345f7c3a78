"""The LiteRT runtime: clip and streaming models without TensorFlow, and command events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtime import ClipModel, CommandDetector, Detection, ModelError, StreamingModel
from pipeline.runtime.audio import fit_to_length, load_audio
from tests.conftest import demo_clips, held_out_clip

ROOT = Path(__file__).resolve().parents[1]


def test_inference_never_imports_tensorflow(pretrained):
    wav = held_out_clip("yes")
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from pipeline.runtime.audio import fit_to_length, load_audio
from pipeline.runtime.model import ClipModel, StreamingModel
clip = ClipModel({str(pretrained / "model_dynamic.tflite")!r})
fe = clip.front_end
audio = fit_to_length(load_audio({str(wav)!r}, fe.sample_rate), fe.clip_samples)
stream = StreamingModel({str(pretrained / "stream_int8.tflite")!r})
print(json.dumps({{"clip": clip.predict(audio[None])[0].tolist(),
                  "stream": stream.run(audio)[-1].tolist(),
                  "heavy": sorted(m for m in sys.modules
                                  if m.split(".")[0] in ("tensorflow", "keras"))}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    audio = fit_to_length(load_audio(wav, 16000), 16000)
    np.testing.assert_allclose(
        out["clip"],
        ClipModel(pretrained / "model_dynamic.tflite").predict(audio[None])[0],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        out["stream"], StreamingModel(pretrained / "stream_int8.tflite").run(audio)[-1], atol=1e-6
    )


def test_streaming_state_is_carried_and_reset(pretrained):
    model = StreamingModel(pretrained / "stream_int8.tflite")
    audio = demo_clips(2)
    hop = model.hop_samples
    whole = model.run(audio[0])
    assert whole.shape == (16000 // hop, len(model.labels))
    model.reset()
    stepped = np.stack([model.step(h) for h in audio[0].reshape(-1, hop)])
    np.testing.assert_array_equal(stepped, whole)
    np.testing.assert_allclose(whole.sum(1), 1, atol=0.02)  # int8 output: 1/256 steps
    # Continuing the stream differs from a fresh start: the state carries the past.
    continued = model.run(audio[1], reset=False)
    fresh = model.run(audio[1])
    assert np.abs(continued[0] - fresh[0]).max() > 1e-4
    # A partial last hop is zero-padded, not dropped.
    assert model.run(audio[0][: 3 * hop + 1]).shape[0] == 4


def test_batched_streaming_model_runs_independent_lanes(tiny_export, demo_data):
    """Each lane of the batched file is its own stream: stepping K different signals at
    once gives what the single-stream file gives for each alone."""
    single = StreamingModel(tiny_export / "stream_float.tflite")
    lanes = StreamingModel(tiny_export / "stream_batch_float.tflite")
    k, hop = lanes.batch, lanes.hop_samples
    assert k > 1 and lanes.state["h0_state"].shape[0] == k
    audio = demo_clips(k)
    audio[1] *= 0.1  # lanes differ in level too
    alone = np.stack([single.run(a) for a in audio])
    hops = audio.reshape(k, -1, hop)
    stepped = np.stack([lanes.step(hops[:, j]) for j in range(hops.shape[1])], axis=1)
    assert stepped.shape == alone.shape
    np.testing.assert_allclose(stepped, alone, atol=1e-5)
    np.testing.assert_allclose(lanes.run(audio[:2]), alone[:2], atol=1e-5)
    with pytest.raises(ValueError, match=f"at most {k} signals"):
        lanes.run(np.zeros((k + 1, 16000), np.float32))


def test_clip_model_rejects_bad_input_and_files(pretrained, tmp_path):
    model = ClipModel(pretrained / "model_float.tflite")
    assert model.batch_size == 1
    assert model.predict(np.zeros((0, 16000), np.float32)).shape == (0, len(model.labels))
    with pytest.raises(ValueError, match=r"expected \[n, 16000\] audio"):
        model.predict(np.zeros((2, 8000), np.float32))
    lonely = tmp_path / "model_float.tflite"
    lonely.write_bytes((pretrained / "model_float.tflite").read_bytes())
    with pytest.raises(ModelError, match=f"{lonely}: no manifest.json beside it"):
        ClipModel(lonely)
    with pytest.raises(ModelError, match="not a clip model"):
        ClipModel(pretrained / "stream_int8.tflite")


LABELS = ["_silence_", "_unknown_", "yes", "no"]


def probs_track(segments: list[tuple[str, float, float]], hop: float = 0.02) -> np.ndarray:
    """Per-hop probabilities: each (label, seconds, confidence) segment, rest spread evenly."""
    rows = []
    for label, seconds, confidence in segments:
        row = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1), np.float32)
        row[LABELS.index(label)] = confidence
        rows += [row] * round(seconds / hop)
    return np.stack(rows)


def yes_then_no(confidence: float) -> np.ndarray:
    """Silence, "yes", silence, "no", silence: 3.3 s of hops at that confidence."""
    words = [("yes", 0.4, confidence), ("no", 0.4, confidence)]
    return probs_track([("_silence_", 1.0, 0.9), words[0], ("_silence_", 1.0, 0.9), words[1],
                        ("_silence_", 0.5, 0.9)])  # fmt: skip


def test_detector_reports_each_word_once_at_its_time():
    detector = CommandDetector(LABELS, 0.02, average_window_s=0.2, threshold=0.6, suppression_s=0.5)
    track = yes_then_no(0.95)
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
    track = probs_track(
        [("_silence_", 0.5, 0.9), ("yes", 0.4, 0.95), ("_silence_", 0.6, 0.9), ("yes", 0.4, 0.95)]
    )
    whole = CommandDetector(LABELS, 0.02, suppression_s=0.3).process(track)
    split = CommandDetector(LABELS, 0.02, suppression_s=0.3)
    pieces = [split.process(chunk) for chunk in np.array_split(track, 7)]
    assert [e for p in pieces for e in p] == whole
    assert [e.label for e in whole] == ["yes", "yes"]
    assert isinstance(whole[0], Detection)


class ReferenceDetector:
    """RecognizeCommands written out hop by hop: a deque window and a mean per hop."""

    def __init__(self, detector: CommandDetector):
        from collections import deque

        self.d, self.window = detector, deque()
        self.previous, self.previous_time, self.clock = None, -np.inf, 0.0

    def process(self, probs: np.ndarray, start_time: float | None = None) -> list[Detection]:
        d, events = self.d, []
        t0 = self.clock if start_time is None else start_time
        for k, row in enumerate(probs):
            now = t0 + (k + 1) * d.hop_seconds
            self.window.append((now, row))
            while self.window[0][0] <= now - d.average_window_s:
                self.window.popleft()
            if len(self.window) < d.min_count:
                continue
            average = np.mean([r for _, r in self.window], axis=0)
            top = int(np.argmax(average))
            label, score = d.labels[top], float(average[top])
            since = (
                np.inf
                if self.previous in d.ignore or self.previous is None
                else now - self.previous_time
            )
            if score > d.threshold and label != self.previous and since > d.suppression_s:
                self.previous, self.previous_time = label, now
                if label not in d.ignore:
                    events.append(Detection(round(now, 6), label, score))
        self.clock = t0 + len(probs) * d.hop_seconds
        return events


@pytest.mark.parametrize("seed", range(4))
def test_detector_equals_the_hop_by_hop_reference(seed):
    """Random, spiky probabilities (words of random length and strength, exact ties) over
    random settings: the same events, times and scores, whole, in pieces, and with a
    start_time that jumps back."""
    rng = np.random.default_rng(seed)
    labels = LABELS + ["up", "down"]
    n = 5000
    logits = rng.normal(0, 1, (n, len(labels)))
    for start in rng.integers(0, n, 120):
        logits[start : start + rng.integers(5, 60), rng.integers(len(labels))] += rng.uniform(2, 7)
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    probs[rng.integers(0, n, 300)] = np.float32(1 / len(labels))
    hop = float(rng.choice([0.01, 0.02, 0.032]))
    found = 0
    for _ in range(4):
        options = {
            "average_window_s": float(rng.uniform(0.02, 1.0)),
            "threshold": float(rng.uniform(0.3, 0.9)),
            "suppression_s": float(rng.uniform(0, 1.5)),
            "min_count": int(rng.integers(1, 6)),
        }
        fast = CommandDetector(labels, hop, **options)
        reference = ReferenceDetector(CommandDetector(labels, hop, **options))
        expected = reference.process(probs)
        assert fast.process(probs) == expected, options
        found += len(expected)
        fast.reset()
        reference = ReferenceDetector(CommandDetector(labels, hop, **options))
        pieces = np.split(probs, np.sort(rng.integers(0, n, 5)))
        starts = [None] * len(pieces)
        starts[2] = float(rng.uniform(0, 10))  # the clock jumps back by minutes
        for chunk, start in zip(pieces, starts):
            assert fast.process(chunk, start) == reference.process(chunk, start), options
    assert found > 20


def _events(detector: CommandDetector, probs: np.ndarray) -> list[str]:
    return [e.label for e in detector.process(probs)]


def test_k_of_n_turns_down_a_one_hop_spike_the_average_lets_through():
    # Over a weak background, one hop at yes=1.0 lifts yes to the top of a 5-hop average.
    spike = np.zeros((1, len(LABELS)), np.float32)
    spike[0, LABELS.index("yes")] = 1.0
    track = np.concatenate(
        [
            probs_track([("_silence_", 1.0, 0.4)]),
            spike,
            probs_track([("_silence_", 1.0, 0.4), ("no", 0.3, 0.95), ("_silence_", 0.5, 0.4)]),
        ]
    )
    options = {"average_window_s": 0.1, "threshold": 0.3}
    assert _events(CommandDetector(LABELS, 0.02, **options), track) == ["yes", "no"]
    assert _events(CommandDetector(LABELS, 0.02, k_of_n=(2, 5), **options), track) == ["no"]
    # The hops before a call count towards the next one's k of n.
    whole = CommandDetector(LABELS, 0.02, k_of_n=(2, 5), **options).process(track)
    split = CommandDetector(LABELS, 0.02, k_of_n=(2, 5), **options)
    at = 50 + 1 + 50 + 1  # the spike, then the first hop of "no"
    assert split.process(track[:at]) + split.process(track[at:]) == whole


def test_a_class_threshold_silences_that_class_only():
    track = yes_then_no(0.8)
    assert _events(CommandDetector(LABELS, 0.02, threshold=0.6), track) == ["yes", "no"]
    strict_yes = CommandDetector(LABELS, 0.02, threshold=0.6, class_thresholds={"yes": 0.9})
    assert _events(strict_yes, track) == ["no"]
    # A class threshold below the global one: the bulk screening must not skip its hops.
    lenient_no = CommandDetector(LABELS, 0.02, threshold=0.9, class_thresholds={"no": 0.6})
    assert _events(lenient_no, track) == ["no"]
    with pytest.raises(ValueError, match="unknown: \\['maybe'\\]"):
        CommandDetector(LABELS, 0.02, class_thresholds={"maybe": 0.5})


def test_the_margin_turns_down_a_near_tie():
    tie = np.array([0.05, 0.05, 0.46, 0.44], np.float32)  # yes just ahead of no
    track = np.concatenate(
        [
            probs_track([("_silence_", 1.0, 0.9)]),
            np.tile(tie, (50, 1)),
            probs_track([("_silence_", 1.0, 0.9), ("no", 0.4, 0.9), ("_silence_", 0.5, 0.9)]),
        ]
    )
    assert _events(CommandDetector(LABELS, 0.02, threshold=0.4), track) == ["yes", "no"]
    assert _events(CommandDetector(LABELS, 0.02, threshold=0.4, margin=0.1), track) == ["no"]


class OptionsReference(ReferenceDetector):
    """ReferenceDetector with k_of_n, class_thresholds and margin, hop by hop."""

    def process(self, probs: np.ndarray, start_time: float | None = None) -> list[Detection]:
        from collections import deque

        d, events = self.d, []
        if not hasattr(self, "recent"):
            self.recent = deque(maxlen=d.k_of_n[1] if d.k_of_n else 1)
        t0 = self.clock if start_time is None else start_time
        for k, row in enumerate(probs):
            now = t0 + (k + 1) * d.hop_seconds
            self.window.append((now, row))
            self.recent.append(row)
            while self.window[0][0] <= now - d.average_window_s:
                self.window.popleft()
            if len(self.window) < d.min_count:
                continue
            average = np.mean([r for _, r in self.window], axis=0)
            top = int(np.argmax(average))
            label, score = d.labels[top], float(average[top])
            threshold = d.class_thresholds.get(label, d.threshold)
            since = (
                np.inf
                if self.previous in d.ignore or self.previous is None
                else now - self.previous_time
            )
            decisive = average[top] - np.sort(average)[-2] >= d.margin and (
                d.k_of_n is None or sum(r[top] > threshold for r in self.recent) >= d.k_of_n[0]
            )
            if score > threshold and label != self.previous and since > d.suppression_s:
                if decisive:
                    self.previous, self.previous_time = label, now
                    if label not in d.ignore:
                        events.append(Detection(round(now, 6), label, score))
        self.clock = t0 + len(probs) * d.hop_seconds
        return events


def _random_probs(rng: np.random.Generator, n: int, labels: list[str]) -> np.ndarray:
    logits = rng.normal(0, 1, (n, len(labels)))
    for start in rng.integers(0, n, n // 40):
        logits[start : start + rng.integers(5, 60), rng.integers(len(labels))] += rng.uniform(2, 7)
    return (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)


def test_default_options_give_the_old_detectors_events():
    """Options left off, or set so that they change nothing, give RecognizeCommands'
    events on a long random array, whatever path the bulk screening takes."""
    rng = np.random.default_rng(7)
    labels = LABELS + ["up", "down"]
    probs = _random_probs(rng, 40000, labels)
    for threshold in (0.4, 0.7, 0.9):
        expected = ReferenceDetector(CommandDetector(labels, 0.02, threshold=threshold)).process(
            probs
        )
        assert len(expected) > 50
        neutral = [
            {},
            {"k_of_n": None, "class_thresholds": None, "margin": 0.0},
            {"class_thresholds": dict.fromkeys(labels, threshold)},  # the per-class screening
        ]
        for options in neutral:
            detector = CommandDetector(labels, 0.02, threshold=threshold, **options)
            assert detector.process(probs) == expected, options


@pytest.mark.parametrize("seed", range(3))
def test_options_equal_the_hop_by_hop_reference(seed):
    """k_of_n, class thresholds and margin on random probabilities: the bulk path (in small
    chunks, so history crosses their edges) gives the reference's events, whole and in
    pieces."""
    rng = np.random.default_rng(100 + seed)
    labels = LABELS + ["up", "down"]
    probs = _random_probs(rng, 6000, labels)
    found = 0
    for _ in range(4):
        n = int(rng.integers(2, 8))
        options = {
            "average_window_s": float(rng.uniform(0.04, 0.8)),
            "threshold": float(rng.uniform(0.4, 0.9)),
            "suppression_s": float(rng.uniform(0, 1.0)),
            "k_of_n": (int(rng.integers(2, n + 1)), n),
            "class_thresholds": {
                str(l): float(rng.uniform(0.3, 0.95)) for l in rng.choice(labels, 2, replace=False)
            },
            "margin": float(rng.choice([0.0, rng.uniform(0, 0.5)])),
        }
        fast = CommandDetector(labels, 0.02, **options)
        fast.CHUNK = 101
        expected = OptionsReference(CommandDetector(labels, 0.02, **options)).process(probs)
        assert fast.process(probs) == expected, options
        found += len(expected)
        fast.reset()
        reference = OptionsReference(CommandDetector(labels, 0.02, **options))
        for chunk in np.split(probs, np.sort(rng.integers(0, len(probs), 6))):
            assert fast.process(chunk) == reference.process(chunk), options
    assert found > 20


def test_operating_point_from_a_manifest(pretrained):
    from pipeline.runtime.detector import describe, detector_for, detector_options

    assert StreamingModel(pretrained / "stream_int8.tflite").detector == {}  # none chosen yet
    manifest = {
        "detector": {
            "threshold": 0.93,
            "average_window_s": 0.5,
            "suppression_s": 1.0,
            "k_of_n": [3, 5],
            "class_thresholds": {"yes": 0.97},
            "margin": 0.2,
            "chosen_on": "val15.wav",
            "target_fa_per_hour": 2,
            "fa_per_hour": 0.0,
            "matched": 52.2,
        }
    }
    options = detector_options(manifest)
    assert options == {
        "threshold": 0.93,
        "average_window_s": 0.5,
        "suppression_s": 1.0,
        "k_of_n": (3, 5),
        "class_thresholds": {"yes": 0.97},
        "margin": 0.2,
    }
    detector, line = detector_for(LABELS, 0.02, manifest, threshold=0.8, suppression_s=None)
    assert (detector.threshold, detector.k_of_n, detector.margin) == (0.8, (3, 5), 0.2)
    assert line == (
        "detector: threshold 0.8, window 0.5 s, suppression 1 s, 3 of 5 hops over it, "
        "per class yes 0.97, margin 0.2 (threshold as given; the rest from manifest.json, "
        "chosen on val15.wav for 2 FA/h)"
    )
    assert describe(CommandDetector(LABELS, 0.02), {}) == (
        "detector: threshold 0.7, window 0.5 s, suppression 1 s (detector defaults)"
    )
    with pytest.raises(ValueError, match="malformed"):
        detector_options({"detector": {"k_of_n": 3}})


def test_detector_fed_hop_by_hop_gives_the_events_of_one_call():
    """A live stream arrives one hop at a time: its events must not depend on how the
    probabilities were cut into calls (a drifting clock moves hops across the window edge)."""
    rng = np.random.default_rng(7)
    labels = ["_silence_", "_unknown_", "yes", "no"]
    # a word every 40 hops whose top score hovers around the threshold
    top = np.repeat(rng.integers(0, len(labels), 150), 40)
    probs = rng.uniform(0, 0.1, (len(top), len(labels)))
    probs[np.arange(len(top)), top] = rng.uniform(0.4, 0.95, len(top))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    whole = CommandDetector(labels, 0.02, threshold=0.6).process(probs)
    live = CommandDetector(labels, 0.02, threshold=0.6)
    pieces = [e for k in range(len(probs)) for e in live.process(probs[k : k + 1])]
    assert len(whole) > 20
    assert [(e.time_s, e.label) for e in pieces] == [(e.time_s, e.label) for e in whole]
