"""Inputs of batch transcription: what paths to read, and decoding them ahead of use.

Every input names its own problem: a bad path, an implausible header or an undecodable file
becomes one error row, never a failed run. Only clips are decoded ahead: a longer file is
passed on as its checked header, to be streamed by whoever transcribes it.
"""

from __future__ import annotations

import glob
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import numpy as np

from pipeline.runtime.audio import AUDIO_EXTENSIONS, DEFAULT_LIMITS, AudioLimits, Header, read_clip
from pipeline.runtime.errors import AudioError, one_line


def expand_inputs(
    inputs: Iterable[str], stdin: TextIO | None = None
) -> Iterator[tuple[str, str | None]]:
    """(path, problem) for every input: files, directories (recursive, audio extensions),
    glob patterns, @list files and '-' (paths on stdin), each path once. A path that does
    not exist is passed on so that it gets its own error row; problem is set for an input
    that names no file at all (a pattern matching nothing, an unreadable list)."""
    seen: set[str] = set()

    def one(item: str, from_list: bool) -> Iterator[tuple[str, str | None]]:
        if not from_list and item == "-":
            for line in stdin or sys.stdin:
                yield from one(line.rstrip("\r\n"), True)
        elif not from_list and item.startswith("@"):
            try:
                lines = Path(item[1:]).read_text().splitlines()
            except OSError as exc:
                yield item, f"cannot read path list ({exc.strerror or exc})"
                return
            except UnicodeDecodeError:
                yield item, "path list is not text"
                return
            for line in lines:
                yield from one(line.strip(), True)
        elif not item or from_list and item.startswith("#"):
            return
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                        yield os.path.join(root, name), None
        elif not os.path.lexists(item) and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item, "no files match this pattern"
            for m in matches:
                yield from (one(m, True) if os.path.isdir(m) else [(m, None)])
        else:
            yield item, None

    for item in inputs:
        for path, problem in one(item, False):
            key = os.path.normpath(path)
            if key not in seen:
                seen.add(key)
                yield path, problem


Decoded = np.ndarray | Header | str  # a clip's audio, a recording's header, or a problem


def decode_files(
    paths: list[str], sample_rate: int, longest: int, limits: AudioLimits = DEFAULT_LIMITS
) -> list[tuple[str, Decoded]]:
    """(path, clip audio, recording header or problem) of each path, in order."""
    out: list[tuple[str, Decoded]] = []
    for p in paths:
        try:
            out.append((p, read_clip(p, sample_rate, longest, limits)))
        except AudioError as exc:
            out.append((p, exc.problem))
        except (OSError, MemoryError, ValueError, RuntimeError) as exc:
            out.append((p, f"cannot read audio ({one_line(exc)})"))
    return out


def decoded(
    items: Iterable[tuple[str, str | None]],
    sample_rate: int,
    workers: int,
    longest: int,
    limits: AudioLimits = DEFAULT_LIMITS,
    chunk: int = 64,
    budget_bytes: int = 512 << 20,
) -> Iterator[tuple[str, Decoded]]:
    """(path, audio, header or problem) in input order: a file that resamples to at most
    longest samples is decoded by worker threads a few chunks ahead, a longer one yields
    its header (checked against limits) and is never decoded here. The look-ahead is
    bounded by file sizes on disk, each counted at most as a decoded clip (what is kept
    of it)."""
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")

    def submit(paths: list[str]) -> Future:
        return pool.submit(decode_files, paths, sample_rate, longest, limits)

    ahead: deque[tuple[Future | list, int]] = deque()
    in_flight, it, exhausted = 0, iter(items), False
    try:
        while True:
            while not exhausted and (
                not ahead or len(ahead) < 3 * max(1, workers) and in_flight < budget_bytes
            ):
                paths: list[str] = []
                size = 0
                for path, problem in it:
                    if problem:
                        if paths:
                            ahead.append((submit(paths), size))
                            in_flight += size
                            paths, size = [], 0
                        ahead.append(([(path, problem)], 0))
                        break
                    paths.append(path)
                    try:
                        size += min(os.stat(path).st_size, 4 * longest)
                    except OSError:
                        pass
                    if len(paths) >= chunk or size >= budget_bytes // 4:
                        break
                else:
                    exhausted = True
                if paths:
                    ahead.append((submit(paths), size))
                    in_flight += size
            if not ahead:
                return
            job, size = ahead.popleft()
            in_flight -= size
            yield from (job.result() if isinstance(job, Future) else job)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
