"""Output rows of transcription: CSV or JSONL, flushed as they come, resumable."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TextIO

from pipeline.runtime.files import atomic_write

FIELDS = [
    "path",
    "kind",
    "label",
    "score",
    "top_k",
    "duration_s",
    "start_s",
    "end_s",
    "detections",
    "error",
]
DONE_KINDS = ("clip", "recording")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _csv_value(key: str, value) -> str:
    if key == "top_k" and isinstance(value, list):
        return " ".join(f"{d['label']}:{d['score']}" for d in value)
    return "" if value is None else str(value)


def json_line(row: dict) -> str:
    """A row as one JSONL line: empty fields left out."""
    return json.dumps({k: v for k, v in row.items() if v not in (None, "")}) + "\n"


class RowWriter:
    """CSV or JSONL by extension (CSV on stdout when path is None)."""

    def __init__(self, path: Path | None, append: bool = False):
        self.jsonl = path is not None and path.suffix.lower() in JSONL_SUFFIXES
        if path is None:
            self.f: TextIO = sys.stdout
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a" if append else "w", newline="" if not self.jsonl else None)
        self._owned = path is not None
        if not self.jsonl:
            self._csv = csv.writer(self.f)
            if not (append and path is not None and path.stat().st_size):
                self._csv.writerow(FIELDS)

    def write(self, row: dict) -> None:
        if self.jsonl:
            self.f.write(json_line(row))
        else:
            self._csv.writerow([_csv_value(k, row.get(k)) for k in FIELDS])

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self.f.close()


def read_rows(path: Path) -> list[dict]:
    """The rows of an output file; a half-written last line (an interrupted run) is dropped."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows
    return list(csv.DictReader(io.StringIO(text, newline="")))


def prepare_resume(path: Path) -> set[str]:
    """Paths already transcribed in path. The file is rewritten (atomically) to keep only
    their rows, so a file that failed, or was cut off half way, is done again, once."""
    if not path.exists():
        return set()
    rows = read_rows(path)
    done = {r["path"] for r in rows if r.get("kind") in DONE_KINDS and r.get("path")}

    def write(tmp: str) -> None:
        w = RowWriter(Path(tmp))
        for r in rows:
            if r.get("path") in done:
                w.write(r)
        w.close()

    atomic_write(path, write)
    return done
