"""Defaults that depend on the data, resolved once it is open.

A config leaves some choices to the data because the right value differs between a
Speech Commands-sized set and a custom word list from a few voices: voice perturbation
(augment.pitch, augment.vtlp, null by default) lets a model trained on a few speakers
answer unseen ones, and recordings made at a low rate hold nothing above their Nyquist
frequency, so mel bands up there (front_end.fmax) would only learn the resampler's
silence. The resolved config is what the model is built from and what the run saves.
"""

from __future__ import annotations

import copy

# A set is small when it names fewer than data.few_speakers speakers or, when its file
# names name none, has fewer training clips than this (a few speakers' worth of takes).
SMALL_TRAINING_CLIPS = 2000
SMALL_SET_AUGMENT = {"pitch": 2.0, "vtlp": 0.1}  # semitones, warp factor spread
BANDWIDTH_SHARE = 0.95  # fmax as a share of the recordings' Nyquist frequency


def small_set(data, few_speakers: int) -> tuple[bool, str]:
    """Whether the data has too few voices to generalise unaided, and what says so."""
    if data.speakers is not None:
        return data.speakers < few_speakers, f"{data.speakers} speakers"
    n = data.count("train")
    return n < SMALL_TRAINING_CLIPS, f"speakers unknown, {n} training clips"


def adapt_to_data(cfg: dict, data) -> tuple[dict, list[str]]:
    """cfg (not changed) with its data-dependent defaults resolved for data (a source of
    pipeline.data.sources), and one line per decision for the log."""
    out = copy.deepcopy(cfg)
    small, why = small_set(data, out["data"]["few_speakers"])
    speakers = "speakers unknown" if data.speakers is None else f"{data.speakers} speakers"
    lines = [f"data: {speakers}; {data.split_rule}"]
    augment = out["augment"]
    for key, value in SMALL_SET_AUGMENT.items():
        if augment[key] is None:
            augment[key] = value if small else 0.0
            size = "small set" if small else "many voices"
            lines.append(f"augment.{key} {augment[key]:g} ({size}: {why})")
    fe, rate = out["front_end"], data.native_rate
    if out["data"]["follow_bandwidth"] and rate and rate / 2 < fe["fmax"]:
        fmax = float(round(BANDWIDTH_SHARE * rate / 2))
        if fmax > fe["fmin"]:
            lines.append(f"recordings at {rate} Hz: front_end.fmax {fe['fmax']:g} -> {fmax:g}")
            fe["fmax"] = fmax
        else:
            lines.append(
                f"recordings at {rate} Hz: front_end.fmax kept at {fe['fmax']:g} "
                f"({fmax:g} would not be above front_end.fmin {fe['fmin']:g})"
            )
    return out, lines
