"""YAML configs: defaults, validation and command-line overrides.

Every key a config may hold appears in DEFAULTS; anything else, or a value of the wrong
type, is an error before any work starts.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.runtime.errors import one_line
from pipeline.runtime.params import FrontEnd

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        # For a Speech Commands layout: the command words; other words become _unknown_.
        # null means every folder is its own class (custom word lists).
        "words": COMMANDS,
        "silence_fraction": 0.1,  # _silence_ examples, as a fraction of the training set
        "unknown_fraction": 0.1,  # _unknown_ examples, as a fraction of the training set
        "validation_percent": 10,  # hash split used when list files are missing
        "testing_percent": 10,
        # How held-out splits are drawn when a folder has no list files: "speaker" keeps
        # each speaker in one split, "take" holds out takes of every speaker (all voices
        # train), "auto" picks "take" for a set with fewer than few_speakers speakers.
        "split": "auto",
        "few_speakers": 20,  # below this a set is small: take split, voice variation on
        "speaker_pattern": None,  # regex whose first group is the speaker in a file name
        "follow_bandwidth": True,  # lower front_end.fmax to a band-limited set's bandwidth
        # TTS takes of the set's own words for training (pipeline/data/synthetic_words.py),
        # cached between runs: true, or a mapping of SYNTHETIC_KEYS, e.g.
        # {per_word: 200, unknown: true, spellings: {lights_on: lights on}}
        "synthetic": None,
        # Folders of audio known to hold no command (hard negatives, e.g. mined false
        # triggers): every file joins the training split as _unknown_, none left out.
        "negatives": [],
    },
    "front_end": FrontEnd().to_dict(),
    "model": {
        "name": "gru",
        "units": [128, 128],
        "dropout": 0.1,
        "dense_units": 0,
        "bidirectional": False,
        "conv": None,  # e.g. {filters: [16], kernel: 5, stride: 2} (crnn)
    },
    "augment": {
        "noise_prob": 0.8,  # chance a training clip gets background noise mixed in
        "noise_snr_db": [0.0, 20.0],  # speech-to-noise ratio of mixed-in noise, uniform in dB
        "silence_dbfs": [-70.0, -10.0],  # RMS level of _silence_ clips cut from the noise
        "time_shift_ms": 100.0,  # random shift in [-x, x]
        "gain_db": 6.0,  # random gain in [-x, x] dB
        "speed": 0.0,  # speed perturbation: factor drawn in [1 - x, 1 + x]
        "pitch": None,  # pitch shift in [-x, x] semitones; null: 2 for small sets, else 0
        "vtlp": None,  # vocal-tract-length warp in [1 - x, 1 + x]; null: 0.1 for small sets
        "generated_noise": True,  # coloured noise for sets without _background_noise_
        "mixup": 0.0,  # mixup Beta(alpha, alpha); 0 turns it off
        "spec_augment": None,  # e.g. {time_masks: 2, time_width: 10, freq_masks: 2, freq_width: 5}
    },
    "train": {
        "epochs": 40,
        "batch_size": 64,
        "learning_rate": 0.002,
        "schedule": "cosine",  # cosine | constant
        "warmup_epochs": 1,
        "label_smoothing": 0.0,
        "weight_decay": 0.0,
        "clipnorm": 0.0,  # >0: clip each gradient to this norm (plain RNNs need it)
        "patience": 10,  # early stopping on validation accuracy
        "min_steps": 0,  # >0: small sets make several passes per epoch to take this many steps
        "ema": 0.0,  # >0: keep an exponential moving average of the weights
        # with this momentum and validate/save the averaged model
        # Stream-native training (pipeline/data/windows.py): null trains on one-second clips
        # answered at their last step; a mapping trains on windows with a target per step,
        # e.g. {seconds: 2.0, target_s: 0.5, burn_in_s: 0.3, target_weight: 1.0}
        "windows": None,
        # A run directory whose weights (feature normalisation included) the model starts
        # from instead of a fresh init, to fine-tune it; its architecture and front end
        # must be this config's. null: a fresh start.
        "init_from": None,
    },
}
WINDOW_KEYS = {"seconds": 2.0, "target_s": 0.5, "burn_in_s": 0.3, "target_weight": 1.0}
# data.synthetic: takes per word; unknown: add an _unknown_ class of other words' takes;
# spellings: folder name -> text to speak (default: _ and - as spaces); cache: folder
# (null: $XDG_CACHE_HOME/kws-rnn/tts); workers: engine processes at once
SYNTHETIC_KEYS = {
    "per_word": 200,
    "unknown": False,
    "per_unknown_word": 20,
    "spellings": {},
    "cache": None,
    "workers": 2,
}

# Keys whose value may be null or a mapping/number instead of the default's type.
_FREE = {
    ("data", "words"),
    ("data", "speaker_pattern"),
    ("data", "synthetic"),
    ("model", "conv"),
    ("augment", "pitch"),
    ("augment", "vtlp"),
    ("augment", "spec_augment"),
    ("train", "windows"),
    ("train", "init_from"),
}
_CHOICES = {
    ("train", "schedule"): {"cosine", "constant"},
    ("data", "split"): {"auto", "speaker", "take"},
}


class ConfigError(ValueError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false. PyYAML follows YAML 1.1, where yes, no, on
    and off are booleans too, and those are command words."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str):
    """Parse a config or run file (YAML 1.2 booleans)."""
    return yaml.load(text, Loader=_Loader)


def _check(value: Any, default: Any, path: tuple[str, ...]) -> Any:
    where = ".".join(path)
    if isinstance(default, dict) and path not in _FREE:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        unknown = set(value) - set(default)
        if unknown:
            raise ConfigError(
                f"unknown config key: {where + '.' if where else ''}{sorted(unknown)[0]}"
                f" (known: {', '.join(sorted(default))})"
            )
        return {k: _check(value.get(k, v), v, path + (k,)) for k, v in default.items()}
    if path in _FREE or value is None and default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if (
            ok
            and isinstance(default, int)
            and not isinstance(default, bool)
            and value != int(value)
        ):
            ok = False
        if ok and value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        if ok:
            value = type(default)(value)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    if path in _CHOICES and value not in _CHOICES[path]:
        raise ConfigError(f"{where}: must be one of {sorted(_CHOICES[path])}, got {value!r}")
    return value


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {k} is not a section")
    try:
        node[keys[-1]] = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {dotted}: {one_line(exc)}") from None


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Defaults <- YAML file <- key=value overrides, then validated."""
    user: dict = {}
    if path:
        try:
            user = load_yaml(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {one_line(exc)}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        _set(user, key.strip(), raw)
    return resolve(user)


def resolve(user: dict) -> dict:
    """A config mapping with every default filled in, validated. A saved config goes
    through it again before it is compared, so a key added since it was saved (at its
    default) does not make an old run look different."""
    cfg = _check(_merge(DEFAULTS, user), DEFAULTS, ())
    try:
        FrontEnd.from_dict(cfg["front_end"])
    except ValueError as exc:
        raise ConfigError(f"front_end: {exc}") from None
    if not cfg["model"]["units"] or not all(
        isinstance(u, int) and u > 0 for u in cfg["model"]["units"]
    ):
        raise ConfigError(
            f"model.units: expected a list of positive integers, got {cfg['model']['units']!r}"
        )
    for key in ("noise_snr_db", "silence_dbfs"):
        pair = cfg["augment"][key]
        if (
            len(pair) != 2
            or not all(isinstance(v, (int, float)) for v in pair)
            or pair[0] > pair[1]
        ):
            raise ConfigError(f"augment.{key}: expected [low, high], got {pair!r}")
        cfg["augment"][key] = [float(v) for v in pair]
    words = cfg["data"]["words"]
    if words is not None and (
        not isinstance(words, list)
        or not words
        or not all(isinstance(w, str) and w and not w.startswith(".") for w in words)
    ):
        raise ConfigError(
            f"data.words: expected a list of words (folder names) or null, got {words!r}"
        )
    if cfg["data"]["silence_fraction"] >= 1 or cfg["data"]["unknown_fraction"] >= 1:
        raise ConfigError("data.silence_fraction and data.unknown_fraction must be below 1")
    if cfg["train"]["windows"] is not None:
        cfg["train"]["windows"] = _check_windows(cfg["train"]["windows"], cfg["front_end"])
    cfg["data"]["synthetic"] = check_synthetic(cfg["data"]["synthetic"])
    negatives = cfg["data"]["negatives"]
    if not all(isinstance(f, str) and f for f in negatives):
        raise ConfigError(f"data.negatives: expected a list of folders, got {negatives!r}")
    init_from = cfg["train"]["init_from"]
    if init_from is not None and not (isinstance(init_from, str) and init_from):
        raise ConfigError(f"train.init_from: expected a run directory or null, got {init_from!r}")
    return cfg


def check_synthetic(value: Any) -> dict | None:
    """data.synthetic with its defaults filled in (true: all defaults; null or false: off)."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict) or set(value) - set(SYNTHETIC_KEYS):
        raise ConfigError(
            f"data.synthetic: expected true or a mapping of {', '.join(SYNTHETIC_KEYS)}, "
            f"got {value!r}"
        )
    out = {**copy.deepcopy(SYNTHETIC_KEYS), **value}
    for key in ("per_word", "per_unknown_word", "workers"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ConfigError(
                f"data.synthetic.{key}: expected a positive integer, got {out[key]!r}"
            )
    if not isinstance(out["unknown"], bool):
        raise ConfigError(f"data.synthetic.unknown: expected true or false, got {out['unknown']!r}")
    spellings = out["spellings"] or {}
    if not isinstance(spellings, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in spellings.items()
    ):
        raise ConfigError(
            "data.synthetic.spellings: expected a mapping of folder name to text to speak, "
            f"got {out['spellings']!r}"
        )
    if out["cache"] is not None and not (isinstance(out["cache"], str) and out["cache"]):
        raise ConfigError(f"data.synthetic.cache: expected a folder, got {out['cache']!r}")
    return {**out, "spellings": dict(spellings)}


def _check_windows(value: Any, front_end: dict) -> dict:
    """train.windows with its defaults filled in, each a positive number (burn-in may be
    0), the window at least a clip long."""
    if not isinstance(value, dict) or set(value) - set(WINDOW_KEYS):
        raise ConfigError(
            f"train.windows: expected a mapping of {', '.join(WINDOW_KEYS)}, got {value!r}"
        )
    out = {**WINDOW_KEYS, **value}
    for key, v in out.items():
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or v < 0
            or (v == 0 and key != "burn_in_s")
        ):
            raise ConfigError(f"train.windows.{key}: expected a positive number, got {v!r}")
    if out["seconds"] < front_end["clip_seconds"]:
        raise ConfigError(
            f"train.windows.seconds: must be at least the clip length "
            f"({front_end['clip_seconds']} s), got {out['seconds']}"
        )
    return {k: float(v) for k, v in out.items()}
