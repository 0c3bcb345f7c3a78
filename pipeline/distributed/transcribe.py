"""Batch transcription on a Ray cluster: the rows scripts/transcribe.py writes, for millions
of files.

The job is one Ray Data pipeline:

  paths   listed here (files, folders, globs; a bucket prefix through pyarrow), or read by
          the cluster from manifests (@LIST: one path or URI a line, local or s3://, gs://)
  decode  Ray tasks run the runtime's decode_files: a clip's audio, a longer recording's
          header, or the problem that makes the file an error row (object-storage files
          are copied to local scratch first)
  label   an actor pool; each actor holds the runtime's LiteRT recognizer and runs its
          Transcriber on a batch: clips classified together, recordings streamed through
          the streaming model into detection rows
  write   part files under a new prefix per run, JSONL lines as RowWriter writes them or
          Parquet, each written whole or not at all

A killed actor is restarted and its batch retried; a part file is named by its write task,
so a retried task rewrites its own file rather than adding one, and no row is lost or
doubled. `resume` skips the paths earlier runs under the same output finished (failed
files are tried again, as the local --resume does).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.runtime.audio import AUDIO_EXTENSIONS, Header
from pipeline.runtime.errors import one_line
from pipeline.runtime.inputs import Decoded, decode_files, expand_inputs
from pipeline.runtime.model import MANIFEST
from pipeline.runtime.params import FrontEnd
from pipeline.runtime.recognizer import open_model
from pipeline.runtime.rows import DONE_KINDS, FIELDS, json_line
from pipeline.runtime.transcribe import Settings, Summary, Transcriber

FORMATS = {"jsonl": ".jsonl", "parquet": ".parquet"}
RUN_PREFIX = "run-"
PART_PREFIX = "part-"
# A folder or bucket prefix listed from the driver may hold at most this many files; a
# bigger job reads a manifest on the cluster (docs/distributed.md).
LIST_LIMIT = 100_000

_TYPES = {
    "score": pa.float64(),
    "top_k": pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())])),
    "duration_s": pa.float64(),
    "start_s": pa.float64(),
    "end_s": pa.float64(),
    "detections": pa.int64(),
}
ROW_SCHEMA = pa.schema([(name, _TYPES.get(name, pa.string())) for name in FIELDS])


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or a URI (s3://, gs://, file://)."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def fetch(uri: str, folder: str) -> tuple[str | None, str]:
    """A local copy of an object in folder, or None and the problem that makes it an
    error row."""
    local = os.path.join(folder, uuid.uuid4().hex + os.path.splitext(uri)[1])
    try:
        fs, path = filesystem(uri)
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, ValueError) as exc:
        return None, f"cannot read ({one_line(exc)})"
    return local, ""


def path_key(paths: Iterable[str]) -> np.ndarray:
    """64-bit hashes of paths: a million finished paths are 8 MB to send to every task."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little")
            for p in paths
        ],
        np.uint64,
    )


def decode_batch(
    batch: dict[str, np.ndarray], sample_rate: int, longest: int, limits, done: np.ndarray
) -> dict[str, np.ndarray]:
    """A decode task: clips padded to `longest` with their length, recordings as headers,
    problems as text; blank lines, comments and finished paths dropped."""
    paths = [str(p).strip() for p in batch["path"]]
    problems = [str(p) for p in batch["problem"]]
    keep = [i for i, p in enumerate(paths) if p and not p.startswith("#")]
    if len(done):
        keys = path_key(paths[i] for i in keep)
        found = done[np.minimum(np.searchsorted(done, keys), len(done) - 1)] == keys
        keep = [i for i, hit in zip(keep, found) if not hit]
    out: list[tuple[str, Decoded]] = []
    with tempfile.TemporaryDirectory(prefix="kws-") as scratch:
        for i in keep:
            path = paths[i]
            if problems[i]:
                out.append((path, problems[i]))
            elif not is_uri(path):
                out.extend(decode_files([path], sample_rate, longest, limits))
            else:
                local, problem = fetch(path, scratch)
                if local is None:
                    out.append((path, problem))
                    continue
                got = decode_files([local], sample_rate, longest, limits)[0][1]
                out.append((path, got.replace(local, path) if isinstance(got, str) else got))
                os.unlink(local)
    n = len(out)
    columns: dict[str, Any] = {
        "path": np.array([p for p, _ in out], object),
        "kind": np.empty(n, object),
        "problem": np.full(n, "", object),
        "header": np.zeros((n, 3), np.int64),  # rate, channels, frames of a recording
        "samples": np.zeros(n, np.int64),
        "audio": np.zeros((n, longest), np.float32),
    }
    for j, (_, d) in enumerate(out):
        if isinstance(d, str):
            columns["kind"][j], columns["problem"][j] = "error", d
        elif isinstance(d, Header):
            columns["kind"][j] = "recording"
            columns["header"][j] = (d.rate, d.channels, d.frames)
        else:
            columns["kind"][j], columns["samples"][j] = "clip", len(d)
            columns["audio"][j, : len(d)] = d
    return columns


