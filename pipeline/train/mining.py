"""Hard-negative mining: fine-tune a model on the windows where it fires on audio that
holds no command.

Each round runs the current run's streaming model over every mining recording with the
command detector, the way transcription runs it over long audio, so every detection is a
false trigger. The second of audio that ended at each one (and, if asked, the second
ending 0.25 s earlier) is written as a clip; a new run then starts from the current run's
weights (train.init_from) with all clips mined so far as extra _unknown_ training
examples (data.negatives). Rounds stop when the false accepts per hour on a held-out
negative stream stop falling, and the run with the fewest is chosen. Every step leaves
finished files behind it, so an interrupted mining run picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.data.folders import audio_files, load_dataset
from pipeline.runtime.audio import read_clip, stream_audio
from pipeline.runtime.detector import CommandDetector, Detection, detector_for
from pipeline.runtime.errors import AudioError, one_line
from pipeline.runtime.files import atomic_write, atomic_write_bytes, atomic_write_text
from pipeline.runtime.labels import UNKNOWN
from pipeline.runtime.model import MANIFEST, StreamingModel
from pipeline.runtime.params import load_model_info
from pipeline.runtime.recognizer import TFLiteRecognizer
from pipeline.runtime.streams import build_stream
from pipeline.runtime.transcribe import RecentAudio
from pipeline.train.config import load_config

STREAM_FILE = "stream_float.tflite"
SHIFT_S = 0.25  # the optional second window ends this much before the detection
CHECK_CLIPS = 100  # clips the streaming file is checked on against the Keras model
MARKER = ".complete"  # written last in a round's folder of mined windows
STATE = "mining.json"


class MiningError(ValueError):
    """Mining cannot start or go on; str() is one line naming why."""


# What scan hands each window to: (detection time, shift, audio ending shift before it).
WindowSink = Callable[[float, float, np.ndarray], object]


@dataclass
class Scan:
    """The detections on one recording and its length."""

    detections: list[Detection] = field(default_factory=list)
    seconds: float = 0.0


def export_stream(run_dir: Path, out: Path) -> Path:
    """The run's float streaming model and a manifest for it in out, checked against the
    Keras model as the exporter checks it: all mining needs, without the int8
    calibration and clip files of a full export. Kept when out already holds it."""
    path = out / STREAM_FILE
    if path.is_file() and (out / MANIFEST).is_file():
        return path
    import tensorflow as tf  # noqa: F401  (before keras, so conversion uses the TF backend)

    from pipeline.data.sources import open_source
    from pipeline.export.convert import convert, saved_model
    from pipeline.export.export import (
        FILES,
        check_file,
        clips,
        data_source,
        describe,
        fixed_batch_twin,
        manifest_header,
    )
    from pipeline.train.runs import load_run, run_config

    spec = next(s for s in FILES if s.name == STREAM_FILE)
    model, fe, labels = load_run(run_dir)
    cfg = run_config(run_dir)
    twin = fixed_batch_twin(model, cfg, fe, len(labels), spec.kind, 1)
    with tempfile.TemporaryDirectory() as tmp:
        content = convert(saved_model(twin, list(twin.output_names), Path(tmp)), spec.name)
    manifest = manifest_header(run_dir, fe, labels)
    entry = describe(spec, 1, twin, fe, {})
    source = open_source(data_source(cfg, None, run_dir), cfg["data"], fe, cfg["seed"], labels)
    x, _, _ = clips(
        source, fe, cfg, labels, ("validation", "test", "train"), CHECK_CLIPS, cfg["seed"]
    )
    probs = StreamingModel.from_bytes(content, manifest, entry).classify(x)
    check_file(spec, probs, model.predict(x, batch_size=64, verbose=0), {})
    manifest["files"][spec.name] = entry
    atomic_write_bytes(path, content)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return path


def scan(
    model: TFLiteRecognizer,
    path: Path,
    options: dict,
    shifts: tuple[float, ...] = (),
    sink: WindowSink | None = None,
) -> Scan:
    """Run a recording through the model's timeline and a detector at options, block by
    block as transcription streams long audio (Transcriber._recording), and hand sink a
    clip of audio ending `shift` seconds before each detection for every shift (zeros
    before the start), keeping only the audio a window may still need. A file no longer
    than a clip has no timeline (transcription labels it as one clip): an empty Scan."""
    fe = model.front_end
    sr, hop, n = fe.sample_rate, fe.step_samples, fe.clip_samples
    head = read_clip(path, sr, n)
    if isinstance(head, np.ndarray):
        return Scan(seconds=len(head) / sr)
    recent = RecentAudio()
    keep = n + round(max(shifts, default=0.0) * sr)  # audio a window may still need

    def read():
        for block in stream_audio(path, sr):
            recent.add(block)
            yield block

    out, scored = Scan(), 0
    detector = CommandDetector(model.labels, hop / sr, **options)
    for probs in model.timeline(read(), head.samples_at(sr)):
        for d in detector.process(probs):
            out.detections.append(d)
            for shift in shifts:
                end = min(recent.end, round((d.time_s - shift) * sr))
                if sink is not None and end > 0:
                    audio = recent.span(max(recent.start, end - n), end)
                    sink(d.time_s, shift, np.pad(audio, (n - len(audio), 0)))
        scored += len(probs)
        recent.drop_before(scored * hop - keep)
    out.seconds = recent.end / sr
    return out


def fa_per_hour(model: TFLiteRecognizer, path: Path, options: dict) -> float:
    """False accepts per hour on a negative stream: every detection is one."""
    try:
        found = scan(model, path, options)
    except AudioError as exc:
        raise MiningError(f"--held-out {exc.problem}") from None
    if not found.seconds:
        raise MiningError(f"--held-out {path}: empty")
    return round(len(found.detections) * 3600 / found.seconds, 2)


def window_name(source: Path, time_s: float, shift: float) -> str:
    """The source's stem, a digest of its path (two folders may hold the same name), the
    detection time and, for a shifted window, the shift."""
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:6]
    suffix = f"_minus{round(shift * 1000)}ms" if shift else ""
    return f"{source.stem}-{digest}_{time_s:.3f}s{suffix}.wav"


def mine_round(
    model: TFLiteRecognizer,
    sources: list[Path],
    options: dict,
    folder: Path,
    shifts: tuple[float, ...],
    log: Callable[[str], object] = print,
) -> dict:
    """Windows at every detection on every source into folder, then the marker with the
    counts; a folder with its marker is done and only read, one without it (interrupted)
    is mined again from scratch."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        shutil.rmtree(folder, ignore_errors=True)
    sr = model.front_end.sample_rate
    triggers, seconds, windows, skipped = 0, 0.0, [], []
    for source in sources:

        def write(time_s: float, shift: float, audio: np.ndarray, source: Path = source) -> None:
            name = folder / window_name(source, time_s, shift)
            atomic_write(name, lambda tmp: sf.write(tmp, audio, sr, "PCM_16", format="WAV"))
            windows.append(name)

        try:
            found = scan(model, source, options, shifts, write)
        except AudioError as exc:  # one unreadable recording costs itself, not the round
            log(f"warning: {exc.problem}; skipped")
            skipped.append(str(source))
            continue
        triggers += len(found.detections)
        seconds += found.seconds
    counts = {
        "triggers": triggers,
        "windows": len(windows),
        "audio_s": round(seconds, 3),
        "skipped": skipped,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKER, json.dumps(counts, indent=1) + "\n")
    return counts


