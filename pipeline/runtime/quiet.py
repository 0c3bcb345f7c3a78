"""Silencing what native libraries print straight to the process's stderr.

LiteRT announces its XNNPACK delegate on every interpreter, and TensorFlow prints oneDNN,
CPU-feature and absl lines while it loads, all below any Python logging setting. The
command-line tools keep those lines from their users; exceptions still propagate, and
Python-level warnings raised meanwhile are the only thing lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
