"""Test streams from real clips and the detection scorer."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.folders import audio_files, labelled_clips
from pipeline.runtime.audio import speech_span
from pipeline.runtime.streams import Found, Truth, build_stream, pick_threshold, read_truth, score

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
        inside = audio[int(t.start_s * 16000) : int(t.end_s * 16000)]
        before = audio[max(0, int(t.start_s * 16000) - 8000) : int(t.start_s * 16000) - 1600]
        # no background: the speech span is much louder than the gap before the clip
        assert np.mean(inside**2) > 10 * np.mean(before**2) + 1e-9
    again, truths_again = build_stream(clips, noise, 60.0, seed=1, background_volume=0.0)
    assert truths_again == truths and np.array_equal(again, audio)


def test_speech_span_finds_a_burst():
    audio = np.zeros(16000, np.float32)
    audio[4000:8000] = np.sin(np.arange(4000) * 0.3)
    start, end = speech_span(audio, 16000)
    assert (start, end) == (0.25, 0.5)


def test_score_counts_matches_wrong_labels_misses_and_false_accepts():
    truths = [
        Truth("yes", 1.0, 1.5),
        Truth("no", 5.0, 5.4),
        Truth("_unknown_", 9.0, 9.4),
        Truth("up", 13.0, 13.4),
        Truth("go", 17.0, 17.4),
    ]
    found = [
        Found("yes", 1.1, 1.6),  # matched
        Found("yes", 1.3, 1.6),  # a second detection of the same word
        Found("off", 5.0, 5.4),  # wrong label
        Found("left", 9.0, 9.4),  # a command on an unknown word
        Found("up", 14.5, 14.9),
    ]  # too late: a miss and a false accept
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
    _demo_stream(demo_data, wav, "train", 0.5)
    truths = read_truth(tmp_path / "stream_truth.csv")
    assert sf.info(wav).duration == 30.0 and len(truths) == 10
    # A transcription that found exactly the spoken commands scores 100%.
    results = tmp_path / "results.csv"
    lines = ["path,kind,label,score,top_k,duration_s,start_s,end_s,detections,error"]
    commands = [t for t in truths if t.label != "_unknown_"]
    lines += [f"{wav},detection,{t.label},0.9,,,{t.start_s},{t.end_s},," for t in commands]
    lines.append(f"{wav},recording,,,,30.0,,,{len(commands)},")
    results.write_text("\n".join(lines) + "\n")
    r = _run(
        "score_stream.py", "--truth", str(tmp_path / "stream_truth.csv"), "--results", str(results)
    )
    assert "100.0% matched" in r.stdout and "0.0 false accepts/hour" in r.stdout


def _speech_folder(demo_data: Path, folder: Path) -> Path:
    """Two recordings of 'other speech' unlike the clips: several words in a row, at
    another rate, in stereo and in FLAC."""
    folder.mkdir()
    words = sorted((demo_data / "happy").glob("*.wav")) + sorted((demo_data / "tree").glob("*.wav"))
    for i in range(2):
        audio = np.concatenate([sf.read(w, dtype="float32")[0] for w in words[i::2]])
        sf.write(folder / f"talk{i}.flac", np.stack([audio, audio], axis=1)[::2], 8000)
    return folder


def test_negative_stream_holds_no_command_word(demo_data, tmp_path):
    wav = tmp_path / "negative.wav"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_stream.py"),
            "--negative",
            "--clips",
            str(demo_data),
            "--split",
            "train",
            "--noise",
            str(demo_data / "_background_noise_"),
            "--speech",
            str(_speech_folder(demo_data, tmp_path / "talk")),
            "--minutes",
            "1",
            "--background-volume",
            "0",
            "--out",
            str(wav),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    truths = read_truth(tmp_path / "negative_truth.csv")
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == 16000 and len(audio) == 60 * 16000 and len(truths) == 20
    assert {t.label for t in truths} == {"_unknown_"}
    speech = [t for t in truths if "@" in t.source]
    words = [t for t in truths if "@" not in t.source]
    assert speech and words
    assert all(t.source.split("@")[0].endswith(".flac") for t in speech)
    assert {Path(t.source).parent.name for t in words} <= {
        "bed",
        "cat",
        "happy",
        "marvin",
        "one",
        "tree",
    }
    for t in truths:  # no background noise: each word is where the truth says
        inside = audio[int(t.start_s * 16000) : int(t.end_s * 16000)]
        assert np.mean(inside**2) > 1e-5
    # every detection on it is a false accept
    s = score(truths, [Found("yes", 1.0, 1.3), Found("go", 30.0, 30.3)], 60.0)
    assert (s["commands"], s["false_accepts"], s["false_accepts_per_hour"]) == (0, 2, 120.0)


def test_negative_stream_needs_other_words():
    clips = labelled_clips(ROOT / "demo" / "speech_commands_sample", "train")
    commands_only = [(p, label) for p, label in clips if label != "_unknown_"]
    with pytest.raises(ValueError, match="no _unknown_ clips or other speech"):
        build_stream(commands_only, [], 30.0, unknown_percent=100)


def test_pick_threshold_takes_the_most_matches_within_the_target():
    rows = [
        {"threshold": t, "matched_pct": m, "false_accepts_per_hour": fa, "commands": 10}
        for t, m, fa in ((0.5, 90.0, 9.0), (0.6, 80.0, 2.0), (0.7, 80.0, 1.0), (0.8, 60.0, 0.0))
    ]
    assert pick_threshold(rows, 2.0)["threshold"] == 0.6
    assert pick_threshold(rows, 0.5)["threshold"] == 0.8
    assert pick_threshold(rows[:1], 2.0) is None


def _demo_stream(demo_data: Path, wav: Path, split: str, minutes: float, *options: str) -> None:
    """A test stream of the demo clips of one split over the demo's background noise."""
    noise = str(demo_data / "_background_noise_")
    _run("make_stream.py", *options, "--clips", str(demo_data), "--split", split,
         "--noise", noise, "--minutes", str(minutes), "--out", str(wav))  # fmt: skip


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return r


