"""Training: config + data source -> RUN_DIR with model.keras, labels, config, metrics, plots.

One loop trains on one worker or on many. Every worker runs the same step, a tf.function
around `strategy.run`: the default strategy when it is alone, MultiWorkerMirroredStrategy
(TF_CONFIG, written by hand or by Ray Train) when several share the work. The loss is
averaged over the global batch (tf.nn.compute_average_loss) and the Keras optimizer sums
the gradients of all workers, so all apply the same update and keep the same weights.
Keras 3's model.fit cannot run under MultiWorkerMirroredStrategy (keras issue 20585,
tensorflow issue 72388), hence this loop; it drives the usual Keras callbacks. Each
worker reads its own shard of the training file list.

A run killed at any point resumes from its last finished epoch when started again with
the same RUN_DIR: the chief writes the weights and optimizer state of each finished epoch
to RUN_DIR/backup and every worker restores them; model.keras always holds the best epoch
so far.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from models import build_from_config
from models.layers import copy_weights
from pipeline.data.augment import coloured_noise
from pipeline.data.sources import FolderSource, evaluation_batches, open_source
from pipeline.data.tfdata import decoded, training_batches
from pipeline.data.windows import Windows
from pipeline.runtime.errors import one_line
from pipeline.runtime.files import atomic_write, atomic_write_text
from pipeline.runtime.labels import UNKNOWN, silence_index
from pipeline.runtime.params import FrontEnd, save_model_info
from pipeline.train.adapt import adapt_to_data
from pipeline.train.config import ConfigError, load_yaml, resolve
from pipeline.train.evaluate import format_report, plot_confusion, plot_history, report
from pipeline.train.runs import load_run


@dataclass
class Workers:
    """Where this process stands among the data-parallel workers of a run (rank 0, the
    chief, writes the run directory), and callbacks to run on every worker."""

    strategy: tf.distribute.Strategy = field(default_factory=tf.distribute.get_strategy)
    rank: int = 0
    count: int = 1
    callbacks: list[keras.callbacks.Callback] = field(default_factory=list)

    @property
    def chief(self) -> bool:
        return self.rank == 0


def tf_config_workers(callbacks: list[keras.callbacks.Callback] | None = None) -> Workers:
    """This process as one worker of the cluster TF_CONFIG describes, one device each. Call
    it before TensorFlow runs anything: collective ops are configured at start-up."""
    if "TF_CONFIG" not in os.environ:
        raise ValueError("TF_CONFIG is not set: it names the workers and this one's index")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    count = sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker"))
    if strategy.num_replicas_in_sync != count:
        raise ValueError(
            f"TF_CONFIG: {strategy.num_replicas_in_sync} replicas on {count} workers; "
            "distributed training uses one device per worker"
        )
    rank = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in spec.jobs else 0)
    return Workers(strategy, rank, count, list(callbacks or []))


class Backup(keras.callbacks.Callback):
    """BackupAndRestore for one worker or many: every worker restores the last finished
    epoch (weights and optimizer state) at the start, only the chief writes it. The state
    file is replaced atomically after the weights it names are complete, so a kill at any
    moment leaves a usable backup."""

    def __init__(self, folder: Path, write: bool):
        super().__init__()
        self.folder, self.write = Path(folder), write
        self.state = self.folder / "state.json"
        self.initial_epoch = 0

    def on_train_begin(self, logs=None):
        if not self.state.exists():
            return
        state = json.loads(self.state.read_text())
        self.model.load_weights(self.folder / state["weights"])
        self.initial_epoch = self.params["epochs"] if state.get("finished") else state["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        name = f"epoch{epoch + 1}.weights.h5"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(self.folder / name, overwrite=True)
        self._save_state({"epoch": epoch + 1, "weights": name})
        for old in self.folder.glob("epoch*.weights.h5"):
            if old.name != name:
                old.unlink()

    def on_train_end(self, logs=None):
        """Early stopping or the last epoch: a restart goes straight to the final scores."""
        if self.write and self.state.exists():
            self._save_state({**json.loads(self.state.read_text()), "finished": True})

    def _save_state(self, state: dict) -> None:
        atomic_write_text(self.state, json.dumps(state) + "\n")


class BestCheckpoint(keras.callbacks.Callback):
    """Saves model.keras atomically whenever validation accuracy improves, and the score it
    reached in best.json beside it, so a resumed run keeps comparing against the best model
    saved before the interruption instead of overwriting it with its next epoch. A tie in
    accuracy goes to the lower validation loss: a few speakers' validation takes are soon
    all right, and the first epoch to get there is rarely the best model. With `saved`, the
    trained model's weights are copied into that twin (the clip build of a model trained in
    sequence mode) and the twin is what model.keras holds."""

    def __init__(self, path: Path, monitor: str = "val_accuracy", saved: keras.Model | None = None):
        super().__init__()
        self.path, self.monitor, self.saved = Path(path), monitor, saved
        self.record = self.path.with_name("best.json")
        self.best = (-np.inf, -np.inf)
        if self.path.exists() and self.record.exists():
            record = json.loads(self.record.read_text())
            self.best = (record[monitor], -record.get("val_loss", np.inf))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            return
        score = (float(value), -float(logs.get("val_loss", np.inf)))
        if score > self.best:
            self.best = score
            model = self.model
            if self.saved is not None:
                copy_weights(model, self.saved)
                model = self.saved
            atomic_write(self.path, lambda tmp: model.save(tmp))
            record = {self.monitor: score[0], "val_loss": -score[1], "epoch": epoch + 1}
            atomic_write_text(self.record, json.dumps(record) + "\n")


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


def load_init(run: str | Path) -> tuple[keras.Model, FrontEnd, list[str]]:
    """The run train.init_from names, opened before any data work so a wrong path fails
    at once."""
    try:
        return load_run(run)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(f"train.init_from: {one_line(exc)}") from None


def start_from(
    model: keras.Model,
    init: tuple[keras.Model, FrontEnd, list[str]],
    fe: FrontEnd,
    labels: list[str],
) -> None:
    """Copy a trained run's weights into model, the normaliser's statistics included (the
    fine-tuned model must see the features the source model learnt on), after checking
    that it is the same network: front end, labels and every layer's weight shapes."""
    source, source_fe, source_labels = init
    theirs, ours = source_fe.to_dict(), fe.to_dict()
    problem = ""
    if theirs != ours:
        problem = "front_end." + ", ".join(k for k in ours if theirs.get(k) != ours[k]) + " differ"
    elif source_labels != labels:
        problem = f"labels {source_labels} differ from this data's {labels}"
    for layer in model.layers if not problem else ():
        shapes = [tuple(w.shape) for w in layer.weights]
        try:
            source_shapes = [tuple(w.shape) for w in source.get_layer(layer.name).weights]
        except ValueError:
            source_shapes = None
        if shapes and shapes != source_shapes:
            problem = f"layer {layer.name} has weights {source_shapes}, this config's {shapes}"
            break
    if problem:
        raise ConfigError(
            f"train.init_from: {problem}; its architecture and front end must be this config's"
        )
    copy_weights(source, model)


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
    """Refuse to resume a RUN_DIR that was started with a different config or data. The
    config as asked for is compared (request.yaml; config.yaml of runs older than it):
    config.yaml holds it adapted to the data, which a resume derives again."""
    saved_path = next(
        (p for p in (run_dir / "request.yaml", run_dir / "config.yaml") if p.exists()), None
    )
    wanted = {**cfg, "source": str(source)}
    if saved_path:
        saved = load_yaml(saved_path.read_text())
        if isinstance(saved, dict) and "source" in saved:  # keys added since: their defaults
            source_of = saved.pop("source")
            try:
                saved = {**resolve(saved), "source": source_of}
            except ConfigError:
                pass  # a key since removed or changed: a different config
        if saved != wanted:
            raise ConfigError(
                f"{run_dir} holds a run with a different config or data; "
                "use a new --out or the same settings to resume"
            )
    return wanted


