import json


def test_tiny_run_writes_outputs(tiny_run):
    for name in (
        "model.keras",
        "labels.txt",
        "frontend.json",
        "config.yaml",
        "metrics.json",
        "training_curves.png",
        "confusion_test.png",
        "history.csv",
    ):
        assert (tiny_run / name).exists(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test"]["n"] > 0
    assert (tiny_run / "labels.txt").read_text().split()[:2] == ["_silence_", "_unknown_"]
