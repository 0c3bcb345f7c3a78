#!/usr/bin/env python3
"""Train a speech-command recognizer.

  python scripts/train.py --config configs/default.yaml --data PATH --out RUN_DIR [key=value ...]

PATH is a Speech Commands folder (archive layout: the 12-class task by default), any
folder-per-label collection of audio (classes are the folder names), or
tfds:speech_commands[@DATA_DIR][?manual_dir=DIR] (docs/tfds.md). Overrides use dotted keys,
e.g. train.epochs=5
model.units=[64,64]. Starting again with the same RUN_DIR resumes an interrupted run.

Data-parallel training (docs/distributed.md), the same step and results as one machine at
the same train.batch_size (the global batch, split over the workers):

  ... --ray [ADDRESS] --workers N     Ray Train starts N workers and restarts them after a
                                      failure (RUN_DIR on storage every node sees)
  ... --tf-config                     this process is one worker of the cluster that the
                                      TF_CONFIG environment variable describes; start the
                                      same command on every worker
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
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument(
        "--data",
        required=True,
        help="data folder or tfds:NAME[@DATA_DIR][?manual_dir=DIR] (see docs/tfds.md)",
    )
    parser.add_argument("--out", required=True, help="run directory (resumed if it exists)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="train on a Ray cluster (default: RAY_ADDRESS, else a local instance)",
    )
    parser.add_argument("--workers", type=int, help="Ray workers (2)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs each Ray worker holds (1)")
    parser.add_argument("--max-failures", type=int, help="restarts after a worker fails (3)")
    parser.add_argument(
        "--tf-config",
        action="store_true",
        help="be one worker of the cluster in TF_CONFIG (MultiWorkerMirroredStrategy)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides with dotted keys"
    )
    args = parser.parse_args(argv)
    if args.ray is not None and args.tf_config:
        parser.error("--ray and --tf-config exclude each other")
    if args.ray:
        from pipeline.distributed.cluster import check_address

        try:
            check_address(args.ray)
        except ValueError as exc:
            parser.error(str(exc))
    ray_only = (args.workers, args.cpus_per_worker, args.max_failures)
    if args.ray is None and ray_only != (None, None, None):
        parser.error("--workers, --cpus-per-worker and --max-failures go with --ray")
    workers = 2 if args.workers is None else args.workers
    cpus = 1.0 if args.cpus_per_worker is None else args.cpus_per_worker
    max_failures = 3 if args.max_failures is None else args.max_failures
    if workers < 1 or max_failures < 0 or not cpus > 0:
        parser.error("need --workers >= 1, --max-failures >= 0 and --cpus-per-worker > 0")
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()

    from pipeline.train.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    from pipeline.train.fit import tf_config_workers, train

    verbose = 2 if args.quiet else 1
    try:
        if args.ray is not None:
            from pipeline.distributed.cluster import connect
            from pipeline.distributed.train import train_on_ray

            connect(args.ray or None)
            metrics = train_on_ray(cfg, args.data, args.out, workers, cpus, max_failures)
        else:
            workers = tf_config_workers() if args.tf_config else None
            metrics = train(cfg, args.data, args.out, verbose, workers)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "rank" in metrics:  # a worker other than the chief, which reports the run
        print(f"done: worker {metrics['rank']} {metrics['weights_sha1']}")
        return 0
    summary = {k: metrics[k]["accuracy"] for k in ("validation", "test") if k in metrics}
    line = f"done: {args.out} {summary}"
    if "workers" in metrics:  # the chief of several
        w = metrics["workers"]
        line += f"; worker 0 {w['weights_sha1']}, weight spread {w['weight_spread']:g}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
