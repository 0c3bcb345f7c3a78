"""Live listening: real audio piped into scripts/listen.py must give the detections of the
detector run over the streaming model's probabilities of the same audio."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from pipeline.data.folders import audio_files, labelled_clips
from pipeline.runtime.detector import CommandDetector
from pipeline.runtime.model import StreamingModel
from pipeline.runtime.streams import build_stream

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "listen.py"
LINE = re.compile(
    r"^\s*(\d+\.\d+) s\s+(\S+)\s+(\d\.\d+)\s+latency (\d+\.\d) ms\s+"
    r"\((\d+\.\d+) ms per hop\)$"
)


@pytest.fixture(scope="module")
def pcm(demo_data) -> np.ndarray:
    """20 s of demo words over background noise, as the 16-bit samples a recorder sends."""
    audio, _ = build_stream(
        labelled_clips(demo_data, "train"),
        audio_files(demo_data / "_background_noise_"),
        20.0,
        seed=0,
    )
    return np.round(audio * 32767).astype("<i2")


def _listen(*args: str, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], input=data, capture_output=True, timeout=120
    )


def _reference(model_path: Path, audio: np.ndarray) -> tuple[float, list[tuple[float, str, float]]]:
    """A threshold that gives the (barely trained) test model a few detections on audio,
    and those detections: CommandDetector over StreamingModel.run."""
    model = StreamingModel(model_path)
    probs = model.run(audio)
    hop_s = model.hop_samples / model.front_end.sample_rate
    for threshold in np.arange(0.5, 0.05, -0.01).round(2):
        events = CommandDetector(model.labels, hop_s, threshold=threshold).process(probs)
        if len(events) >= 2:
            return float(threshold), [(e.time_s, e.label, e.score) for e in events]
    raise AssertionError("the test model detects nothing in the demo stream")


def test_piped_pcm_gives_the_streaming_models_detections(tiny_export, pcm):
    model = tiny_export / "stream_float.tflite"
    threshold, expected = _reference(model, pcm.astype(np.float32) / 32768)
    r = _listen(
        "-", "--model", str(model), "--threshold", str(threshold), "--jsonl", data=pcm.tobytes()
    )
    assert r.returncode == 0, r.stderr.decode()
    heard = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(h["time_s"], h["label"]) for h in heard] == [(t, l) for t, l, _ in expected]
    np.testing.assert_allclose([h["score"] for h in heard], [s for _, _, s in expected], atol=1e-4)
    assert all(h["latency_ms"] >= 0 and h["hop_ms"] > 0 for h in heard)
    summary = r.stderr.decode().strip()
    assert summary.count("\n") == 0
    assert (
        summary.startswith("20.00 s of audio, 1000 hops") and f"{len(heard)} detections" in summary
    )


def test_wav_stream_at_another_rate_through_an_export_folder(tiny_export, pcm, tmp_path):
    """A WAV on standard input (as arecord writes by default) at 8 kHz: the header gives the
    rate, the audio is resampled as it streams, and the folder's stream_int8 model runs."""
    slow = np.round(soxr.resample(pcm.astype(np.float32) / 32768, 16000, 8000) * 32767)
    slow = np.clip(slow, -32768, 32767).astype("<i2")
    wav = tmp_path / "slow.wav"
    sf.write(wav, slow, 8000, subtype="PCM_16")
    audio = soxr.resample(slow.astype(np.float32) / 32768, 8000, 16000, quality="HQ")
    threshold, expected = _reference(tiny_export / "stream_int8.tflite", audio)
    r = _listen(
        "-", "--model", str(tiny_export), "--threshold", str(threshold), data=wav.read_bytes()
    )
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(float(m[1]), m[2]) for m in parsed] == [(t, l) for t, l, _ in expected]


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 2, "standard input: no audio samples (empty input)"),
        (b"x", 2, "no audio samples (1 byte(s), less than a sample)"),
        (b"this is not audio at all!", 0, "ignored 1 trailing byte(s), less than a sample"),
        (None, 2, "only 16-bit PCM"),
    ],
)
def test_bad_input_ends_with_one_clear_line(tiny_export, tmp_path, data, status, message):
    if data is None:  # a 24-bit WAV stream
        sf.write(tmp_path / "deep.wav", np.zeros(16000), 16000, subtype="PCM_24")
        data = (tmp_path / "deep.wav").read_bytes()
    r = _listen("-", "--model", str(tiny_export / "stream_float.tflite"), data=data)
    err = r.stderr.decode().strip()
    assert r.returncode == status and message in err
    assert err.count("\n") == 0 and "Traceback" not in err


def test_model_that_cannot_listen_is_one_line(tiny_export):
    for name, problem in (
        ("model_float.tflite", "not a streaming model"),
        ("stream_batch_float.tflite", "single-stream file"),
    ):
        r = _listen("-", "--model", str(tiny_export / name), data=b"")
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and problem in err and err.count("\n") == 0


def test_microphone_without_sounddevice_is_one_line(tiny_export):
    if importlib.util.find_spec("sounddevice") is not None:
        pytest.skip("sounddevice is installed")
    r = _listen("--model", str(tiny_export / "stream_float.tflite"), data=b"")
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and "sounddevice" in err and err.count("\n") == 0
