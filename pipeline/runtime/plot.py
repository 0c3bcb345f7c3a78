"""Timeline plots of long recordings (needs matplotlib: the [plot] extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.runtime.files import atomic_write
from pipeline.runtime.labels import IGNORED


def plot_name(path: str) -> str:
    """A PNG name unique per input path (directories flattened with '__')."""
    flat = os.path.normpath(path).lstrip(os.sep).replace(os.sep, "__")
    return flat.replace("..", "up") + ".png"


def plot_timeline(out: Path, audio: np.ndarray, sample_rate: int, hop_s: float,
                  probs: np.ndarray, labels: list[str], detections: list[dict],
                  title: str) -> None:
    """Spectrogram, per-hop class probabilities and detections on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = len(audio) / sample_rate
    n_fft = 512
    hop = max(n_fft // 2, len(audio) // 3000)
    frames = max(1, (len(audio) - n_fft) // hop + 1)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    padded = np.pad(audio, (0, max(0, n_fft - len(audio))))
    spec = np.abs(np.fft.rfft(padded[idx] * np.hanning(n_fft), axis=1)) ** 2
    spec_db = 10 * np.log10(spec.T + 1e-10)

    width = float(np.clip(duration / 2, 10, 30))
    fig, axes = plt.subplots(3, 1, figsize=(width, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1]})
    axes[0].imshow(spec_db, origin="lower", aspect="auto", cmap="magma",
                   extent=(0, duration, 0, sample_rate / 2),
                   vmin=spec_db.max() - 80, vmax=spec_db.max())
    axes[0].set_ylabel("Hz")
    axes[0].set_title(title, fontsize=9)
    t = (np.arange(len(probs)) + 1) * hop_s
    colors = plt.get_cmap("tab20")
    for j, name in enumerate(labels):
        ignored = name in IGNORED
        axes[1].plot(t, probs[:, j], lw=0.6 if ignored else 0.9, ls=":" if ignored else "-",
                     color="0.6" if ignored else colors(j % 20), label=name)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("probability")
    axes[1].legend(loc="upper right", fontsize=6, ncol=min(len(labels), 6))
    for d in detections:
        j = labels.index(d["label"]) if d["label"] in labels else 0
        axes[2].axvspan(d["start_s"], d["end_s"], color=colors(j % 20), alpha=0.8)
        axes[2].text((d["start_s"] + d["end_s"]) / 2, 0.5, d["label"], ha="center",
                     va="center", fontsize=7, rotation=90 if duration > 60 else 0)
    axes[2].set_yticks([])
    axes[2].set_ylabel("detections")
    axes[2].set_xlabel("seconds")
    axes[2].set_xlim(0, duration)
    fig.tight_layout()
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