class _Rows:
    """What the Transcriber writes to, kept in memory for one batch."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        pass


class Labeller:
    """An actor: the exported model written to local scratch and opened once, then the
    runtime's Transcriber on every batch it is handed."""

    def __init__(self, model_files: dict[str, bytes], model_name: str | None, settings: Settings):
        folder = Path(tempfile.mkdtemp(prefix="kws-model-"))
        for name, data in model_files.items():
            (folder / name).write_bytes(data)
        self.model = open_model(folder / model_name if model_name else folder, instances=1)
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        items: list[tuple[str, Decoded]] = []
        copies: dict[str, str] = {}  # local copy -> URI of a recording in object storage
        rows = _Rows()
        with tempfile.TemporaryDirectory(prefix="kws-") as scratch:
            for path, kind, problem, header, samples, audio in zip(
                batch["path"],
                batch["kind"],
                batch["problem"],
                batch["header"],
                batch["samples"],
                batch["audio"],
            ):
                path = str(path)
                if kind == "clip":
                    items.append((path, audio[:samples]))
                elif kind == "error":
                    items.append((path, str(problem)))
                elif not is_uri(path):
                    items.append((path, Header(*map(int, header))))
                else:  # streamed from a local copy
                    local, problem = fetch(path, scratch)
                    if local is None:
                        items.append((path, problem))
                    else:
                        copies[local] = path
                        items.append((local, Header(*map(int, header))))
            Transcriber(self.model, rows, self.settings).transcribe(items)  # type: ignore[arg-type]
        for row in rows.rows:
            if row["path"] in copies:
                local, row["path"] = row["path"], copies[row["path"]]
                if row.get("error"):
                    row["error"] = row["error"].replace(local, row["path"])
        return pa.Table.from_pylist(rows.rows, schema=ROW_SCHEMA)


def _counts(table: pa.Table) -> dict[str, float]:
    rows = table.select(["kind", "duration_s", "detections"]).to_pylist()
    kinds = [r["kind"] for r in rows]
    return {
        "clips": kinds.count("clip"),
        "recordings": kinds.count("recording"),
        "errors": kinds.count("error"),
        "audio_s": sum(r["duration_s"] or 0.0 for r in rows if r["kind"] in DONE_KINDS),
        "detections": sum(r["detections"] or 0 for r in rows if r["kind"] == "recording"),
    }


def _write_table(table: pa.Table, location: str, fmt: str) -> None:
    """One part file, whole or not at all: a local file is written beside its name and
    renamed; an object appears when its upload completes."""
    fs, path = filesystem(location)
    local = isinstance(fs, pafs.LocalFileSystem)
    if local:
        fs.create_dir(os.path.dirname(path), recursive=True)
    target = os.path.join(os.path.dirname(path), "." + os.path.basename(path)) if local else path
    if fmt == "parquet":
        pq.write_table(table, target, filesystem=fs)
    else:
        text = "".join(json_line(row) for row in table.to_pylist())
        with fs.open_output_stream(target) as f:
            f.write(text.encode())
    if local:
        fs.move(target, path)


