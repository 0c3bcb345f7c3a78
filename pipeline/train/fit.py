"""Training: config + data source -> RUN_DIR with model.keras, labels, config, metrics, plots.

A run killed at any point resumes from its last finished epoch when started again with
the same RUN_DIR (Keras BackupAndRestore); model.keras always holds the best epoch so far.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from models import build_from_config
from pipeline.data.sources import evaluation_batches, open_source
from pipeline.data.tfdata import training_batches
from pipeline.runtime.files import atomic_write, atomic_write_text
from pipeline.runtime.labels import silence_index
from pipeline.runtime.params import FrontEnd, save_model_info
from pipeline.train.config import ConfigError, load_yaml
from pipeline.train.evaluate import format_report, plot_confusion, plot_history, report


class BestCheckpoint(keras.callbacks.Callback):
    """Saves model.keras atomically whenever validation accuracy improves, and the score it
    reached in best.json beside it, so a resumed run keeps comparing against the best model
    saved before the interruption instead of overwriting it with its next epoch."""

    def __init__(self, path: Path, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.record = self.path.with_name("best.json")
        self.best = -np.inf
        if self.path.exists() and self.record.exists():
            self.best = json.loads(self.record.read_text())[monitor]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best = float(value)
            atomic_write(self.path, lambda tmp: self.model.save(tmp))
            atomic_write_text(
                self.record, json.dumps({self.monitor: self.best, "epoch": epoch + 1}) + "\n"
            )


def lr_schedule(cfg: dict, steps_per_epoch: int):
    t = cfg["train"]
    if t["schedule"] == "constant":
        return t["learning_rate"]
    total = max(1, t["epochs"] * steps_per_epoch)
    warmup = min(total - 1, int(t["warmup_epochs"] * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else t["learning_rate"],
        total - warmup,
        alpha=0.02,
        warmup_target=t["learning_rate"] if warmup else None,
        warmup_steps=warmup,
    )


def _one_hot(n):
    def f(x, y):
        return x, tf.one_hot(y, n)

    return f


def predict(model: keras.Model, batches) -> tuple[np.ndarray, np.ndarray]:
    y_true, probs = [], []
    for x, y in batches:
        probs.append(model(x, training=False).numpy())
        y_true.append(y.numpy())
    return np.concatenate(y_true), np.concatenate(probs)


def _resolved_config(run_dir: Path, cfg: dict, source: str) -> dict:
    """Refuse to resume a RUN_DIR that was started with a different config or data."""
    saved_path = run_dir / "config.yaml"
    wanted = {**cfg, "source": str(source)}
    if saved_path.exists():
        saved = load_yaml(saved_path.read_text())
        if saved != wanted:
            raise ConfigError(
                f"{run_dir} holds a run with a different config or data; "
                "use a new --out or the same settings to resume"
            )
    return wanted


def train(cfg: dict, source: str, run_dir: str | Path, verbose: int = 1) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = _resolved_config(run_dir, cfg, source)
    if (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists():
        if verbose:
            print(f"{run_dir}: training already finished; metrics.json holds its scores")
        return json.loads((run_dir / "metrics.json").read_text())
    keras.utils.set_random_seed(cfg["seed"])
    fe = FrontEnd.from_dict(cfg["front_end"])
    data = open_source(source, cfg["data"], fe, cfg["seed"])
    if not data.count("train") or not data.count("validation"):
        raise ValueError(f"{source}: need training and validation examples, got {data.counts()}")
    labels = data.labels
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    save_model_info(run_dir, fe, labels)

    silence = silence_index(labels)
    t = cfg["train"]
    train_ds = training_batches(
        data.waves("train"),
        data.count("train"),
        fe,
        data.noise,
        cfg["augment"],
        silence,
        len(labels),
        t["batch_size"],
        cfg["seed"],
    )

    def evaluation(split):
        return evaluation_batches(data, data.waves(split), cfg, cfg["seed"] + 1, t["batch_size"])

    val_ds = evaluation("validation")

    model = build_from_config(cfg, fe, len(labels))
    norm = model.get_layer("feature_norm")
    logmel = model.get_layer("logmel")
    norm.adapt(train_ds.take(20).map(lambda x, y: logmel(x)))

    steps = -(-data.count("train") // t["batch_size"])
    opt_cls = keras.optimizers.AdamW if t["weight_decay"] else keras.optimizers.Adam
    opt_kw = {"weight_decay": t["weight_decay"]} if t["weight_decay"] else {}
    if t["ema"]:
        opt_kw.update(use_ema=True, ema_momentum=t["ema"])
    if t["clipnorm"]:
        opt_kw["clipnorm"] = t["clipnorm"]
    model.compile(
        optimizer=opt_cls(lr_schedule(cfg, steps), **opt_kw),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t["label_smoothing"]),
        metrics=["accuracy"],
    )
    if verbose:
        model.summary()
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if t["ema"] else []),
        BestCheckpoint(run_dir / "model.keras"),
        keras.callbacks.EarlyStopping("val_accuracy", patience=t["patience"], mode="max"),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
    ]
    start = time.time()
    model.fit(
        train_ds,
        validation_data=val_ds.map(_one_hot(len(labels))),
        epochs=t["epochs"],
        callbacks=callbacks,
        verbose=verbose,
    )
    train_seconds = time.time() - start

    best = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    metrics = {
        "parameters": int(best.count_params()),
        "train_seconds": round(train_seconds, 1),
        "epochs_run": _epochs_run(run_dir / "history.csv"),
        "counts": data.counts(),
    }
    for split in ("validation", "test"):
        if data.count(split):
            y, p = predict(best, evaluation(split))
            rep = report(y, p.argmax(1), labels)
            metrics[split] = {k: rep[k] for k in ("accuracy", "n", "per_class")}
            if verbose:
                print(f"\n{split}:\n{format_report(rep, labels)}")
            plot_confusion(
                rep["confusion"],
                labels,
                run_dir / f"confusion_{split}.png",
                f"{split} accuracy {rep['accuracy']:.3f}",
            )
    plot_history(run_dir / "history.csv", run_dir / "training_curves.png")
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _epochs_run(history_csv: Path) -> int:
    return max(0, len(history_csv.read_text().splitlines()) - 1) if history_csv.exists() else 0
