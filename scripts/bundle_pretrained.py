#!/usr/bin/env python3
"""Copy the files a phone app or the batch path uses from an export into models/pretrained.

  python scripts/bundle_pretrained.py --export RUN/export --source "what it was trained on"

Keeps stream_int8 (phone, streaming), model_float and model_dynamic (phone, clips) and
stream_batch_float (long recordings in batch transcription): under 1 MB together. The
manifest keeps only their entries; machine paths in it and in config.yaml become --source.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEEP = (
    "stream_int8.tflite",
    "model_float.tflite",
    "model_dynamic.tflite",
    "stream_batch_float.tflite",
)
LIMIT_BYTES = 1 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", required=True, help="export folder (scripts/export.py)")
    parser.add_argument("--source", required=True, help="training data, as the manifest says it")
    parser.add_argument("--out", default=str(ROOT / "models" / "pretrained"))
    args = parser.parse_args(argv)

    from pipeline.runtime.files import atomic_write_bytes, atomic_write_text

    src, out = Path(args.export), Path(args.out)
    try:
        manifest = json.loads((src / "manifest.json").read_text())
        files = {name: (src / name).read_bytes() for name in KEEP}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = sum(len(b) for b in files.values())
    if total > LIMIT_BYTES:
        print(
            f"error: {src}: the bundled files take {total} bytes, over {LIMIT_BYTES}",
            file=sys.stderr,
        )
        return 2
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k in KEEP}
    manifest["run"] = args.source
    for key in ("calibration", "check"):
        manifest[key]["source"] = args.source
    for name, content in files.items():
        atomic_write_bytes(out / name, content)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out / "labels.txt", (src / "labels.txt").read_text())
    config = [
        f"source: {json.dumps(args.source)}" if line.startswith("source:") else line
        for line in (src / "config.yaml").read_text().splitlines()
    ]
    atomic_write_text(out / "config.yaml", "\n".join(config) + "\n")
    print(f"{out}: {', '.join(KEEP)} ({total / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
