"""Test streams from real clips and the detection scorer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.data.folders import audio_files, labelled_clips
from pipeline.runtime.audio import speech_span
from pipeline.runtime.streams import Found, Truth, build_stream, read_truth, score

ROOT = Path(__file__).resolve().parents[1]


def test_build_stream_places_words_where_the_truth_says(demo_data):
    clips = labelled_clips(demo_data, "train") + labelled_clips(demo_data, "test")
    noise = audio_files(demo_data / "_background_noise_")
    audio, truths = build_stream(clips, noise, 60.0, seed=1, background_volume=0.0)
    assert len(audio) == 60 * 16000 and np.abs(audio).max() <= 1.0
    assert len(truths) == 20  # one word per 3 s stride
    labels = {t.label for t in truths}
    assert "_unknown_" in labels and len(labels) > 3 and "_silence_" not in labels
    for t in truths:
        assert 0 <= t.start_s < t.end_s <= 60
        inside = audio[int(t.start_s * 16000):int(t.end_s * 16000)]
        before = audio[max(0, int(t.start_s * 16000) - 8000):int(t.start_s * 16000) - 1600]
        # no background: the speech span is much louder than the gap before the clip
        assert np.mean(inside ** 2) > 10 * np.mean(before ** 2) + 1e-9
    again, truths_again = build_stream(clips, noise, 60.0, seed=1, background_volume=0.0)
    assert truths_again == truths and np.array_equal(again, audio)


def test_speech_span_finds_a_burst():
    audio = np.zeros(16000, np.float32)
    audio[4000:8000] = np.sin(np.arange(4000) * 0.3)
    start, end = speech_span(audio, 16000)
    assert (start, end) == (0.25, 0.5)


def test_score_counts_matches_wrong_labels_misses_and_false_accepts():
    truths = [Truth("yes", 1.0, 1.5), Truth("no", 5.0, 5.4), Truth("_unknown_", 9.0, 9.4),
              Truth("up", 13.0, 13.4), Truth("go", 17.0, 17.4)]
    found = [Found("yes", 1.1, 1.6),            # matched
             Found("yes", 1.3, 1.6),            # a second detection of the same word
             Found("off", 5.0, 5.4),            # wrong label
             Found("left", 9.0, 9.4),           # a command on an unknown word
             Found("up", 14.5, 14.9)]           # too late: a miss and a false accept
    s = score(truths, found, 3600.0, tolerance_s=0.75)
    assert s["commands"] == 4
    assert (s["correct"], s["wrong"], s["missed"], s["false_accepts"]) == (1, 1, 2, 3)
    assert (s["matched_pct"], s["wrong_pct"], s["missed_pct"]) == (25.0, 25.0, 50.0)
    assert s["false_accepts_per_hour"] == 3.0


def test_score_prefers_the_right_label_when_two_detections_compete():
    truths = [Truth("yes", 1.0, 1.4)]
    s = score(truths, [Found("no", 1.0, 1.4), Found("yes", 1.3, 1.7)], 60.0)
    assert (s["correct"], s["wrong"], s["false_accepts"]) == (1, 0, 1)


def test_make_and_score_stream_scripts(demo_data, tmp_path):
    wav = tmp_path / "stream.wav"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_stream.py"), "--clips",
                        str(demo_data), "--split", "train", "--noise",
                        str(demo_data / "_background_noise_"), "--minutes", "0.5",
                        "--out", str(wav)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    truths = read_truth(tmp_path / "stream_truth.csv")
    assert sf.info(wav).duration == 30.0 and len(truths) == 10
    # A transcription that found exactly the spoken commands scores 100%.
    results = tmp_path / "results.csv"
    lines = ["path,kind,label,score,top_k,duration_s,start_s,end_s,detections,error"]
    commands = [t for t in truths if t.label != "_unknown_"]
    lines += [f"{wav},detection,{t.label},0.9,,,{t.start_s},{t.end_s},," for t in commands]
    lines.append(f"{wav},recording,,,,30.0,,,{len(commands)},")
    results.write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "score_stream.py"), "--truth",
                        str(tmp_path / "stream_truth.csv"), "--results", str(results)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "100.0% matched" in r.stdout and "0.0 false accepts/hour" in r.stdout