def source_files(sources: list[Path]) -> list[Path]:
    """Every mining recording: the files given and the audio files under the folders."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = audio_files(source)
            if not found:
                raise MiningError(f"{source}: no audio files there")
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise MiningError(f"{source}: not found")
    return list(dict.fromkeys(files))


def check_held_out(held_out: Path, sources: list[Path]) -> None:
    """Refuse a held-out stream that is a mining recording or lies in a mining folder:
    training on its own false triggers would lower its false accepts per hour for nothing."""
    if not held_out.is_file():
        raise MiningError(f"--held-out {held_out}: file not found")
    target = held_out.resolve()
    for source in sources:
        where = source.resolve()
        if target == where or (source.is_file() and held_out.samefile(source)):
            raise MiningError(f"--held-out {held_out} is the mining source {source}")
        if source.is_dir() and target.is_relative_to(where):
            raise MiningError(f"--held-out {held_out} lies in the mining folder {source}")


def generate_negatives(data: str, cfg: dict, minutes: float, path: Path) -> Path:
    """A negative stream (make_stream.py --negative) of the training split's other words
    over its background noise, for mining without recordings of one's own: evaluation
    streams come from the other splits, so it never overlaps them. Kept once written."""
    if path.is_file():
        return path
    try:
        ds = load_dataset(data, cfg["data"], cfg["seed"], balance=False)
    except (FileNotFoundError, ValueError) as exc:
        raise MiningError(f"--generate: {one_line(exc)}") from None
    words = [(p, UNKNOWN) for p, i in ds.splits.get("train", []) if p and ds.labels[i] == UNKNOWN]
    if not words:
        raise MiningError(f"--generate: {data} has no {UNKNOWN} words in its training split")
    sr = cfg["front_end"]["sample_rate"]
    audio, _ = build_stream(
        words,
        ds.noise_files,
        minutes * 60,
        sr,
        cfg["seed"],
        unknown_percent=100.0,
        clip_seconds=cfg["front_end"]["clip_seconds"],
    )
    atomic_write(path, lambda tmp: sf.write(tmp, audio, sr, "PCM_16", format="WAV"))
    return path


@dataclass
class Plan:
    """What a mining run does; everything but rounds must stay the same to resume it."""

    run: Path  # the trained run to start from
    data: str  # its training data
    config: str | None  # its config file, and its key=value overrides
    overrides: list[str]
    sources: list[Path]  # recordings, or folders of them, that hold no command
    held_out: Path  # the negative stream false accepts per hour are measured on
    out: Path
    rounds: int = 3
    epochs: int = 10
    threshold: float | None = None  # None: the run's export's operating point, else default
    shifted: bool = False  # also the window ending SHIFT_S before each detection
    generate_minutes: float = 0.0  # a stream of the training split's other words to mine


def mine(plan: Plan, verbose: int = 0, log: Callable[[str], object] = print) -> dict:
    """Mining rounds as the module docstring says; returns what OUT/mining.json holds."""
    out, start = plan.out.resolve(), plan.run.resolve()
    data = _absolute(plan.data)
    config = _absolute(plan.config) if plan.config else None
    generated = out / "generated" / "negative_stream.wav"
    check_held_out(plan.held_out, plan.sources + ([generated] if plan.generate_minutes else []))
    files = source_files(plan.sources)
    cfg = load_config(config, plan.overrides)
    if not (start / "model.keras").is_file():
        raise MiningError(f"--run {plan.run}: no trained model (model.keras) there")
    options = _detector(start, plan.threshold, log)
    settings = {
        "run": str(start),
        "data": data,
        "config": config,
        "overrides": list(plan.overrides),
        "sources": [str(s.resolve()) for s in plan.sources],
        "held_out": str(plan.held_out.resolve()),
        "detector": json.loads(json.dumps(options)),
        "epochs": plan.epochs,
        "shifted": plan.shifted,
        "generate_minutes": plan.generate_minutes,
    }
    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state and state.get("settings") != settings:
        raise MiningError(
            f"{out} holds mining with other settings; use a new --out or the same settings"
        )
    state = {"settings": settings, "fa_per_hour": state.get("fa_per_hour", {}), "rounds": []}

    def save() -> None:
        atomic_write_text(state_path, json.dumps(state, indent=2) + "\n")

    def held_out_fa(run: Path) -> float:
        if str(run) not in state["fa_per_hour"]:
            state["fa_per_hour"][str(run)] = fa_per_hour(model_of(run), plan.held_out, options)
            save()
        return state["fa_per_hour"][str(run)]

    def model_of(run: Path) -> TFLiteRecognizer:
        name = "start" if run == start else run.name
        return TFLiteRecognizer(export_stream(run, out / "exports" / name))

    if plan.generate_minutes:
        files.append(generate_negatives(data, cfg, plan.generate_minutes, generated))
    shifts = (0.0, SHIFT_S) if plan.shifted else (0.0,)
    from pipeline.train.fit import train  # TensorFlow: after every check that needs none

    current, mined, stop = start, [], f"{plan.rounds} rounds done"
    candidates = [current]
    for k in range(1, plan.rounds + 1):
        before = held_out_fa(current)
        folder = out / "mined" / f"round{k}"
        found = mine_round(model_of(current), files, options, folder, shifts, log)
        record = {"round": k, "from": str(current), "mined": str(folder), **found}
        record.update(fa_per_hour_before=before)
        state["rounds"].append(record)
        if not found["triggers"]:
            save()
            stop = f"no false trigger in {found['audio_s'] / 60:.1f} min of mining audio"
            log(f"round {k}: {stop}")
            break
        mined.append(folder)
        run = out / f"round{k}"
        extra = [
            f"data.negatives={json.dumps(cfg['data']['negatives'] + [str(m) for m in mined])}",
            f"train.init_from={json.dumps(str(current))}",
            f"train.epochs={plan.epochs}",
        ]
        train(load_config(config, [*plan.overrides, *extra]), data, run, verbose)
        after = held_out_fa(run)
        record.update(run=str(run), fa_per_hour_after=after)
        save()
        total = sum(r["windows"] for r in state["rounds"])
        log(
            f"round {k}: {found['triggers']} false triggers in {found['audio_s'] / 60:.1f} min, "
            f"{found['windows']} windows added ({total} in all), "
            f"held-out FA/h {before:g} -> {after:g}"
        )
        candidates.append(run)
        current = run
        if after >= before or after == 0:
            stop = "held-out FA/h is 0" if after == 0 else "held-out FA/h did not fall"
            break
    final = min(candidates, key=lambda r: state["fa_per_hour"][str(r)])
    state.update(stopped=stop, final=str(final), final_fa_per_hour=state["fa_per_hour"][str(final)])
    save()
    log(f"final: {final} (held-out FA/h {state['final_fa_per_hour']:g}; {stop})")
    return state


def _absolute(path: str) -> str:
    """A local path made absolute, so the runs' configs and a resume work from any folder;
    anything else (a tfds: spec) as it is."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _detector(run: Path, threshold: float | None, log: Callable[[str], object]) -> dict:
    """The detector settings of every scan: the operating point in the run's export
    manifest, if it has one, with threshold (if given) replacing its threshold."""
    fe, labels = load_model_info(run)
    manifest_path = run / "export" / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    try:
        detector, line = detector_for(
            labels, fe.step_samples / fe.sample_rate, manifest, threshold=threshold
        )
    except ValueError as exc:
        raise MiningError(one_line(exc)) from None
    log(line)
    return detector.operating_point
