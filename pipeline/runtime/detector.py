"""Per-hop probabilities -> command events: the decision a listening device makes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.runtime.labels import IGNORED


@dataclass
class Detection:
    time_s: float
    label: str
    score: float


class CommandDetector:
    """Per-hop probabilities -> command events, as RecognizeCommands in TensorFlow's
    speech_commands example: average the scores over a moving window, report the top
    label when its average passes the threshold, differs from the previous top label and
    the suppression period since that label has passed.

    average_window_s: smooths single-hop spikes (an event waits until the window holds
                      min_count hops).
    threshold:        averaged probability an event needs.
    suppression_s:    after an event, no other event for this long (a word spans ~0.5-1 s).
    ignore:           labels that reset the previous-label memory but never raise events.
    """

    CHUNK = 1 << 16  # hops screened at once: bounds the memory of the cumulative sums

    def __init__(
        self,
        labels: list[str],
        hop_seconds: float,
        average_window_s: float = 0.5,
        threshold: float = 0.7,
        suppression_s: float = 1.0,
        ignore: tuple[str, ...] = IGNORED,
        min_count: int = 3,
    ):
        if hop_seconds <= 0 or average_window_s <= 0 or not 0 <= threshold <= 1:
            raise ValueError("need hop_seconds > 0, average_window_s > 0, 0 <= threshold <= 1")
        self.labels, self.hop_seconds = list(labels), hop_seconds
        self.average_window_s, self.threshold = average_window_s, threshold
        self.suppression_s, self.ignore, self.min_count = suppression_s, set(ignore), min_count
        self.reset()

    def reset(self) -> None:
        self._times = np.empty(0, np.float64)  # end times of the hops in the window
        self._rows = np.empty((0, len(self.labels)), np.float32)
        self._previous: str | None = None
        self._previous_time = -np.inf
        self._clock = 0.0

    def process(self, probs: np.ndarray, start_time: float | None = None) -> list[Detection]:
        """Events in probs [n_hops, n_labels] (probabilities, in [0, 1]); row k ends at
        start_time + (k+1)*hop. start_time None continues where the previous call ended."""
        probs = np.asarray(probs, np.float32).reshape(-1, len(self.labels))
        t0 = self._clock if start_time is None else start_time
        now = t0 + np.arange(1, len(probs) + 1) * self.hop_seconds
        events = []
        for i in range(0, len(probs), self.CHUNK):
            events += self._process(probs[i : i + self.CHUNK], now[i : i + self.CHUNK])
        self._clock = t0 + len(probs) * self.hop_seconds
        return events

    def _process(self, probs: np.ndarray, now: np.ndarray) -> list[Detection]:
        """Only a hop whose averaged top score passes the threshold can change the
        detector's memory, so the averages are screened in bulk (cumulative sums) and only
        the hops near or above the threshold are averaged exactly and stepped through."""
        times = np.concatenate([self._times, now])
        rows = np.concatenate([self._rows, probs])
        # Hop k's window starts at the first retained hop newer than now - window; a
        # running maximum keeps the search exact even when start_time moved backwards.
        first = np.searchsorted(
            np.maximum.accumulate(times), now - self.average_window_s, side="right"
        )
        last = np.arange(len(self._times) + 1, len(times) + 1)
        count = last - first
        sums = np.zeros((len(rows) + 1, len(self.labels)), np.float64)
        np.cumsum(rows, axis=0, out=sums[1:])
        approx = ((sums[last] - sums[first]) / count[:, None]).max(axis=1)
        # A float32 mean of m values in [0, 1] is within m * 6e-8 of the float64 one.
        margin = 1e-4 + 1e-6 * count
        events = []
        for k in np.flatnonzero((count >= self.min_count) & (approx > self.threshold - margin)):
            average = np.mean(rows[first[k] : last[k]], axis=0)
            top = int(np.argmax(average))
            label, score, at = self.labels[top], float(average[top]), float(now[k])
            since = (
                np.inf
                if self._previous in self.ignore or self._previous is None
                else at - self._previous_time
            )
            if score > self.threshold and label != self._previous and since > self.suppression_s:
                self._previous, self._previous_time = label, at
                if label not in self.ignore:
                    events.append(Detection(round(at, 6), label, score))
        self._times, self._rows = times[first[-1] :], rows[first[-1] :]
        return events
