#!/usr/bin/env python3
"""Your own words from a few speakers: how well does a ten-word set recorded by five
people work for voices it never heard?

  python scripts/benchmark_custom.py --dev ../shared/data/speech_commands_dev \
      --test ../shared/data/speech_commands_test_dev [--levers NAME ...] [--seeds 0 1]

The training set is a folder-per-label collection of the ten command words said by the
five training-split speakers of --dev who have the most takes of all ten (no noise folder,
no list files: what a user brings). The test set is every take of the ten words in --test
(other speakers). Each row of LEVERS adds one setting to the row above it, starting from
the recipe a user got before (BEFORE); "running norm" tries an option on top of the final
recipe and "all but X" leaves one lever out of it. A finished run is scored again, not
retrained. Results go to OUT/results.jsonl and the table in docs/custom_words.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEAKERS = 5

# The recipe a user got before: a run as long as the set's epochs make it, a speaker split
# of whatever voices there are, nothing that varies the voice, no noise without a noise
# folder. Each lever below adds one setting to the row above it.
BEFORE = {
    "train.min_steps": "0",
    "data.split": "speaker",
    "augment.generated_noise": "false",
    "augment.pitch": "0",
    "augment.vtlp": "0",
}
STEPS = [
    ("before", {}),
    ("min steps", {"train.min_steps": "2000"}),
    ("take split", {"data.split": "auto"}),
    ("generated noise", {"augment.generated_noise": "true"}),
    ("voice variation", {"augment.pitch": "null", "augment.vtlp": "null"}),
    ("synthetic voices", {"data.synthetic": "true"}),
]
FINAL = STEPS[-1][0]  # today's defaults plus data.synthetic
LEVERS: dict[str, dict[str, str]] = {}
for _name, _change in STEPS:
    LEVERS[_name] = {**(list(LEVERS.values())[-1] if LEVERS else {}), **_change}
# an option tried on top of the final recipe
LEVERS["running norm"] = {**LEVERS[FINAL], "front_end.normalize": "running"}
# each lever left out of the final recipe, to see what it adds there (min steps changes
# nothing once the synthetic takes fill 38 batches an epoch)
for _name, _change in STEPS[2:-1]:
    LEVERS[f"all but {_name}"] = {k: v for k, v in LEVERS[FINAL].items() if k not in _change}


def overrides(lever: str, seed: int) -> list[str]:
    return [f"{k}={v}" for k, v in {**BEFORE, **LEVERS[lever], "seed": str(seed)}.items()]


def speakers_with_most_takes(dev: Path, words: list[str], n: int) -> list[str]:
    """Training-split speakers who said every word, most takes first (ties by id)."""
    held = set()
    for name in ("validation_list.txt", "testing_list.txt"):
        if (dev / name).exists():
            held |= set((dev / name).read_text().split())
    takes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for w in words:
        for f in (dev / w).glob("*.wav"):
            if f"{w}/{f.name}" not in held:
                takes[f.name.split("_nohash_")[0]][w] += 1
    full = [s for s, c in takes.items() if len(c) == len(words)]
    return sorted(full, key=lambda s: (-sum(takes[s].values()), s))[:n]


def link_set(out: Path, files: dict[str, list[Path]]) -> Path:
    """A folder-per-label view of the chosen files (symlinks, rebuilt each run)."""
    for word, paths in files.items():
        folder = out / word
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for p in paths:
            (folder / p.name).symlink_to(p.resolve())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dev", required=True, help="Speech Commands archive-layout folder")
    parser.add_argument("--test", required=True, help="12-class test folder (other speakers)")
    parser.add_argument("--out", default="runs/benchmarks/custom")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--levers", nargs="*", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--table", default="docs/custom_words.md")
    args = parser.parse_args(argv)
    from pipeline.train.config import COMMANDS

    dev, test, out = Path(args.dev), Path(args.test), Path(args.out)
    chosen = speakers_with_most_takes(dev, COMMANDS, SPEAKERS)
    train_set = link_set(
        out / "set",
        {
            w: sorted(p for s in chosen for p in (dev / w).glob(f"{s}_nohash_*.wav"))
            for w in COMMANDS
        },
    )
    test_set = link_set(out / "test10", {w: sorted((test / w).glob("*.wav")) for w in COMMANDS})
    n_train = sum(1 for _ in train_set.rglob("*.wav"))
    n_test = sum(1 for _ in test_set.rglob("*.wav"))
    print(f"training set: {n_train} takes of {len(COMMANDS)} words by {len(chosen)} speakers")
    print(f"test set: {n_test} takes by other speakers")

    import experiments

    recipes = [
        f"{lever.replace(' ', '_')}-s{seed}=" + "; ".join(overrides(lever, seed))
        for lever in args.levers
        for seed in args.seeds
    ]
    return experiments.main(
        [
            "--config",
            args.config,
            "--data",
            str(train_set),
            "--test",
            str(test_set),
            "--out",
            str(out / "runs"),
            "--results",
            str(out / "results.jsonl"),
            "--table",
            args.table,
            *recipes,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