def shard(data, split: str, workers: Workers) -> tuple[tf.data.Dataset, int]:
    """(waves, count) of this worker's share of a split: every count-th file of the list,
    cut to the same length on every worker, so all take the same number of steps (at most
    count - 1 files are left out). A TFDS source is sharded after decoding."""
    if isinstance(data, FolderSource):
        examples = data.dataset.splits[split]
        share = examples[workers.rank :: workers.count][: len(examples) // workers.count]
        return decoded(share, data.fe), len(share)
    n = data.count(split) // workers.count
    return data.waves(split).shard(workers.count, workers.rank).take(n), n


def mean_over_workers(strategy: tf.distribute.Strategy, values: list) -> list:
    """The element-wise means of tensors over all workers (the tensors for one worker)."""

    @tf.function
    def mean(values):
        return [
            strategy.reduce(
                tf.distribute.ReduceOp.MEAN, strategy.run(tf.identity, args=(v,)), axis=None
            )
            for v in values
        ]

    return mean(values)


def weight_check(model: keras.Model, strategy: tf.distribute.Strategy) -> dict:
    """This worker's weights against all workers': the largest difference from their mean
    (0.0 when every worker holds the same model) and a SHA-1 of its weights."""
    values = [tf.cast(v.value, tf.float64) for v in model.weights]
    means = mean_over_workers(strategy, values)
    digest = hashlib.sha1()
    for v in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v.value)).tobytes())
    return {
        "weight_spread": max(float(tf.reduce_max(tf.abs(v - m))) for v, m in zip(values, means)),
        "weights_sha1": digest.hexdigest(),
    }


