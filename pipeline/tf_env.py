"""Importing TensorFlow without its start-up banner (see pipeline/runtime/quiet.py)."""

from __future__ import annotations

import os
import sys

from pipeline.runtime.quiet import native_stderr_silenced


def import_tensorflow() -> None:
    """Import tensorflow and keras once, quietly; later imports find them loaded."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
