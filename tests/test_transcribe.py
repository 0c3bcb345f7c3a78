"""Batch transcription on real files with a real exported model: inputs, robustness,
outputs, resume, long recordings."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.runtime.audio import load_audio, pcm16_wav, read_audio, stream_audio
from pipeline.runtime.inputs import expand_inputs
from pipeline.runtime.recognizer import open_model, segmented_stream
from pipeline.runtime.rows import RowWriter, prepare_resume, read_rows
from pipeline.runtime.transcribe import EXIT_SOME_FAILED, Settings, run_transcription
from tests.conftest import STREAM_BATCH, held_out_clip

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "transcribe.py"


@pytest.fixture(scope="session")
def clip_model(pretrained) -> Path:
    return pretrained


def _demo_clip(demo_data: Path, word: str = "yes", i: int = 0) -> Path:
    return sorted((demo_data / word).glob("*.wav"))[i]


@pytest.fixture(scope="session")
def odd_files(demo_data, tmp_path_factory) -> dict[str, Path]:
    """Real files for every case the issue lists, except the one-hour recording."""
    d = tmp_path_factory.mktemp("odd")
    src = _demo_clip(demo_data)
    clip, sr = sf.read(src, dtype="float32")
    good = d / "good.wav"
    shutil.copy(src, good)
    files = {"good": good}

    files["empty"] = d / "empty.wav"
    files["empty"].write_bytes(b"")
    files["zero_length"] = d / "zero_length.wav"
    sf.write(files["zero_length"], np.zeros(0, np.int16), sr, subtype="PCM_16")
    raw = src.read_bytes()
    files["truncated_header"] = d / "truncated_header.wav"
    files["truncated_header"].write_bytes(raw[:30])
    corrupt = bytearray(raw)
    corrupt[20:22] = (0x1234).to_bytes(2, "little")  # format tag nobody knows
    files["corrupt_header"] = d / "corrupt_header.wav"
    files["corrupt_header"].write_bytes(bytes(corrupt))
    files["text"] = d / "text.wav"
    files["text"].write_text("this is not audio\n" * 50)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    files["image"] = d / "image.wav"
    fig.savefig(files["image"], format="png")
    plt.close(fig)
    files["missing"] = d / "missing.wav"
    bad = clip.copy()
    bad[100] = np.nan
    files["nan"] = d / "nan.wav"
    sf.write(files["nan"], bad, sr, subtype="FLOAT")
    bad[100] = np.inf
    files["inf"] = d / "inf.wav"
    sf.write(files["inf"], bad, sr, subtype="FLOAT")

    import soxr

    files["stereo_8k"] = d / "stereo_8k.wav"
    low = soxr.resample(clip, sr, 8000)
    sf.write(files["stereo_8k"], np.stack([low, 0.5 * low], 1), 8000, subtype="PCM_16")
    files["pcm24"] = d / "pcm24.wav"
    sf.write(files["pcm24"], clip, sr, subtype="PCM_24")
    files["float_48k"] = d / "float_48k.wav"
    sf.write(files["float_48k"], soxr.resample(clip, sr, 48000), 48000, subtype="FLOAT")
    files["flac"] = d / "clip.flac"
    sf.write(files["flac"], clip, sr, format="FLAC")
    return files


EXPECTED_ERRORS = {
    "empty": "empty file",
    "zero_length": "zero length",
    "truncated_header": "cannot decode",
    "corrupt_header": "cannot decode",
    "text": "cannot decode",
    "image": "cannot decode",
    "missing": "file not found",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
}


def _cli(
    args: list[str],
    prefix: list[str] | None = None,
    stdin: str | None = None,
    check_tf: bool = False,
) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter; check_tf fails the run if TensorFlow got imported."""
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        + (
            "    assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
            if check_tf
            else "    pass\n"
        )
    )
    return subprocess.run(
        (prefix or []) + [sys.executable, "-c", code, str(SCRIPT)] + args,
        capture_output=True,
        text=True,
        input=stdin,
        cwd=ROOT,
    )


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_odd_file_gets_one_row_and_the_run_continues(odd_files, clip_model, tmp_path):
    out = tmp_path / "rows.jsonl"
    paths = [str(p) for p in odd_files.values()]
    r = _cli(["--model", str(clip_model), "--out", str(out), *paths], check_tf=True)
    assert r.returncode == EXIT_SOME_FAILED, r.stderr
    rows = read_rows(out)
    by_path = {}
    for row in rows:
        assert row["path"] not in by_path, f"two rows for {row['path']}"
        by_path[row["path"]] = row
    assert set(by_path) == set(paths)
    for name, p in odd_files.items():
        row = by_path[str(p)]
        if name in EXPECTED_ERRORS:
            assert row["kind"] == "error" and EXPECTED_ERRORS[name] in row["error"], (name, row)
            assert "\n" not in row["error"]
        else:
            assert row["kind"] == "clip" and "error" not in row, (name, row)
            assert abs(row["duration_s"] - sf.info(odd_files["good"]).duration) < 0.01, name
    # Converted copies of one clip must be heard as that clip.
    ref = by_path[str(odd_files["good"])]
    for name in ("pcm24", "float_48k", "flac"):
        row = by_path[str(odd_files[name])]
        assert row["label"] == ref["label"] and abs(row["score"] - ref["score"]) < 0.02, name
    assert len(by_path[str(odd_files["good"])]["top_k"]) == 3
    assert f"{len(EXPECTED_ERRORS)} errors" in r.stderr