class PartFiles(Datasink):
    """The Ray Data sink: part-<write task>.<fmt> under a run prefix, at least
    rows_per_file rows each (but the last), and the counts of what was written."""

    def __init__(self, prefix: str, fmt: str, rows_per_file: int):
        self.prefix, self.fmt, self.rows_per_file = prefix, fmt, rows_per_file
        self.totals: dict[str, float] = {}

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks, ctx) -> dict[str, float]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return {}
        table = pa.concat_tables(tables).cast(ROW_SCHEMA)
        name = f"{PART_PREFIX}{ctx.task_idx:06d}{FORMATS[self.fmt]}"
        _write_table(table, f"{self.prefix}/{name}", self.fmt)
        return _counts(table)

    def on_write_complete(self, write_result) -> None:
        for counts in write_result.write_returns:
            for k, v in counts.items():
                self.totals[k] = self.totals.get(k, 0) + v


def part_files(out: str) -> list[str]:
    """The finished part files of every run under out, as locations."""
    fs, base = filesystem(out)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        return []
    found = []
    for info in infos:
        rel = os.path.relpath(info.path, base).replace(os.sep, "/")
        parts = rel.split("/")
        if (
            info.type == pafs.FileType.File
            and len(parts) == 2
            and parts[0].startswith(RUN_PREFIX)
            and parts[1].startswith(PART_PREFIX)
            and os.path.splitext(parts[1])[1] in FORMATS.values()
        ):
            found.append(_location(out, rel))
    return sorted(found)


def _location(out: str, rel: str) -> str:
    return f"{out.rstrip('/')}/{rel}"


def read_part(location: str) -> list[dict]:
    """The rows of one part file."""
    fs, path = filesystem(location)
    if location.endswith(FORMATS["parquet"]):
        return pq.read_table(path, filesystem=fs).to_pylist()
    with fs.open_input_stream(path) as f:
        return [json.loads(line) for line in f.read().decode().splitlines() if line]


def prepare_resume(out: str) -> set[str]:
    """Paths earlier runs under out finished; their parts are rewritten without the error
    rows of the paths to try again, so every path ends with its rows in one part."""
    done: set[str] = set()
    parts = {loc: read_part(loc) for loc in part_files(out)}
    for rows in parts.values():
        done.update(r["path"] for r in rows if r.get("kind") in DONE_KINDS)
    for loc, rows in parts.items():
        kept = [r for r in rows if r["path"] in done]
        if len(kept) < len(rows):
            fmt = "parquet" if loc.endswith(FORMATS["parquet"]) else "jsonl"
            if kept:
                _write_table(pa.Table.from_pylist(kept, schema=ROW_SCHEMA), loc, fmt)
            else:
                fs, path = filesystem(loc)
                fs.delete_file(path)
    return done


def _listed(uri: str) -> list[tuple[str, str]]:
    """(path, problem) of an object or of the audio objects under a prefix."""
    fs, base = filesystem(uri)
    try:
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [(uri, "")]
        if info.type == pafs.FileType.NotFound:
            return [(uri, "file not found")]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except OSError as exc:
        return [(uri, f"cannot list ({one_line(exc)})")]
    found = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File and os.path.splitext(i.path)[1].lower() in AUDIO_EXTENSIONS
    )
    if len(found) > LIST_LIMIT:
        raise ValueError(
            f"{uri}: {len(found)} files is too many to list from here; give a manifest "
            "(@LIST, read by the cluster: docs/distributed.md)"
        )
    return [(_location(uri, os.path.relpath(p, base).replace(os.sep, "/")), "") for p in found]


