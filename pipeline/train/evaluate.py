"""Scores and plots: accuracy, per-class precision/recall, confusion matrix, curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.runtime.files import atomic_write


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def report(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy and per-class precision/recall/support (rows of cm are true labels)."""
    cm = confusion(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
    n = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "n": n,
        "per_class": {
            l: {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for l, p, r, s in zip(labels, precision, recall, cm.sum(1))
        },
        "confusion": cm.tolist(),
    }


def format_report(rep: dict, labels: list[str]) -> str:
    lines = [
        f"accuracy {rep['accuracy']:.4f} on {rep['n']} clips",
        f"{'label':<12} {'precision':>9} {'recall':>7} {'n':>5}",
    ]
    for l in labels:
        c = rep["per_class"][l]
        lines.append(f"{l:<12} {c['precision']:>9.3f} {c['recall']:>7.3f} {c['support']:>5}")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, labels: list[str], path: Path, title: str = "") -> None:
    plt = _pyplot()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    cm[i, j],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_history(history_csv: Path, path: Path) -> None:
    """Loss and accuracy per epoch from Keras's CSVLogger file."""
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in rows[0]:
                ax.plot(
                    epochs,
                    [float(r[prefix + key]) for r in rows],
                    style,
                    label=(prefix or "train_") + key,
                )
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def evaluate(
    model_path: str | Path, data: str, split: str | None = None, plot: Path | None = None
) -> tuple[dict, list[str]]:
    """Score a trained model (run dir, .keras, clip or streaming .tflite) on a data source.

    split defaults to 'test' for a Speech Commands archive folder and to every clip for
    the test layout or a folder-per-label set."""
    from pipeline.data.sources import evaluation_batches, open_source
    from pipeline.train.config import load_config
    from pipeline.train.runs import load_run, model_file, run_config

    path = Path(model_path)
    if path.suffix == ".tflite":
        from pipeline.runtime.model import ClipModel, StreamingModel, read_manifest

        streaming = "states" in read_manifest(path)[1]
        exported = StreamingModel(path) if streaming else ClipModel(path)
        fe, labels = exported.front_end, exported.labels
        predict_batch = exported.classify if streaming else exported.predict
    else:
        model, fe, labels = load_run(path)

        def predict_batch(x):
            return model(x, training=False).numpy()

    # the data settings of training (words, silence level) travel beside the model
    has_config = (model_file(path).parent / "config.yaml").exists()
    cfg = run_config(path) if has_config else load_config()
    source = open_source(data, cfg["data"], fe, cfg["seed"], labels=labels)
    y_true, y_pred = [], []
    for s in [split] if split else source.evaluation_splits():
        for x, y in evaluation_batches(source, source.waves(s), cfg, cfg["seed"] + 1):
            y_pred.append(predict_batch(x.numpy()).argmax(1))
            y_true.append(y.numpy())
    if not y_true:
        raise ValueError(f"{data}: no clips to evaluate")
    rep = report(np.concatenate(y_true), np.concatenate(y_pred), labels)
    if plot:
        plot_confusion(
            rep["confusion"], labels, plot, f"{path.name}: accuracy {rep['accuracy']:.3f}"
        )
    return rep, labels
