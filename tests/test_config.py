from pathlib import Path

import pytest

from models import build_from_config, names
from pipeline.runtime.params import FrontEnd
from pipeline.train.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_builds(path):
    cfg = load_config(path)
    fe = FrontEnd.from_dict(cfg["front_end"])
    model = build_from_config(cfg, fe, 12)
    assert model.output_shape == (None, 12)


def test_shipped_configs_cover_the_cells():
    assert {"default", "demo", "rnn", "lstm", "gru"} <= {p.stem for p in CONFIGS}
    assert {"rnn", "lstm", "gru", "crnn"} <= set(names())


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.unitz=[8]"], "unknown config key: model.unitz"),
        (["train.epochs=1.5"], "train.epochs: expected int"),
        (["train.learning_rate=-1"], "must not be negative"),
        (["train.schedule=linear"], "train.schedule: must be one of"),
        (["front_end.hop_ms=12"], "front_end:"),
        (["model.units=[]"], "model.units"),
        (["epochs"], "not key=value"),
    ],
)
def test_bad_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_overrides_parse_yaml_values():
    cfg = load_config(
        None, ["model.units=[8, 4]", "augment.spec_augment={time_masks: 1}", "data.words=null"]
    )
    assert cfg["model"]["units"] == [8, 4]
    assert cfg["augment"]["spec_augment"] == {"time_masks": 1}
    assert cfg["data"]["words"] is None


def test_command_words_stay_words(tmp_path):
    """YAML 1.1 reads yes/no/on/off as booleans; configs must not."""
    path = tmp_path / "words.yaml"
    path.write_text("data:\n  words: [yes, no, on, off, true_word]\n")
    assert load_config(path)["data"]["words"] == ["yes", "no", "on", "off", "true_word"]
    assert load_config(None, ["data.words=[on, off]"])["data"]["words"] == ["on", "off"]
    assert load_config(None, ["train.ema=0"])["train"]["ema"] == 0.0
    path.write_text("data:\n  words: [true, 3]\n")
    with pytest.raises(ConfigError, match="data.words: expected a list of words"):
        load_config(path)
