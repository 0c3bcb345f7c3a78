"""Log-mel (or MFCC) features computed inside the Keras model with tf.signal.

Keeping the front end in the graph means an exported model takes raw audio and the
numbers in FrontEnd are the only description of it. LogMel is the definition; the export
twins swap in BlockedLogMel or MatmulLogMel, which compute the same mel energies in ways
that convert better, and change nothing else. FrontEnd.normalize = "running" adds a causal
per-band mean subtraction (running_mean) between the log and the DCT.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.runtime.params import FrontEnd


def mel_matrix(fe: FrontEnd) -> np.ndarray:
    """[fft_length//2+1, n_mels] filterbank: librosa's Slaney mel filters."""
    import librosa

    return librosa.filters.mel(
        sr=fe.sample_rate, n_fft=fe.fft_length, n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax
    ).T.astype(np.float32)


# Where the running mean starts: the log-mel of noise shaped like speech's long-term
# spectrum (flat to 500 Hz, -9 dB per octave above) at -40 dBFS RMS. That is close to the
# mean log-mel of speech, pauses included, at a usual recording level (demo clips: about
# 1 nat in the low bands, 3 at the top) so a stream's first seconds already see features
# near their settled range. Zero would be wrong: it is about the level of full-scale white
# noise, 4 to 14 nats above speech, and quiet audio would start far below it. Changing these
# changes every model trained with normalize="running".
NORM_START_DBFS = -40.0
NORM_START_CORNER_HZ = 500.0
NORM_START_SLOPE_DB = 9.0


def norm_start(fe: FrontEnd) -> np.ndarray:
    """[n_mels] initial running mean: a fixed constant of the front end, the same for the
    clip, sequence and stream builds and the streaming state's initial value."""
    freqs = np.fft.rfftfreq(fe.fft_length, 1 / fe.sample_rate)
    shape = (1 + (freqs / NORM_START_CORNER_HZ) ** 2) ** (-NORM_START_SLOPE_DB / 6.0206)
    window = np.hanning(fe.window_samples + 1)[:-1]  # periodic Hann, as LogMel frames it
    # E|X_k|^2 of stationary noise of variance v through the window: v * sum(w^2) * shape
    power = 10 ** (NORM_START_DBFS / 10) * np.sum(window**2) * shape / shape.mean()
    return np.log(power @ mel_matrix(fe) + fe.log_floor).astype(np.float32)


def running_mean(log_mel, fe: FrontEnd, start):
    """Causal per-band mean of log_mel [batch, frames, n_mels] from start ([n_mels], or
    [batch, n_mels] for a stream's state): m_t = m_(t-1) + s (x_t - m_(t-1)) with
    s = 1 - exp(-hop / norm_seconds), m_(-1) = start. LogMel outputs x_t - m_t, the mean
    including the frame itself (= (1 - s)(x_t - m_(t-1))), so one hop is one update.

    Unrolled, m_t = sum_(k<=t) s a^(t-k) x_k + a^(t+1) start (a = 1 - s): one product with a
    fixed lower-triangular matrix over the frame axis (builtin BATCH_MATMUL; a stream step's
    is stack x stack). Sequence builds (any length, training only) build it in the graph:
    frames^2 values, small for training windows of a few seconds."""
    a = np.exp(-fe.hop_ms / 1000 / fe.norm_seconds)
    n = log_mel.shape[1]
    if n is not None:
        lag = np.arange(n)[:, None] - np.arange(n)[None, :]
        weights = np.where(lag >= 0, (1 - a) * a ** np.maximum(lag, 0), 0).astype(np.float32)
        decay = (a ** np.arange(1, n + 1)).astype(np.float32)[:, None]
    else:
        t = tf.range(tf.shape(log_mel)[1])
        lag = tf.cast(t[:, None] - t[None, :], tf.float32)
        weights = tf.where(lag >= 0, (1 - a) * tf.exp(tf.maximum(lag, 0.0) * np.log(a)), 0.0)
        decay = tf.exp(tf.cast(t + 1, tf.float32) * np.log(a))[:, None]
    start = start[None] if len(start.shape) == 1 else start[:, None]
    return tf.matmul(weights[None], log_mel) + decay * start


@keras.saving.register_keras_serializable(package="kws")
class LogMel(keras.layers.Layer):
    """Raw audio [batch, samples] -> features [batch, frames, n_features].

    With causal=True the input is left-padded with window - hop zeros (clip models);
    streaming models pass causal=False and prepend their saved audio context instead.
    With normalize="running" the running mean starts from norm_start(fe), or from
    norm_state [batch, n_mels] when given (stream builds), and the call then returns
    (features, the mean after the last frame: the next norm_state).
    Subclasses override power_spectrum and mel_product only.
    """

    def __init__(self, front_end: dict, causal: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.front_end = dict(front_end)
        self.causal = causal
        self.fe = FrontEnd.from_dict(self.front_end)
        self._mel = mel_matrix(self.fe)
        self._window = tf.signal.hann_window(self.fe.window_samples, periodic=True).numpy()
        self._norm_start = norm_start(self.fe) if self.fe.normalize == "running" else None

    def call(self, audio, norm_state=None):
        fe = self.fe
        if self.causal:
            audio = tf.pad(audio, [[0, 0], [fe.context_samples, 0]])
        frames = tf.signal.frame(audio, fe.window_samples, fe.hop_samples) * self._window
        features = tf.math.log(self.mel_product(self.power_spectrum(frames)) + fe.log_floor)
        if self._norm_start is not None:
            start = self._norm_start if norm_state is None else norm_state
            mean = running_mean(features, fe, start)
            features = features - mean
        if fe.n_mfcc:
            features = tf.signal.mfccs_from_log_mel_spectrograms(features)[..., : fe.n_mfcc]
        if norm_state is not None:
            return features, mean[:, -1]
        return features

    def power_spectrum(self, frames):
        """Windowed frames [batch, frames, window] -> power [batch, frames, bins]."""
        return tf.square(tf.abs(tf.signal.rfft(frames, [self.fe.fft_length])))

    def mel_product(self, power):
        """Power [batch, frames, bins] -> mel energies [batch, frames, n_mels]."""
        return tf.matmul(power, self._mel)

    def compute_output_shape(self, audio_shape, norm_state_shape=None):
        n = audio_shape[1]
        if n is not None:
            n = (
                n + (self.fe.context_samples if self.causal else 0) - self.fe.window_samples
            ) // self.fe.hop_samples + 1
        features = (audio_shape[0], n, self.fe.n_features)
        return features if norm_state_shape is None else (features, norm_state_shape)

    def get_config(self):
        return {**super().get_config(), "front_end": self.front_end, "causal": self.causal}


def mel_blocks(mel: np.ndarray, max_elements: int = 1000) -> list[tuple[int, int, int, int]]:
    """(first bin, end bin, first band, end band) blocks covering every nonzero of the
    filterbank. Mel bands are contiguous in frequency, so the [bins, bands] matrix is
    banded; each block stays under the 1024 elements at which dynamic-range quantization
    would turn it into an int8 product of the power spectrum."""
    nz = [np.nonzero(mel[:, j])[0] for j in range(mel.shape[1])]
    span = [(int(b[0]), int(b[-1]) + 1) if len(b) else (0, 1) for b in nz]
    blocks, start = [], 0
    while start < len(span):
        end = start + 1
        while end < len(span):
            lo, hi = (
                min(s[0] for s in span[start : end + 1]),
                max(s[1] for s in span[start : end + 1]),
            )
            if (hi - lo) * (end + 1 - start) > max_elements:
                break
            end += 1
        lo, hi = min(s[0] for s in span[start:end]), max(s[1] for s in span[start:end])
        blocks.append((lo, hi, start, end))
        start = end
    return blocks


class BlockedLogMel(LogMel):
    """LogMel computing the mel product block by block: same numbers, a 257x40 matrix that
    is ~90% zeros stored as a few small dense blocks that stay float in every export."""

    def __init__(self, front_end: dict, causal: bool = True, **kwargs):
        super().__init__(front_end, causal, **kwargs)
        self._blocks = mel_blocks(self._mel)

    def mel_product(self, power):
        return tf.concat(
            [tf.matmul(power[..., lo:hi], self._mel[lo:hi, a:b]) for lo, hi, a, b in self._blocks],
            axis=-1,
        )


def fft_plan(fe: FrontEnd) -> dict[str, Any]:
    """Constants of the windowed power spectrum as two small DFTs (Cooley-Tukey, one step).

    With N = fft_length = n1 * n2 and sample t = n2 * a + b, bin k = c + n1 * d of a frame:
    X[k] = sum_b W_N^(b c) W_n2^(b d) sum_a x[n2 a + b] W_n1^(a c). The inner sums are one
    matrix product over a (only the a that reach into the window), the twiddle W_N^(b c) an
    elementwise product, the outer sums a matrix product over b for just the bins that the
    mel filterbank uses. Powers come out in (c, d) order, so the filterbank's rows are
    permuted to match rather than the spectrum transposed."""
    n = fe.fft_length
    n2 = 1 << (n.bit_length() - 1) // 2
    n1 = n // n2
    rows = -(-fe.window_samples // n2)  # values of a inside the window
    mel = mel_matrix(fe)
    used = int(np.nonzero(mel.any(axis=1))[0].max()) + 1
    d_count = -(-used // n1)
    a, c = np.arange(rows)[:, None], np.arange(n1)[None, :]
    inner = 2 * np.pi * a * c / n1
    b, d = np.arange(n2)[:, None], np.arange(d_count)[None, :]
    twiddle = 2 * np.pi * np.arange(n2)[:, None] * np.arange(n1)[None, :] / n
    outer = 2 * np.pi * b * d / n2
    k = np.arange(n1)[:, None] + n1 * np.arange(d_count)[None, :]
    mel_rows = np.where((k < len(mel))[..., None], mel[np.minimum(k, len(mel) - 1)], 0)
    f32 = np.float32
    return {
        "n1": n1,
        "n2": n2,
        "rows": rows,
        "d_count": d_count,
        # x (real) -> [Re, Im] of sum_a x W^(a c), W = exp(-2 pi i / n1)
        "inner": np.concatenate([np.cos(inner), -np.sin(inner)], 1).astype(f32),
        "twiddle_cos": np.cos(twiddle).astype(f32),
        "twiddle_sin": np.sin(twiddle).astype(f32),
        # [Re(b), Im(b)] -> [Re(d), Im(d)] of sum_b y W^(b d), W = exp(-2 pi i / n2)
        "outer": np.block([[np.cos(outer), -np.sin(outer)], [np.sin(outer), np.cos(outer)]]).astype(
            f32
        ),
        "mel": mel_rows.reshape(n1 * d_count, -1).astype(f32),
    }


class MatmulLogMel(LogMel):
    """LogMel with the power spectrum from fft_plan (log-mel within ~1e-4 of LogMel, see
    pipeline.export.export.FRONT_END_TOLERANCE). XNNPack runs the two products and the
    transpose between them in about two thirds of the time of TFLite's RFFT2D (double
    precision, not delegated), which took most of the clip model's time: 1.5x the clips per
    second, 1.9x for the batched streaming model."""

    def __init__(self, front_end: dict, causal: bool = True, **kwargs):
        super().__init__(front_end, causal, **kwargs)
        self._plan = fft_plan(self.fe)

    def power_spectrum(self, frames):
        """Power of the bins the filterbank uses, in fft_plan's (c, d) order."""
        plan, window = self._plan, self.fe.window_samples
        n1, n2, rows, d_count = plan["n1"], plan["n2"], plan["rows"], plan["d_count"]
        if rows * n2 > window:
            frames = tf.pad(frames, [[0, 0], [0, 0], [0, rows * n2 - window]])
        shape = tf.shape(frames)[:2]
        x = tf.reshape(frames, [-1, rows, n2])
        y = tf.matmul(tf.transpose(x, [0, 2, 1]), plan["inner"])  # [.., b, Re|Im c]
        re, im = y[..., :n1], y[..., n1:]
        cos, sin = plan["twiddle_cos"], plan["twiddle_sin"]
        y = tf.concat([re * cos + im * sin, im * cos - re * sin], axis=1)  # [.., Re|Im b, c]
        z = tf.matmul(tf.transpose(y, [0, 2, 1]), plan["outer"])  # [.., c, Re|Im d]
        power = tf.square(z[..., :d_count]) + tf.square(z[..., d_count:])
        return tf.reshape(power, tf.concat([shape, [n1 * d_count]], 0))

    def mel_product(self, power):
        return tf.matmul(power, self._plan["mel"])
