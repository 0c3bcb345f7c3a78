#!/usr/bin/env python3
"""Side by side: the clip labels of several transcriptions of the same files.

  python scripts/compare_transcripts.py A.csv B.csv [...]

One line per file: the word its folder names, then each transcription's label (a `*` marks
a label that differs from the folder name), then each transcription's count of matches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="+", help="transcription outputs (CSV or JSONL)")
    args = parser.parse_args(argv)

    from pipeline.runtime.rows import read_rows

    try:
        tables = [
            {r["path"]: r["label"] for r in read_rows(Path(f)) if r.get("kind") == "clip"}
            for f in args.results
        ]
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = [Path(f).stem for f in args.results]
    width = max(len(n) for n in names) + 2
    print(f"{'file':<40}{'word':<10}" + "".join(f"{n:<{width}}" for n in names))
    hits = [0] * len(tables)
    for path in tables[0]:
        word = Path(path).parent.name
        cells = []
        for i, table in enumerate(tables):
            label = table.get(path, "-")
            hits[i] += label == word
            cells.append(f"{label + ('' if label == word else ' *'):<{width}}")
        print(f"{Path(path).parent.name + '/' + Path(path).name:<40}{word:<10}" + "".join(cells))
    print(f"{'correct':<50}" + "".join(f"{f'{h}/{len(tables[0])}':<{width}}" for h in hits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