def input_dataset(inputs: list[str]) -> ray.data.Dataset:
    """A Ray dataset of (path, problem): manifests (@LIST, local or URI) read by the
    cluster, everything else listed here."""
    listed: list[tuple[str, str]] = []
    for item in inputs:
        if is_uri(item):
            listed.extend(_listed(item))
    local = [i for i in inputs if not i.startswith("@") and not is_uri(i)]
    listed.extend((p, problem or "") for p, problem in expand_inputs(local))
    parts = []
    if listed:
        parts.append(ray.data.from_items([{"path": p, "problem": e} for p, e in listed]))
    manifests = [i[1:] for i in inputs if i.startswith("@")]
    if manifests:
        parts.append(
            ray.data.read_text(manifests).map_batches(
                lambda b: {"path": b["text"], "problem": np.full(len(b["text"]), "", object)}
            )
        )
    if not parts:
        raise ValueError("no inputs")
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def new_prefix(out: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return _location(out, f"{RUN_PREFIX}{stamp}-{uuid.uuid4().hex[:6]}")


def model_files(model: str | Path | None) -> tuple[dict[str, bytes], str | None, FrontEnd]:
    """What an actor needs to open the model as open_model(model) does here: the exported
    files and manifest of its folder, the file name given (None for the folder), and its
    front end."""
    recognizer = open_model(model)
    folder = recognizer.path.parent
    files = {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.suffix == ".tflite" or p.name == MANIFEST
    }
    name = Path(model).name if model is not None and Path(model).is_file() else None
    return files, name, recognizer.front_end


def model_actors(cpus: int, wanted: int | None = None) -> int:
    """How many model actors a cluster of `cpus` CPUs runs: `wanted`, or three quarters of
    them, always fewer than all (decode and write tasks need CPUs too: an actor pool
    holding every CPU makes Ray Data wait forever, ray issue 44687)."""
    if cpus < 2:
        raise ValueError(f"the Ray cluster has {cpus} CPU(s): it needs 2, one for the model")
    actors = wanted or max(1, cpus * 3 // 4)
    if actors >= cpus:
        raise ValueError(
            f"--actors {actors}: keep it below the cluster's {cpus} CPUs, which decoding "
            "and writing need too (ray issue 44687)"
        )
    return actors


def transcribe_on_ray(
    inputs: list[str],
    out: str,
    model: str | Path | None = None,
    settings: Settings | None = None,
    fmt: str = "jsonl",
    resume: bool = False,
    actors: int | None = None,
    batch_rows: int = 256,
    rows_per_file: int = 10_000,
) -> tuple[Summary, str]:
    """Transcribe inputs on the Ray cluster this process is connected to into a new run
    prefix under out (a folder or bucket prefix); the summary and the prefix."""
    start = time.perf_counter()
    settings = settings or Settings()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = out if is_uri(out) else os.path.abspath(out)
    files, name, front_end = model_files(model)
    earlier = part_files(out)
    if earlier and not resume:
        raise ValueError(f"{out}: holds earlier runs; --resume continues them, or give a new --out")
    done = prepare_resume(out) if resume else set()
    actors = model_actors(int(ray.cluster_resources().get("CPU", 0)), actors)
    prefix = new_prefix(out)
    ds = input_dataset(inputs).map_batches(
        decode_batch,
        batch_size=64,
        num_cpus=0.5,  # much of a decode task is waiting for storage; a task, not the actors
        fn_kwargs={
            "sample_rate": front_end.sample_rate,
            "longest": front_end.clip_samples,
            "limits": settings.limits,
            "done": np.sort(path_key(done)),
        },
    )
    ds = ds.map_batches(
        Labeller,
        batch_size=batch_rows,
        fn_constructor_kwargs={"model_files": files, "model_name": name, "settings": settings},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_cpus=1,
    )
    sink = PartFiles(prefix, fmt, rows_per_file)
    ds.write_datasink(sink)
    t = sink.totals
    summary = Summary(
        files=int(t.get("clips", 0) + t.get("recordings", 0) + t.get("errors", 0)),
        clips=int(t.get("clips", 0)),
        recordings=int(t.get("recordings", 0)),
        errors=int(t.get("errors", 0)),
        audio_s=float(t.get("audio_s", 0.0)),
        detections=int(t.get("detections", 0)),
        wall_s=time.perf_counter() - start,
    )
    return summary, prefix