def test_sweep_scores_each_threshold_as_a_transcription_does(demo_data, tiny_export, tmp_path):
    """One model pass, many thresholds: each row equals transcribing the stream at that
    threshold and scoring the result. The barely trained test model needs low ones."""
    wav = tmp_path / "stream.wav"
    _demo_stream(demo_data, wav, "train", 1)
    truth = tmp_path / "stream_truth.csv"
    thresholds = ["0.08", "0.1", "0.12", "0.15", "0.2", "0.9"]
    r = _run(
        "score_stream.py",
        "--sweep",
        "--model",
        str(tiny_export),
        "--audio",
        str(wav),
        "--truth",
        str(truth),
        "--out",
        str(tmp_path / "sweep"),
        "--thresholds",
        *thresholds,
        "--target-fa",
        "100000",
    )
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as f:
        rows = {r["threshold"]: r for r in csv.DictReader(f)}
    assert list(rows) == thresholds
    assert (tmp_path / "sweep" / "det.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| threshold | matched % |" in table and table.count("\n| 0.") == len(thresholds)
    assert table in r.stdout
    pick = json.loads(r.stdout.splitlines()[-1])
    assert pick["target_fa_per_hour"] == 100000  # every threshold qualifies: the best one
    assert pick["matched_pct"] == max(float(row["matched_pct"]) for row in rows.values())
    detections = [int(row["detections"]) for row in rows.values()]
    assert detections[0] > 0 and detections[-1] == 0
    for t in thresholds[1:4]:
        results = tmp_path / f"results_{t}.csv"
        _run(
            "transcribe.py",
            "--model",
            str(tiny_export),
            str(wav),
            "--out",
            str(results),
            "--threshold",
            t,
        )
        scored = json.loads(
            _run(
                "score_stream.py", "--truth", str(truth), "--results", str(results)
            ).stdout.splitlines()[-1]
        )
        assert {k: str(v) for k, v in scored.items()} == {
            k: v for k, v in rows[t].items() if k != "threshold"
        }


def test_sweep_on_a_negative_stream_reports_false_accepts_only(demo_data, tiny_export, tmp_path):
    wav = tmp_path / "negative.wav"
    _demo_stream(demo_data, wav, "train", 0.5, "--negative")
    out = tmp_path / "sweep"
    r = _run(
        "score_stream.py",
        "--sweep",
        "--model",
        str(tiny_export / "stream_float.tflite"),
        "--audio",
        str(wav),
        "--out",
        str(out),
        "--thresholds",
        "0.1",
        "0.5",
    )
    table = (out / "sweep.md").read_text()
    assert (
        "negative stream" in table and "| threshold | detections | false accepts / hour |" in table
    )
    assert (out / "det.png").is_file()
    assert json.loads(r.stdout.splitlines()[-1])["threshold"] == 0.5  # nothing at 0.5


def test_sweep_writes_the_operating_point_that_transcribe_and_listen_use(
    demo_data, pretrained, tmp_path
):
    """A sweep on a (validation) stream records its pick in a copy of the bundled export's
    manifest; transcription and listening on that export then run at it, a flag replacing
    the one value it names, and transcribing there scores as the sweep said."""
    export = tmp_path / "export"
    shutil.copytree(pretrained, export)
    bundled = (pretrained / "manifest.json").read_text()
    wav, truth = tmp_path / "val.wav", tmp_path / "val_truth.csv"
    _demo_stream(demo_data, wav, "test", 1)  # speakers the bundled model never heard

    def sweep(*options: str) -> tuple[dict, list[dict]]:
        """The picked row and every row of a sweep that writes its pick to the manifest."""
        out = tmp_path / f"sweep{len(options)}"
        r = _run("score_stream.py", "--sweep", "--model", str(export), "--audio", str(wav),
                 "--truth", str(truth), "--out", str(out), "--target-fa", "60",
                 "--write-manifest", *options)  # fmt: skip
        assert f"wrote {export / 'manifest.json'}: detector: threshold" in r.stderr
        with open(out / "sweep.csv", newline="") as f:
            return json.loads(r.stdout.splitlines()[-1]), list(csv.DictReader(f))

    def transcribe(*flags: str) -> tuple[list[str], dict, dict]:
        """stderr lines, the summary JSON and the score of the detections."""
        results = tmp_path / "results.csv"
        r = _run("transcribe.py", "--model", str(export), str(wav), "--out", str(results),
                 "--summary-json", *flags)  # fmt: skip
        scored = _run("score_stream.py", "--truth", str(truth), "--results", str(results))
        lines = r.stderr.splitlines()
        return lines, json.loads(lines[-1]), json.loads(scored.stdout.splitlines()[-1])

    def score_of(pick: dict) -> dict:
        return {k: v for k, v in pick.items() if k not in ("threshold", "target_fa_per_hour")}

    pick, rows = sweep()
    assert pick["matched_pct"] > 50 and pick["false_accepts_per_hour"] <= 60
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest.pop("detector") == {
        "threshold": pick["threshold"],
        "average_window_s": 0.5,
        "suppression_s": 1.0,
        "chosen_on": "val.wav",
        "target_fa_per_hour": 60.0,
        "fa_per_hour": pick["false_accepts_per_hour"],
        "matched": pick["matched_pct"],
    }
    assert manifest == json.loads(bundled)  # the rest kept
    assert (pretrained / "manifest.json").read_text() == bundled

    source = "from manifest.json, chosen on val.wav for 60 FA/h"
    point = f"detector: threshold {pick['threshold']:g}, window 0.5 s, suppression 1 s ({source})"
    lines, summary, scored = transcribe()
    assert point in lines and summary["detector"]["threshold"] == pick["threshold"]
    assert scored == score_of(pick)

    lines, summary, scored = transcribe("--threshold", "0.99")
    given = "detector: threshold 0.99, window 0.5 s, suppression 1 s (threshold as given;"
    assert f"{given} the rest {source})" in lines and summary["detector"]["threshold"] == 0.99
    assert scored["detections"] == int(
        next(r for r in rows if r["threshold"] == "0.99")["detections"]
    )

    pcm, _ = sf.read(wav, dtype="int16")
    heard = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "listen.py"), "-", "--model", str(export)],
        input=pcm.tobytes(),
        capture_output=True,
        timeout=120,
    )
    assert heard.returncode == 0, heard.stderr.decode()
    assert heard.stderr.decode().strip().endswith("; " + point)

    # k-of-n, a margin and a class threshold are swept, recorded and used the same way.
    pick, _ = sweep("--k-of-n", "3", "5", "--margin", "0.2", "--class-threshold", "yes=0.95")
    block = json.loads((export / "manifest.json").read_text())["detector"]
    assert block["threshold"] == pick["threshold"]
    assert (block["k_of_n"], block["class_thresholds"], block["margin"]) == (
        [3, 5],
        {"yes": 0.95},
        0.2,
    )
    lines, summary, scored = transcribe()
    assert lines[-3].endswith(f"3 of 5 hops over it, per class yes 0.95, margin 0.2 ({source})")
    assert summary["detector"] == {k: block[k] for k in summary["detector"]}
    assert scored == score_of(pick)

    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "score_stream.py"), "--sweep", "--audio", str(wav),
         "--out", str(tmp_path / "x"), "--write-manifest"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2 and "--write-manifest needs --model" in r.stderr


