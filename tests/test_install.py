"""The runtime stands on its own: no TensorFlow, Keras or librosa, by layout and by install."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DEMO, ROOT

HEAVY = ("tensorflow", "keras", "librosa", "tensorflow_datasets", "yaml", "matplotlib")

# A finder that makes the heavy packages unimportable, as in an environment without them.
BLOCK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT)!r})
"""


def test_every_runtime_module_imports_without_heavy_packages():
    code = (
        BLOCK
        + """
import pkgutil, importlib, pipeline.runtime as rt
names = [m.name for m in pkgutil.walk_packages(rt.__path__, "pipeline.runtime.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 10


def test_transcription_runs_without_heavy_packages(tiny_export, tmp_path):
    wavs = sorted(str(p) for p in (DEMO / "yes").glob("*.wav"))[:3]
    code = (
        BLOCK
        + f"""
sys.argv = ["kws-transcribe", "--model", {str(tiny_export)!r}, *{wavs!r},
            "--out", {str(tmp_path / "rows.csv")!r}]
from scripts.transcribe import main
sys.exit(main())
"""
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "rows.csv")))
    assert [r["path"] for r in rows] == wavs and all(r["kind"] == "clip" for r in rows)


def held_out_command_clips() -> list[str]:
    """The demo's test clips of the ten commands: their speakers are in the test split of
    the data the bundled model was trained on, so it never heard them."""
    from pipeline.train.config import COMMANDS

    listed = (DEMO / "testing_list.txt").read_text().split()
    return [rel for rel in listed if rel.split("/")[0] in COMMANDS]


@pytest.mark.slow
def test_core_install_labels_the_demo_words_without_tensorflow(tmp_path):
    """`pip install .` into a fresh environment, then the bundled model on held-out demo
    clips."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    missing = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util, json; print(json.dumps("
            f"[m for m in {HEAVY[:3]!r} if importlib.util.find_spec(m)]))",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert json.loads(missing.stdout) == []
    held_out = held_out_command_clips()
    wavs = [str(DEMO / rel) for rel in held_out]
    out = tmp_path / "rows.csv"
    run = subprocess.run(
        [str(venv / "bin" / "kws-transcribe"), *wavs, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    labels = [r["label"] for r in csv.DictReader(open(out))]
    truth = [rel.split("/")[0] for rel in held_out]
    assert sum(a == b for a, b in zip(labels, truth)) >= 0.8 * len(truth), labels
