import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _evaluate(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_scores_archive_test_split_and_test_layout(tiny_run, demo_data, tmp_path):
    listed = (demo_data / "testing_list.txt").read_text().split()
    result = _evaluate(
        "--model", str(tiny_run), "--data", str(demo_data), "--plot", str(tmp_path / "cm.png")
    )
    # the same clips, prepared and scored the same way as training's own test score
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]["accuracy"]
    assert result["accuracy"] == pytest.approx(trained, abs=1e-4)  # the JSON line rounds
    per_class = result["per_class"].values()
    assert round(sum(c["recall"] * c["support"] for c in per_class)) == round(
        result["accuracy"] * result["n"]
    )
    # the testing_list clips, plus _silence_ clips generated from the noise
    assert result["n"] > len([p for p in listed if p.split("/")[0] in result["per_class"]])
    assert (tmp_path / "cm.png").stat().st_size > 1000

    layout = tmp_path / "test_layout"
    for rel in listed:
        word = rel.split("/")[0]
        label = word if word in result["per_class"] else "_unknown_"
        (layout / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_data / rel, layout / label / f"{word}_{rel.split('/')[1]}")
    (layout / "_silence_").mkdir()
    result = _evaluate("--model", str(tiny_run / "model.keras"), "--data", str(layout))
    assert result["n"] == len(listed)
    assert result["per_class"]["_unknown_"]["support"] == sum(
        1 for p in listed if p.split("/")[0] not in result["per_class"]
    )


def test_bad_data_path_is_one_line_error(tiny_run, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "evaluate.py"),
            "--model",
            str(tiny_run),
            "--data",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path / 'missing'}: data folder not found"
    )