def make_steps(
    model: keras.Model,
    loss: keras.losses.Loss,
    strategy: tf.distribute.Strategy,
    train_spec,
    eval_spec,
) -> tuple[Callable, Callable]:
    """The training step and the evaluation step on a batch (x, y) or (x, y, sample
    weights) of the given element specs (traced once, whatever the batch size), each
    returning [summed loss, weighted correct, summed weight, examples]; the training
    step's sums are over the batches of all workers. loss has no reduction: an example's
    loss is the mean over its elements (steps of a sequence), as Keras takes it."""

    def sums(y, probs, weight=None):
        per_element = loss(y, probs, sample_weight=weight)
        per_example = tf.reduce_mean(tf.reshape(per_element, [tf.shape(y)[0], -1]), axis=1)
        correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(probs, -1)), tf.float32)
        weight = tf.ones_like(correct) if weight is None else tf.cast(weight, tf.float32)
        n = tf.cast(tf.shape(y)[0], tf.float32)
        return per_example, tf.stack(
            [tf.reduce_sum(per_example), tf.reduce_sum(correct * weight), tf.reduce_sum(weight), n]
        )

    def replica_step(x, y, weight=None):
        with tf.GradientTape() as tape:
            per_example, out = sums(y, model(x, training=True), weight)
            mean = tf.nn.compute_average_loss(per_example)
        grads = tape.gradient(mean, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return out

    @tf.function(input_signature=[train_spec])
    def train_step(batch):
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function(input_signature=[eval_spec])
    def eval_step(batch):
        x, y, *weight = batch
        return sums(y, model(x, training=False), *weight)[1]

    return train_step, eval_step


def _logs(sums: np.ndarray, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}accuracy": float(sums[1] / sums[2]),
        f"{prefix}loss": float(sums[0] / sums[3]),
    }


