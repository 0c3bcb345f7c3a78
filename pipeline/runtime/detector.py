"""Per-hop probabilities -> command events: the decision a listening device makes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.runtime.labels import IGNORED

# The manifest block that records an export's operating point (score_stream.py
# --write-manifest writes it) and the CommandDetector arguments it may hold.
BLOCK = "detector"
OPTIONS = ("threshold", "average_window_s", "suppression_s", "k_of_n", "class_thresholds", "margin")


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
    k_of_n:           (k, n): the top label's raw per-hop probability must also pass its
                      threshold in at least k of the last n hops, so one loud hop that
                      lifts the average alone does not fire. None: not required.
    class_thresholds: per-label thresholds that replace `threshold` for those labels, for
                      words a model confuses more (or less) than the rest.
    margin:           the averaged top score must lead the second one by at least this, so
                      a near tie between two words raises nothing. 0: not required.

    A hop that fails any of these leaves the detector's memory as it was. The defaults
    (None, None, 0) give RecognizeCommands' events exactly.
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
        k_of_n: tuple[int, int] | None = None,
        class_thresholds: dict[str, float] | None = None,
        margin: float = 0.0,
    ):
        if hop_seconds <= 0 or average_window_s <= 0 or not 0 <= threshold <= 1:
            raise ValueError("need hop_seconds > 0, average_window_s > 0, 0 <= threshold <= 1")
        if k_of_n is not None and not 1 <= k_of_n[0] <= k_of_n[1]:
            raise ValueError(f"k_of_n needs 1 <= k <= n, got {tuple(k_of_n)}")
        class_thresholds = dict(class_thresholds or {})
        unknown = sorted(set(class_thresholds) - set(labels))
        if unknown or not all(0 <= t <= 1 for t in class_thresholds.values()):
            raise ValueError(
                f"class thresholds need known labels and values in [0, 1] (unknown: {unknown})"
            )
        if not 0 <= margin <= 1:
            raise ValueError(f"margin must be in [0, 1], got {margin}")
        self.labels, self.hop_seconds = list(labels), hop_seconds
        self.average_window_s, self.threshold = average_window_s, threshold
        self.suppression_s, self.ignore, self.min_count = suppression_s, set(ignore), min_count
        self.k_of_n = None if k_of_n is None else (int(k_of_n[0]), int(k_of_n[1]))
        self.class_thresholds, self.margin = class_thresholds, margin
        self._thresholds = np.array(
            [class_thresholds.get(l, threshold) for l in self.labels], np.float64
        )
        self.reset()

    @property
    def operating_point(self) -> dict[str, Any]:
        """The settings that decide events, as the manifest's detector block holds them."""
        point: dict[str, Any] = {
            "threshold": self.threshold,
            "average_window_s": self.average_window_s,
            "suppression_s": self.suppression_s,
        }
        if self.k_of_n is not None:
            point["k_of_n"] = list(self.k_of_n)
        if self.class_thresholds:
            point["class_thresholds"] = dict(self.class_thresholds)
        if self.margin:
            point["margin"] = self.margin
        return point

    def reset(self) -> None:
        self._times = np.empty(0, np.float64)  # end times of the hops in the window
        self._rows = np.empty((0, len(self.labels)), np.float32)
        self._recent = self._rows  # the last n - 1 hops, for k_of_n
        self._previous: str | None = None
        self._previous_time = -np.inf
        # The clock is an origin plus a whole number of hops: summing float hop lengths
        # call after call drifts, and a hop at the window's edge would then be in or out
        # depending on how the stream was cut into calls.
        self._origin, self._hops = 0.0, 0

    def process(self, probs: np.ndarray, start_time: float | None = None) -> list[Detection]:
        """Events in probs [n_hops, n_labels] (probabilities, in [0, 1]); row k ends at
        start_time + (k+1)*hop. start_time None continues where the previous call ended."""
        probs = np.asarray(probs, np.float32).reshape(-1, len(self.labels))
        if start_time is not None:
            self._origin, self._hops = start_time, 0
        now = self._origin + (self._hops + np.arange(1, len(probs) + 1)) * self.hop_seconds
        events = []
        for i in range(0, len(probs), self.CHUNK):
            events += self._process(probs[i : i + self.CHUNK], now[i : i + self.CHUNK])
        self._hops += len(probs)
        return events

    def _process(self, probs: np.ndarray, now: np.ndarray) -> list[Detection]:
        """Only a hop whose averaged top score passes its label's threshold can change the
        detector's memory, so the averages are screened in bulk (cumulative sums, each label
        against its own threshold) and only the hops near or above it are averaged exactly
        and stepped through; k_of_n and margin only ever turn such a hop down."""
        times = np.concatenate([self._times, now])
        rows = np.concatenate([self._rows, probs])
        recent = np.concatenate([self._recent, probs]) if self.k_of_n else probs
        before = len(recent) - len(probs)  # hops of recent that precede probs
        # Hop k's window starts at the first retained hop newer than now - window; a
        # running maximum keeps the search exact even when start_time moved backwards.
        first = np.searchsorted(
            np.maximum.accumulate(times), now - self.average_window_s, side="right"
        )
        last = np.arange(len(self._times) + 1, len(times) + 1)
        count = last - first
        sums = np.zeros((len(rows) + 1, len(self.labels)), np.float64)
        np.cumsum(rows, axis=0, out=sums[1:])
        means = (sums[last] - sums[first]) / count[:, None]
        if self.class_thresholds:
            over = (means - self._thresholds).max(axis=1)
        else:  # one threshold: a max per hop is all it takes
            over = means.max(axis=1) - self.threshold
        # A float32 mean of m values in [0, 1] is within m * 6e-8 of the float64 one.
        tolerance = 1e-4 + 1e-6 * count
        events = []
        for k in np.flatnonzero((count >= self.min_count) & (over > -tolerance)):
            average = np.mean(rows[first[k] : last[k]], axis=0)
            top = int(np.argmax(average))
            label, score, at = self.labels[top], float(average[top]), float(now[k])
            since = (
                np.inf
                if self._previous in self.ignore or self._previous is None
                else at - self._previous_time
            )
            if (
                score > self._thresholds[top]
                and label != self._previous
                and since > self.suppression_s
                and self._decisive(average, top, recent[: before + k + 1])
            ):
                self._previous, self._previous_time = label, at
                if label not in self.ignore:
                    events.append(Detection(round(at, 6), label, score))
        self._times, self._rows = times[first[-1] :], rows[first[-1] :]
        if self.k_of_n is not None:
            self._recent = recent[len(recent) - min(len(recent), self.k_of_n[1] - 1) :]
        return events

    def _decisive(self, average: np.ndarray, top: int, history: np.ndarray) -> bool:
        """The margin and k-of-n conditions for the top label of an average passing its
        threshold; history ends with the hop being decided."""
        if self.margin and average[top] - np.partition(average, -2)[-2] < self.margin:
            return False
        if self.k_of_n is not None:
            k, n = self.k_of_n
            return int(np.count_nonzero(history[-n:, top] > self._thresholds[top])) >= k
        return True