def test_exit_status_zero_when_all_succeed_and_csv_on_stdout(odd_files, clip_model):
    good = [str(odd_files[n]) for n in ("good", "stereo_8k", "pcm24")]
    r = _cli(["--model", str(clip_model), "--top-k", "2", *good])
    assert r.returncode == 0, r.stderr
    rows = _csv_rows(r.stdout)
    assert [row["path"] for row in rows] == good
    for row in rows:
        top = row["top_k"].split()
        assert len(top) == 2 and top[0].split(":")[0] == row["label"]
        assert float(row["score"]) >= float(top[1].split(":")[1])
        assert len(row["score"]) <= 6  # four decimals, no float32 residue
    assert "3 files" in r.stderr and "0 errors" in r.stderr


def test_unreadable_file_is_an_error_row(odd_files, clip_model, tmp_path):
    """chmod 000 does not stop root, so as root the CLI runs with the capabilities that
    bypass file permissions (DAC override, DAC read search) dropped: root is then bound by
    the mode bits like anyone else and the file really cannot be opened."""
    locked = tmp_path / "locked.wav"
    shutil.copy(odd_files["good"], locked)
    locked.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    out = tmp_path / "rows.csv"
    r = _cli(
        ["--model", str(clip_model), "--out", str(out), str(locked), str(odd_files["good"])],
        prefix=prefix,
    )
    rows = {row["path"]: row for row in read_rows(out)}
    assert r.returncode == EXIT_SOME_FAILED, r.stderr
    assert rows[str(locked)]["kind"] == "error"
    assert "permission denied" in rows[str(locked)]["error"]
    assert rows[str(odd_files["good"])]["kind"] == "clip"


def test_inputs_directories_globs_lists_and_stdin(demo_data, tmp_path):
    yes = sorted(str(p) for p in (demo_data / "yes").glob("*.wav"))
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n{yes[0]}\n\n{yes[1]}\n")
    (tmp_path / "notes.txt").write_text("not audio")
    items = list(
        expand_inputs(
            [
                str(demo_data / "yes"),
                str(demo_data / "no" / "*.wav"),
                f"@{listed}",
                "-",
                str(tmp_path / "nothing*.wav"),
                f"@{tmp_path / 'no_list.txt'}",
                str(tmp_path),
            ],
            stdin=io.StringIO(f"{yes[2]}\n{tmp_path / 'absent.wav'}\n"),
        )
    )
    paths = [p for p, _ in items]
    assert paths[: len(yes)] == yes  # a directory, recursively, sorted
    no = sorted(str(p) for p in (demo_data / "no").glob("*.wav"))
    assert paths[len(yes) : len(yes) + len(no)] == no  # a glob
    assert len(paths) == len(set(paths))  # list and stdin entries already seen are not repeated
    assert (str(tmp_path / "absent.wav"), None) in items  # passed on to get its error row
    problems = dict(items)
    assert problems[str(tmp_path / "nothing*.wav")] == "no files match this pattern"
    assert "cannot read path list" in problems[f"@{tmp_path / 'no_list.txt'}"]
    assert str(tmp_path / "notes.txt") not in paths  # directories yield audio only


