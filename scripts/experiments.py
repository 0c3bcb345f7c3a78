#!/usr/bin/env python3
"""Train a list of recipes and score each on a test folder, one table row per recipe.

  python scripts/experiments.py --data TRAIN_DIR --test TEST_DIR --out RUNS_DIR \
      --results docs/experiments.jsonl "NAME=key=value; key=value" ...

Each NAME=... argument is one recipe: overrides, separated by ';', on top of --config.
A recipe whose run directory already has metrics.json is scored again without
retraining, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--data", required=True)
    parser.add_argument("--test", required=True, help="folder scored with scripts/evaluate.py")
    parser.add_argument("--out", required=True, help="parent folder of the run directories")
    parser.add_argument("--results", required=True, help="JSONL file, one row per recipe")
    parser.add_argument("--table", help="also rewrite this Markdown table from --results")
    parser.add_argument("recipes", nargs="*", metavar="NAME=k=v; k=v")
    args = parser.parse_args(argv)
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()

    from pipeline.train.config import load_config
    from pipeline.train.evaluate import evaluate
    from pipeline.train.fit import train

    for recipe in args.recipes:
        name, _, over = recipe.partition("=")
        overrides = [o.strip() for o in over.split(";") if o.strip()]
        cfg = load_config(args.config, overrides)
        run = Path(args.out) / name
        start = time.time()
        metrics = train(cfg, args.data, run, verbose=2)
        rep, _ = evaluate(run, args.test)
        row = {
            "name": name,
            "data": Path(args.data).name,
            "overrides": overrides,
            "parameters": metrics["parameters"],
            "train_seconds": metrics["train_seconds"],
            "epochs": metrics["epochs_run"],
            "val_accuracy": round(metrics["validation"]["accuracy"], 4),
            "test_accuracy": round(rep["accuracy"], 4),
            "n_test": rep["n"],
            "wall_seconds": round(time.time() - start, 1),
        }
        print(json.dumps(row), flush=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
    if args.table:
        write_table(Path(args.results), Path(args.table))
    return 0


def write_table(results: Path, table: Path) -> None:
    """Markdown rows between the page's markers for this results file (named by its stem),
    so one page can hold several tables; markers are appended when missing."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    rows = list({r["name"]: r for r in rows}.values())  # a rescored recipe: its last row
    lines = [
        "| recipe | data | overrides | params | val acc | test acc | epochs | train s | s/epoch |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        over = "; ".join(r["overrides"]).replace("|", "\\|") or "(config as is)"
        lines.append(
            f"| {r['name']} | {r.get('data', '')} | `{over}` | {r['parameters']:,} | {r['val_accuracy']:.3f} "
            f"| {r['test_accuracy']:.3f} | {r['epochs']} | {r['train_seconds']:.0f} "
            f"| {r['train_seconds'] / max(1, r['epochs']):.1f} |"
        )
    start, end = f"<!-- results:{results.stem} -->", f"<!-- /results:{results.stem} -->"
    text = table.read_text() if table.exists() else ""
    if start not in text:
        text += f"{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    from pipeline.runtime.files import atomic_write_text

    atomic_write_text(table, f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