def fit(
    model: keras.Model,
    loss: keras.losses.Loss,
    workers: Workers,
    train_ds: tf.data.Dataset,
    steps: int,
    val_ds: tf.data.Dataset,
    epochs: int,
    backup: Backup,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """model.fit's epoch loop (callbacks, validation, early stop) around make_steps: steps
    batches per epoch from train_ds repeated, so every worker takes the same number even
    when a file of its shard could not be decoded; each worker validates on all of val_ds,
    so all see the same scores and stop together."""
    train_step, eval_step = make_steps(
        model, loss, workers.strategy, train_ds.element_spec, val_ds.element_spec
    )
    calls = keras.callbacks.CallbackList(
        [backup, *callbacks],
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
        model=model,
    )
    model.stop_training = False
    calls.on_train_begin()
    batches = iter(train_ds.repeat())
    logs: dict[str, float] = {}
    for epoch in range(backup.initial_epoch, epochs):
        calls.on_epoch_begin(epoch)
        sums = np.zeros(4)
        for step in range(steps):
            calls.on_train_batch_begin(step)
            sums += train_step(next(batches)).numpy()
            calls.on_train_batch_end(step, _logs(sums))
        calls.on_test_begin()
        val = sum((eval_step(batch).numpy() for batch in val_ds), np.zeros(4))
        calls.on_test_end(_logs(val))
        logs = {**_logs(sums), **_logs(val, "val_")}
        calls.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    calls.on_train_end(logs)


def train(
    cfg: dict, source: str, run_dir: str | Path, verbose: int = 1, workers: Workers | None = None
) -> dict:
    """Train one model; workers says which share of the work this process does (alone
    when None). Only the chief writes RUN_DIR, which all workers must see (shared storage
    for several machines); the chief returns the metrics, another worker its rank and
    weight_check."""
    workers = workers or Workers()
    run_dir = Path(run_dir)
    requested = _resolved_config(run_dir, cfg, source)
    if (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists():
        if verbose:
            print(f"{run_dir}: training already finished; metrics.json holds its scores")
        return json.loads((run_dir / "metrics.json").read_text())
    t = cfg["train"]
    init = load_init(t["init_from"]) if t["init_from"] else None
    if t["batch_size"] % workers.count:
        raise ConfigError(
            f"train.batch_size {t['batch_size']} must be a multiple of the {workers.count} "
            "workers (it is the global batch)"
        )
    keras.utils.set_random_seed(cfg["seed"])
    fe = FrontEnd.from_dict(cfg["front_end"])
    data = open_source(source, cfg["data"], fe, cfg["seed"])
    if len(data.noise) == 0 and cfg["augment"]["generated_noise"]:
        data.noise = coloured_noise(fe, cfg["seed"])
        if verbose and workers.chief:
            print("the source has no background-noise files: mixing in generated coloured noise")
    if not data.count("train") or not data.count("validation"):
        raise ValueError(f"{source}: need training and validation examples, got {data.counts()}")
    cfg, decisions = adapt_to_data(cfg, data)
    fe = FrontEnd.from_dict(cfg["front_end"])
    if verbose and workers.chief:
        print("\n".join(decisions))
        if t["windows"] and not init:
            print(
                "note: stream-native training from random weights; starting from a "
                "clip-trained run (train.init_from=RUN) keeps its clip accuracy "
                "(docs/streaming.md)"
            )
    labels = data.labels
    if workers.chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "request.yaml", yaml.safe_dump(requested, sort_keys=False))
        resolved = {**cfg, "source": str(source)}
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        save_model_info(run_dir, fe, labels)

    silence = silence_index(labels)
    batch = t["batch_size"] // workers.count
    waves, count = shard(data, "train", workers)
    seed = cfg["seed"] + 1000 * workers.rank
    # A few speakers' takes fill a handful of batches: an epoch then makes several passes,
    # so the run takes train.min_steps steps however small the set (the schedule, early
    # stopping and checkpoints keep counting in epochs).
    passes = max(1, -(-t["min_steps"] * batch // (t["epochs"] * count)))
    if passes > 1:
        waves, count = waves.repeat(passes), count * passes
        if verbose and workers.chief:
            print(
                f"train.min_steps {t['min_steps']}: {passes} passes over the training set per epoch"
            )

    def evaluation(split):
        return evaluation_batches(data, data.waves(split), cfg, cfg["seed"] + 1, t["batch_size"])

    if t["windows"]:
        # Trained as it will stream: per-step targets on windows of seconds of audio (the
        # sequence build), the clip build of the same weights saved and scored on clips.
        unknown = labels.index(UNKNOWN) if UNKNOWN in labels else -1
        windows = Windows(
            fe, data.noise, cfg["augment"], t["windows"], silence, len(labels), unknown
        )
        train_ds = windows.training(waves, count, batch, seed)
        val_ds = windows.evaluation(data.waves("validation"), t["batch_size"], cfg["seed"] + 1)
        mode, saved = "sequence", build_from_config(cfg, fe, len(labels))
    else:
        train_ds = training_batches(
            waves, count, fe, data.noise, cfg["augment"], silence, len(labels), batch, seed
        )
        val_ds = evaluation("validation").map(_one_hot(len(labels)))
        mode, saved = "clip", None

    steps = -(-count // batch)
    opt_cls = keras.optimizers.AdamW if t["weight_decay"] else keras.optimizers.Adam
    opt_kw = {"weight_decay": t["weight_decay"]} if t["weight_decay"] else {}
    if t["ema"]:
        opt_kw.update(use_ema=True, ema_momentum=t["ema"])
    if t["clipnorm"]:
        opt_kw["clipnorm"] = t["clipnorm"]
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=t["label_smoothing"])
    with workers.strategy.scope():
        model = build_from_config(cfg, fe, len(labels), mode)
        norm = model.get_layer("feature_norm")
        logmel = model.get_layer("logmel")
        norm.adapt(train_ds.take(20).map(lambda x, *targets: logmel(x)))
        # each worker adapted on its own shard: all take the mean
        stats = [v for v in norm.weights if v.dtype == "float32"]
        for v, m in zip(stats, mean_over_workers(workers.strategy, [v.value for v in stats])):
            v.assign(m)
        norm.finalize_state()
        if init is not None:
            start_from(model, init, fe, labels)
        model.compile(
            optimizer=opt_cls(lr_schedule(cfg, steps), **opt_kw), loss=loss, metrics=["accuracy"]
        )
        model.optimizer.build(model.trainable_variables)  # before the step is traced
    if verbose and workers.chief:
        model.summary()
    callbacks = [
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if t["ema"] else []),
        keras.callbacks.EarlyStopping("val_accuracy", patience=t["patience"], mode="max"),
        *(
            [
                BestCheckpoint(run_dir / "model.keras", saved=saved),
                keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
                keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
            ]
            if workers.chief
            else []
        ),
        *workers.callbacks,
    ]
    start = time.time()
    fit(
        model,
        keras.losses.CategoricalCrossentropy(label_smoothing=t["label_smoothing"], reduction=None),
        workers,
        train_ds,
        steps,
        val_ds,
        t["epochs"],
        Backup(run_dir / "backup", write=workers.chief),
        callbacks,
        verbose if workers.chief else 0,
    )
    train_seconds = time.time() - start
    check = weight_check(model, workers.strategy)
    if not workers.chief:
        return {"rank": workers.rank, **check}

    best = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    metrics = {
        "parameters": int(best.count_params()),
        "train_seconds": round(train_seconds, 1),
        "epochs_run": _epochs_run(run_dir / "history.csv"),
        "counts": data.counts(),
    }
    if workers.count > 1:
        metrics["workers"] = {"count": workers.count, **check}
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
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return metrics


def _epochs_run(history_csv: Path) -> int:
    return max(0, len(history_csv.read_text().splitlines()) - 1) if history_csv.exists() else 0