def test_fast_wav_reader_matches_soundfile(demo_data, tmp_path):
    clip, sr = sf.read(_demo_clip(demo_data, "no"), dtype="float32")
    cases = {"mono": (clip, sr), "stereo_8k": (np.stack([clip[::2], -clip[::2]], 1), 8000)}
    for name, (data, rate) in cases.items():
        p = tmp_path / f"{name}.wav"
        sf.write(p, data, rate, subtype="PCM_16")
        assert pcm16_wav(str(p)) is not None, name
        np.testing.assert_array_equal(read_audio(str(p), 16000), load_audio(p, 16000))
    # An extra chunk before the data, an odd-length one, is skipped like soundfile does.
    raw = (tmp_path / "mono.wav").read_bytes()
    extra = b"LIST" + (3).to_bytes(4, "little") + b"abc\0"
    p = tmp_path / "with_list.wav"
    p.write_bytes(
        raw[:4]
        + (int.from_bytes(raw[4:8], "little") + len(extra)).to_bytes(4, "little")
        + raw[8:36]
        + extra
        + raw[36:]
    )
    np.testing.assert_array_equal(read_audio(str(p), 16000), load_audio(p, 16000))
    # Anything else is left to soundfile.
    p24 = tmp_path / "pcm24.wav"
    sf.write(p24, clip, sr, subtype="PCM_24")
    assert pcm16_wav(str(p24)) is None
    cut = tmp_path / "truncated.wav"
    cut.write_bytes(raw[:-100])
    assert pcm16_wav(str(cut)) is None  # truncated data


def test_resume_skips_finished_files_and_redoes_failed_and_cut_ones(
    demo_data, clip_model, tmp_path
):
    files = sorted(str(p) for p in (demo_data / "up").glob("*.wav"))[:6]
    missing = str(tmp_path / "later.wav")
    out = tmp_path / "rows.csv"
    model = open_model(clip_model)
    first = run_transcription(
        model, [(p, None) for p in files[:4] + [missing]], out, Settings(batch=2)
    )
    assert (first.clips, first.errors) == (4, 1)
    # An interrupted run: the last clip row is cut half way through.
    text = out.read_text()
    out.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + files[3] + ",cl")
    shutil.copy(files[5], missing)
    second = run_transcription(
        model, [(p, None) for p in files + [missing]], out, Settings(batch=2), resume=True
    )
    assert (second.files, second.errors) == (4, 0)  # files[3], files[4], files[5], missing
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(files + [missing])
    assert all(r["kind"] == "clip" for r in rows)
    assert prepare_resume(out) == set(files + [missing])


def test_jsonl_and_csv_writers_round_trip(tmp_path):
    row = {
        "path": 'a,b "c".wav',
        "kind": "clip",
        "label": "yes",
        "score": 0.9,
        "top_k": [{"label": "yes", "score": 0.9}, {"label": "no", "score": 0.05}],
        "duration_s": 1.0,
    }
    for name in ("r.csv", "r.jsonl"):
        w = RowWriter(tmp_path / name)
        w.write(row)
        w.close()
        back = read_rows(tmp_path / name)[0]
        assert back["path"] == row["path"] and back["label"] == "yes"
    assert json.loads((tmp_path / "r.jsonl").read_text())["top_k"][1] == {
        "label": "no",
        "score": 0.05,
    }
    assert read_rows(tmp_path / "r.csv")[0]["top_k"] == "yes:0.9 no:0.05"


def _sparse_recording(
    demo_data: Path, seconds: float, rate: int, words: list[tuple[float, str]]
) -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(round(seconds * rate)) * 0.002).astype(np.float32)
    for k, (at, word) in enumerate(words):
        clip = load_audio(held_out_clip(word, k % 2), rate)
        start = round(at * rate)
        audio[start : start + len(clip)] += clip
    return audio


def test_long_recording_timeline_rows_and_plot(demo_data, clip_model, tmp_path):
    words = [(2.0, "yes"), (5.0, "no"), (8.0, "left"), (11.0, "stop"), (14.0, "go")]
    rec = tmp_path / "rec.wav"
    sf.write(rec, _sparse_recording(demo_data, 17.0, 16000, words), 16000, subtype="PCM_16")
    out = tmp_path / "rows.csv"
    r = _cli(
        [
            "--model",
            str(clip_model),
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "plots"),
            str(rec),
        ],
        check_tf=True,
    )
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    summary = rows[-1]
    detections = rows[:-1]
    assert summary["kind"] == "recording" and float(summary["duration_s"]) == 17.0
    assert int(summary["detections"]) == len(detections)
    # every word found once, in its place, and nothing else
    assert [d["label"] for d in detections] == [w for _, w in words]
    for d, (at, _) in zip(detections, words):
        assert d["kind"] == "detection" and d["path"] == str(rec)
        assert at <= float(d["start_s"]) < float(d["end_s"]) <= at + 1.0
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 1
    import matplotlib.image

    assert matplotlib.image.imread(pngs[0]).shape[1] >= 1000


