"""Timeline plots of long recordings (needs matplotlib: the [plot] extra, imported only when
a plot is drawn). The spectrogram and the probability curves are gathered as the audio
streams past, each reduced to about as many columns as the figure has pixels, so a plot
of any length costs the same memory."""

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


class Spectrogram:
    """Power spectrogram of a signal that arrives in blocks: a 512-point frame every
    max(256, expected // 3000) samples, about 3000 columns whatever the length."""

    N_FFT = 512
    COLUMNS = 3000

    def __init__(self, expected_samples: int):
        self.hop = max(self.N_FFT // 2, expected_samples // self.COLUMNS)
        self.samples = 0
        self._window = np.hanning(self.N_FFT)
        self._columns: list[np.ndarray] = []
        self._rest = np.zeros(0, np.float32)  # audio from the next frame's start on
        self._skip = 0  # samples before the next frame starts

    def add(self, block: np.ndarray) -> None:
        self.samples += len(block)
        skip = min(self._skip, len(block))
        audio = np.concatenate([self._rest, block[skip:]])
        self._skip -= skip
        n = (len(audio) - self.N_FFT) // self.hop + 1 if len(audio) >= self.N_FFT else 0
        if n:
            frames = np.lib.stride_tricks.sliding_window_view(audio, self.N_FFT)[:: self.hop][:n]
            self._columns.append(np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2)
            self._skip = max(0, n * self.hop - len(audio))
            audio = audio[n * self.hop :]
        self._rest = audio

    def decibels(self) -> np.ndarray:
        """[frequency bins, columns] in dB; a signal shorter than a frame is zero-padded."""
        if self._columns:
            spec = np.concatenate(self._columns)
        else:
            frame = np.pad(self._rest, (0, self.N_FFT - len(self._rest)))
            spec = np.abs(np.fft.rfft(frame * self._window))[None] ** 2
        return 10 * np.log10(spec.T + 1e-10)


class Envelope:
    """Per-hop probabilities that arrive in batches, reduced to the lowest and highest value
    of every `bin` hops (about 3000 bins whatever the length): what a line of more points
    than pixels draws anyway. Up to 3000 hops are kept as they are."""

    BINS = 3000

    def __init__(self, expected_hops: int, n_labels: int):
        self.bin = max(1, expected_hops // self.BINS)
        self.hops = 0
        self._low: list[np.ndarray] = []
        self._high: list[np.ndarray] = []
        self._rest = np.zeros((0, n_labels), np.float32)

    def add(self, probs: np.ndarray) -> None:
        self.hops += len(probs)
        rows = np.concatenate([self._rest, probs])
        n = len(rows) // self.bin
        if n:
            binned = rows[: n * self.bin].reshape(n, self.bin, -1)
            self._low.append(binned.min(axis=1))
            self._high.append(binned.max(axis=1))
        self._rest = rows[n * self.bin :]

    def curves(self, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(times [m], values [m, n_labels]) to draw: each hop at the end of its audio, or
        each bin as a stroke from its lowest to its highest value at its middle."""
        low, high = list(self._low), list(self._high)
        if len(self._rest):
            low.append(self._rest.min(axis=0, keepdims=True))
            high.append(self._rest.max(axis=0, keepdims=True))
        if not low:
            return np.zeros(0), self._rest
        lows, highs = np.concatenate(low), np.concatenate(high)
        if self.bin == 1:
            return (np.arange(len(lows)) + 1) * hop_s, lows
        starts = np.arange(len(lows)) * self.bin
        middle = (starts + 1 + np.minimum(starts + self.bin, self.hops)) / 2 * hop_s
        return np.repeat(middle, 2), np.stack([lows, highs], axis=1).reshape(2 * len(lows), -1)


def plot_timeline(
    out: Path,
    spectrogram: Spectrogram,
    envelope: Envelope,
    sample_rate: int,
    hop_s: float,
    labels: list[str],
    detections: list[dict],
    title: str,
) -> None:
    """Spectrogram, per-hop class probabilities and detections on one time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = spectrogram.samples / sample_rate
    spec_db = spectrogram.decibels()

    width = float(np.clip(duration / 2, 10, 30))
    fig, axes = plt.subplots(
        3, 1, figsize=(width, 7), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1]}
    )
    axes[0].imshow(
        spec_db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, duration, 0, sample_rate / 2),
        vmin=spec_db.max() - 80,
        vmax=spec_db.max(),
    )
    axes[0].set_ylabel("Hz")
    axes[0].set_title(title, fontsize=9)
    t, probs = envelope.curves(hop_s)
    colors = plt.get_cmap("tab20")
    for j, name in enumerate(labels):
        ignored = name in IGNORED
        axes[1].plot(
            t,
            probs[:, j],
            lw=0.6 if ignored else 0.9,
            ls=":" if ignored else "-",
            color="0.6" if ignored else colors(j % 20),
            label=name,
        )
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("probability")
    axes[1].legend(loc="upper right", fontsize=6, ncol=min(len(labels), 6))
    for d in detections:
        j = labels.index(d["label"]) if d["label"] in labels else 0
        axes[2].axvspan(d["start_s"], d["end_s"], color=colors(j % 20), alpha=0.8)
        axes[2].text(
            (d["start_s"] + d["end_s"]) / 2,
            0.5,
            d["label"],
            ha="center",
            va="center",
            fontsize=7,
            rotation=90 if duration > 60 else 0,
        )
    axes[2].set_yticks([])
    axes[2].set_ylabel("detections")
    axes[2].set_xlabel("seconds")
    axes[2].set_xlim(0, duration)
    fig.tight_layout()
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