def detector_options(manifest: dict) -> dict[str, Any]:
    """CommandDetector keyword arguments of the operating point recorded in an export's
    manifest, so every tool runs the detector the export was tuned for; {} when the
    manifest has no detector block (the detector's defaults then apply)."""
    block = manifest.get(BLOCK) or {}
    if not isinstance(block, dict):
        raise ValueError(f"the manifest's {BLOCK} block is not an object")
    options = {k: block[k] for k in OPTIONS if block.get(k) is not None}
    try:
        for k in ("threshold", "average_window_s", "suppression_s", "margin"):
            if k in options:
                options[k] = float(options[k])
        if "k_of_n" in options:
            k, n = options["k_of_n"]
            options["k_of_n"] = (int(k), int(n))
        if "class_thresholds" in options:
            options["class_thresholds"] = {
                str(l): float(t) for l, t in options["class_thresholds"].items()
            }
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"the manifest's {BLOCK} block is malformed ({exc})") from None
    return options


def describe(detector: CommandDetector, manifest: dict, given: Iterable[str] = ()) -> str:
    """One line naming the operating point a tool runs and where it came from: the
    manifest (and the stream it was chosen on), the caller (the options named in `given`) or the
    detector's defaults."""
    p = detector.operating_point
    parts = [
        f"threshold {p['threshold']:g}",
        f"window {p['average_window_s']:g} s",
        f"suppression {p['suppression_s']:g} s",
    ]
    if "k_of_n" in p:
        parts.append("{} of {} hops over it".format(*p["k_of_n"]))
    if "class_thresholds" in p:
        parts.append(
            "per class " + " ".join(f"{l} {t:g}" for l, t in p["class_thresholds"].items())
        )
    if "margin" in p:
        parts.append(f"margin {p['margin']:g}")
    block = manifest.get(BLOCK) or {}
    if block:
        source = "from manifest.json"
        if block.get("chosen_on"):
            source += f", chosen on {block['chosen_on']}"
        if block.get("target_fa_per_hour") is not None:
            source += f" for {block['target_fa_per_hour']:g} FA/h"
    else:
        source = "detector defaults"
    given = list(given)
    if given:
        source = f"{', '.join(given)} as given; the rest {source}"
    return f"detector: {', '.join(parts)} ({source})"


def detector_for(
    labels: list[str], hop_seconds: float, manifest: dict, **given: Any
) -> tuple[CommandDetector, str]:
    """A detector at the operating point of an export's manifest, each option in given
    that is not None replacing that one value, and describe()'s line for it."""
    given = {k: v for k, v in given.items() if v is not None}
    options = {**detector_options(manifest), **given}
    try:
        detector = CommandDetector(labels, hop_seconds, **options)
    except ValueError as exc:
        where = f"the manifest's {BLOCK} block" if manifest.get(BLOCK) else "detector options"
        raise ValueError(f"{where}: {exc}") from None
    return detector, describe(detector, manifest, given)