@pytest.mark.slow
def test_one_hour_recording_streams_in_bounded_memory(demo_data, clip_model, tmp_path):
    """Sparse speech at 8 kHz (58 MB): read, resampled and streamed block by block, so the
    CLI's peak memory stays under 400 MB (decoded whole, it took ~730 MB)."""
    words = [
        (600.0 * k + 30, w) for k, w in enumerate(["yes", "no", "up", "down", "left", "right"])
    ]
    rec = tmp_path / "hour.wav"
    sf.write(rec, _sparse_recording(demo_data, 3600.0, 8000, words), 8000, subtype="PCM_16")
    out = tmp_path / "rows.jsonl"
    # Measured from a small parent: a child spawned by this (large) process would report
    # this process's peak too.
    measure = (
        "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
        "_, s, u = os.wait4(p.pid, 0); print(os.waitstatus_to_exitcode(s), u.ru_maxrss)"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            measure,
            sys.executable,
            str(SCRIPT),
            "--model",
            str(clip_model),
            "--out",
            str(out),
            str(rec),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    status, peak_kb = map(int, r.stdout.split()[-2:])
    assert status == 0, r.stderr
    assert peak_kb / 1024 < 400, f"peak RSS {peak_kb / 1024:.0f} MB"
    rows = read_rows(out)
    assert rows[-1]["kind"] == "recording" and rows[-1]["duration_s"] == 3600.0
    assert len(rows) - 1 == rows[-1]["detections"]
    # 8 kHz audio lacks the upper half of the model's band: not every word is found, but
    # every detection is a spoken word in its place
    spoken = {w: at for at, w in words}
    assert len(rows) - 1 >= len(words) // 2
    assert all(
        spoken[r["label"]] <= r["start_s"] < r["end_s"] <= spoken[r["label"]] + 1 for r in rows[:-1]
    )


def test_rows_and_plot_do_not_depend_on_the_block_size(demo_data, clip_model, tmp_path):
    """A 2-minute stereo 22.05 kHz recording, down-mixed and resampled as it streams, read
    1000 frames at a time and in one block: the same rows and the same plot. Short
    segments make it several passes of the batched streaming model."""
    names = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    words = [(1.5 + 4 * k, names[k % len(names)]) for k in range(29)]
    mono = _sparse_recording(demo_data, 120.0, 22050, words)
    rec = tmp_path / "two_minutes.wav"
    sf.write(rec, np.stack([mono, 0.5 * mono], 1), 22050, subtype="PCM_16")
    model = open_model(clip_model, segment_s=7.0)
    # Streamed decoding gives the samples decoding the whole file gives, so the same hops.
    whole = load_audio(rec, 16000)
    streamed = list(stream_audio(rec, 16000, block_frames=1000))
    assert len(streamed) > 100
    np.testing.assert_array_equal(np.concatenate(streamed), whole)
    np.testing.assert_array_equal(
        np.concatenate(list(model.timeline(streamed))),
        np.concatenate(list(model.timeline([whole]))),
    )
    rows = {}
    for name, block in (("tiny", 1000), ("one", 1 << 24)):
        settings = Settings(threshold=0.1, block_frames=block, plot_dir=tmp_path / name)
        summary = run_transcription(model, [(str(rec), None)], tmp_path / f"{name}.jsonl", settings)
        assert summary.recordings == 1 and summary.errors == 0
        rows[name] = read_rows(tmp_path / f"{name}.jsonl")
    assert rows["tiny"] == rows["one"]
    assert rows["one"][-1]["duration_s"] == 120.0 and rows["one"][-1]["detections"] > 5
    import matplotlib.image

    tiny, one = (matplotlib.image.imread(next((tmp_path / n).glob("*.png"))) for n in rows)
    np.testing.assert_array_equal(tiny, one)


def _wav_header(path: Path, rate: int, channels: int, frames: int) -> Path:
    """A 16-bit PCM WAV declaring whatever rate and channel count, silent samples."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * channels * frames))
    return path


def test_implausible_headers_get_error_rows_and_the_run_goes_on(odd_files, clip_model, tmp_path):
    """Checked from the header before any decoding: a 20 KB file declaring 1 Hz would be
    resampled into a 10,000-second recording."""
    many = tmp_path / "64_channels.wav"
    sf.write(many, np.zeros((1600, 64), np.float32), 16000, subtype="PCM_24")  # soundfile's header
    cases = {
        _wav_header(
            tmp_path / "1hz.wav", 1, 1, 10000
        ): "implausible sample rate 1 Hz (allowed 1000-384000 Hz, see --min-rate)",
        _wav_header(
            tmp_path / "2mhz.wav", 2_000_000, 1, 10000
        ): "implausible sample rate 2000000 Hz (allowed 1000-384000 Hz, see --max-rate)",
        _wav_header(
            tmp_path / "5000_channels.wav", 16000, 5000, 2
        ): "implausible channel count 5000 (allowed 1-32, see --max-channels)",
        many: "implausible channel count 64 (allowed 1-32, see --max-channels)",
        _wav_header(
            tmp_path / "3_seconds.wav", 16000, 1, 48000
        ): "implausible duration 3.0 s (allowed up to 2.5 s, see --max-duration)",
    }
    assert (tmp_path / "1hz.wav").stat().st_size < 21000
    good = str(odd_files["good"])
    out = tmp_path / "rows.csv"
    r = _cli(
        [
            "--model",
            str(clip_model),
            "--out",
            str(out),
            "--max-duration",
            "2.5",
            *map(str, cases),
            good,
        ],
        check_tf=True,
    )
    assert r.returncode == EXIT_SOME_FAILED, r.stderr
    rows = {row["path"]: row for row in read_rows(out)}
    assert len(rows) == len(cases) + 1
    for path, problem in cases.items():
        assert rows[str(path)]["kind"] == "error" and rows[str(path)]["error"] == problem
    assert rows[good]["kind"] == "clip"
    from scripts.transcribe import main

    with pytest.raises(SystemExit):  # a usage error, not a run that rejects every file
        main(["--min-rate", "0", good])


def test_keras_run_directory_gives_the_same_labels(odd_files, tiny_run, tiny_export):
    items = [(str(odd_files[n]), None) for n in ("good", "pcm24", "float_48k")]
    from pipeline.train.recognizer import KerasRecognizer

    keras_model = KerasRecognizer(tiny_run, 16)
    tfl_model = open_model(tiny_export / "model_batch_float.tflite")
    clips = np.stack([load_audio(p, 16000)[:16000] for p, _ in items])
    np.testing.assert_allclose(keras_model.predict(clips), tfl_model.predict(clips), atol=1e-4)


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_segmented_streaming_matches_each_segment_streamed_alone(
    demo_data, tiny_run, tiny_export, kind
):
    """The batched timeline cuts the signal into fixed segments run K side by side, each
    after a warm-up of the audio before it; every segment must equal the exported
    streaming model run on that audio alone, however the signal was cut into blocks."""
    from pipeline.runtime.model import StreamingModel
    from pipeline.train.recognizer import KerasStream

    audio = _sparse_recording(demo_data, 7.3, 16000, [(1.0, "yes"), (4.0, "no")])
    warmup, segment = 10, 23
    if kind == "keras":
        stream = KerasStream(tiny_run, 3)
    else:
        stream = StreamingModel(tiny_export / "stream_batch_float.tflite")
        assert stream.batch == STREAM_BATCH
    cuts = np.sort(np.random.default_rng(0).integers(0, len(audio), 40))
    got = np.concatenate(list(segmented_stream(stream, np.split(audio, cuts), warmup, segment)))
    whole = np.concatenate(list(segmented_stream(stream, [audio], warmup, segment)))
    np.testing.assert_array_equal(got, whole)
    single = StreamingModel(tiny_export / "stream_float.tflite")
    hop = single.hop_samples
    n = -(-len(audio) // hop)
    assert got.shape == (n, len(single.labels))
    segments = -(-n // segment)
    assert segments > 2 * stream.batch  # several passes, the last one partial
    padded = np.zeros((warmup + segments * segment) * hop, np.float32)
    padded[warmup * hop : warmup * hop + len(audio)] = audio
    for j in range(segments):
        alone = single.run(padded[j * segment * hop : (j * segment + warmup + segment) * hop])
        mine = got[j * segment : (j + 1) * segment]
        np.testing.assert_allclose(mine, alone[warmup : warmup + len(mine)], atol=2e-4)


def test_the_phones_streaming_file_alone_labels_clips_and_recordings(
    pretrained, demo_data, tmp_path
):
    """--model stream_int8.tflite: clips are streamed from the initial state, recordings
    get their timeline from the same file."""
    words = [(2.0, "yes"), (5.0, "no"), (8.0, "left")]
    rec = tmp_path / "rec.wav"
    sf.write(rec, _sparse_recording(demo_data, 11.0, 16000, words), 16000, subtype="PCM_16")
    out = tmp_path / "rows.csv"
    model = pretrained / "stream_int8.tflite"
    r = _cli(
        ["--model", str(model), "--out", str(out), str(held_out_clip("stop")), str(rec)],
        check_tf=True,
    )
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert [r["label"] for r in rows if r["kind"] == "clip"] == ["stop"]
    assert [d["label"] for d in rows if d["kind"] == "detection"] == [w for _, w in words]