def test_benchmark_stream_reports_validation_chosen_points_on_test_streams(
    demo_data, tiny_export, tmp_path
):
    args = [f"tiny={tiny_export}", "--dev", str(demo_data), "--test", str(demo_data)]
    args += ["--out", str(tmp_path), "--scale", "0.02", "--targets", "2", "1000"]
    _run("benchmark_stream.py", *args)
    out = tmp_path / "scale0.02"
    [result] = json.loads((out / "results.json").read_text())
    assert 0 <= result["clip_float"] <= 1 and 0 <= result["clip_int8"] <= 1
    sweeps = {}
    for stream in ("val15", "neg30_val", "test30", "neg60_test", "test30_int8"):
        with open(out / "tiny" / stream / "sweep.csv") as f:
            sweeps[stream] = {float(r["threshold"]): r for r in csv.DictReader(f)}
    # 1000 FA/h allows every threshold: the pick is the most matched on validation, and the
    # test columns are the test sweeps' rows at that threshold
    point = result["operating_points"][1]
    t = point["threshold"]
    best = max(float(r["matched_pct"]) for r in sweeps["val15"].values())
    assert point["validation_matched_pct"] == best
    assert point["test_matched_pct"] == float(sweeps["test30"][t]["matched_pct"])
    assert point["test_negative_fa_per_hour"] == float(
        sweeps["neg60_test"][t]["false_accepts_per_hour"]
    )
    assert len(result["int8_readings"]) == 2
    assert (out / "det.png").stat().st_size > 0 and "tiny" in (out / "results.md").read_text()
    # a second run reads the streams and sweeps back
    stamp = (out / "streams" / "test30.wav").stat().st_mtime_ns
    _run("benchmark_stream.py", *args)
    assert (out / "streams" / "test30.wav").stat().st_mtime_ns == stamp
