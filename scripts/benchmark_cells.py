#!/usr/bin/env python3
"""Time SimpleRNN, LSTM and GRU configs on the same batches, in interleaved rounds so the
load of a shared machine falls on all of them alike.

  python scripts/benchmark_cells.py configs/rnn.yaml configs/lstm.yaml configs/gru.yaml \
      --out docs/rnn_comparison_timing.json

Per config: parameters, median milliseconds per training step (batch of 64 one-second
clips, augmentation excluded) and per single-clip inference, as ratios to the first config.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--out", required=True, help="JSON results file")
    args = parser.parse_args(argv)
    from pipeline.tf_env import import_tensorflow

    import_tensorflow()

    import keras
    import numpy as np
    import tensorflow as tf

    from models import build_from_config
    from pipeline.runtime.files import atomic_write_text
    from pipeline.runtime.params import FrontEnd
    from pipeline.train.config import load_config

    rng = np.random.default_rng(0)
    models = {}
    for path in args.configs:
        cfg = load_config(path)
        fe = FrontEnd.from_dict(cfg["front_end"])
        model = build_from_config(cfg, fe, 12)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        x = rng.normal(0, 0.1, (64, fe.clip_samples)).astype(np.float32)
        y = tf.one_hot(rng.integers(0, 12, 64), 12).numpy()
        infer = tf.function(lambda a, m=model: m(a, training=False))
        model.train_on_batch(x, y)
        infer(x[:1])
        models[Path(path).stem] = (model, x, y, infer)
    train_ms = {k: [] for k in models}
    infer_ms = {k: [] for k in models}
    for _ in range(args.rounds):
        for name, (model, x, y, infer) in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            train_ms[name].append((time.perf_counter() - start) * 1000 / args.steps)
            start = time.perf_counter()
            for _ in range(args.steps):
                infer(x[:1])
            infer_ms[name].append((time.perf_counter() - start) * 1000 / args.steps)
    first = next(iter(models))
    rows = {}
    for name, (model, *_rest) in models.items():
        t, i = statistics.median(train_ms[name]), statistics.median(infer_ms[name])
        rows[name] = {
            "parameters": int(model.count_params()),
            "train_ms_per_step": round(t, 2),
            "infer_ms_per_clip": round(i, 3),
            "train_ratio": round(t / statistics.median(train_ms[first]), 2),
            "infer_ratio": round(i / statistics.median(infer_ms[first]), 2),
        }
        print(name, rows[name])
    atomic_write_text(Path(args.out), json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
