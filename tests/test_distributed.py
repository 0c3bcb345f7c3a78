"""Ray on one machine: distributed transcription gives the local rows, survives a killed actor
and a corrupt file and resumes; two-worker training (Ray Train and plain TF_CONFIG) ends
with the same weights on both workers. A real local Ray cluster, no network."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.distributed.cluster import check_address
from pipeline.runtime.audio import DEFAULT_LIMITS, load_audio
from pipeline.runtime.inputs import expand_inputs
from pipeline.runtime.recognizer import open_model
from pipeline.runtime.transcribe import Settings, run_transcription
from tests.conftest import DEMO, ROOT, TINY, held_out_clip

# Before Ray is imported, here and (inherited) in its workers: a single-node cluster on
# loopback, so Ray Train's TF_CONFIG names 127.0.0.1 and nothing needs the network.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
try:
    import ray

    from pipeline.distributed.transcribe import (
        Labeller,
        decode_batch,
        model_files,
        part_files,
        path_key,
        read_part,
        transcribe_on_ray,
    )
except ImportError:  # no [distributed] extra: the TF_CONFIG tests still run
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="needs the [distributed] extra (Ray)")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local cluster on loopback: 2 CPUs, no dashboard, a small object store."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 << 20,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> list[str]:
    """The demo clips and noise recordings, a recording with five spoken commands, a
    corrupt file and a missing one."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(12 * 16000) * 0.002).astype(np.float32)
    for k, (at, word) in enumerate([(1.0, "yes"), (3.0, "no"), (5.0, "left"), (7.0, "go")]):
        clip = load_audio(held_out_clip(word, k % 2), 16000)
        audio[round(at * 16000) : round(at * 16000) + len(clip)] += clip
    sf.write(d / "commands.wav", audio, 16000, subtype="PCM_16")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(40))
    return [str(DEMO), str(d / "commands.wav"), str(d / "corrupt.wav"), str(d / "missing.wav")]


def local_lines(paths: list[str], out: Path) -> list[str]:
    run_transcription(open_model(), expand_inputs(paths), out, Settings())
    return out.read_text().splitlines()


def ray_lines(out: Path) -> list[str]:
    return [line for loc in part_files(str(out)) for line in Path(loc).read_text().splitlines()]


def by_path(lines: list[str]) -> dict[str, list[str]]:
    """Rows grouped by input, in their order within each input (the parts hold inputs in
    any order)."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        groups.setdefault(json.loads(line)["path"], []).append(line)
    return groups


def test_ray_address_is_checked():
    for good in ("auto", "local", "ray://head:10001", "10.0.0.5:6379"):
        assert check_address(good) == good
    for bad in ("recordings/", "train.epochs=3", "demo"):
        with pytest.raises(ValueError, match="not a Ray address"):
            check_address(bad)


@needs_ray
def test_decode_task_and_actor_give_the_local_rows_without_a_cluster(inputs, tmp_path):
    """The two stages run in this process: rows line for line as the local command's."""
    paths = [p for p, _ in expand_inputs(inputs)]
    files, name, fe = model_files(None)
    batch = decode_batch(
        {"path": np.array(paths, object), "problem": np.full(len(paths), "", object)},
        fe.sample_rate,
        fe.clip_samples,
        DEFAULT_LIMITS,
        np.zeros(0, np.uint64),
    )
    assert list(batch["kind"]).count("recording") == 7  # six noise files and the commands
    table = Labeller(files, name, Settings())(batch)
    from pipeline.runtime.rows import json_line

    got = [json_line(r) for r in table.to_pylist()]
    want = local_lines(inputs, tmp_path / "local.jsonl")
    assert by_path([g.rstrip("\n") for g in got]) == by_path(want)
    detections = [json.loads(w) for w in want if '"detection"' in w]
    assert [d["label"] for d in detections] == ["yes", "no", "left", "go"]


@needs_ray
def test_finished_paths_are_dropped_by_the_decode_task(inputs):
    paths = sorted(str(p) for p in (DEMO / "yes").glob("*.wav"))
    _, _, fe = model_files(None)
    done = np.sort(path_key(paths[:3]))
    batch = decode_batch(
        {
            "path": np.array(paths + ["", "# a comment"], object),
            "problem": np.full(len(paths) + 2, "", object),
        },
        fe.sample_rate,
        fe.clip_samples,
        DEFAULT_LIMITS,
        done,
    )
    assert list(batch["path"]) == paths[3:]


@needs_ray
@pytest.mark.slow
def test_distributed_transcription_matches_the_local_command(ray_cluster, inputs, tmp_path):
    want = by_path(local_lines(inputs, tmp_path / "local.jsonl"))
    summary, prefix = transcribe_on_ray(inputs, str(tmp_path / "out"))
    assert prefix.startswith(str(tmp_path / "out" / "run-"))
    assert by_path(ray_lines(tmp_path / "out")) == want
    assert (summary.files, summary.errors) == (len(want), 2)
    # Parquet holds the same rows; object storage (a file:// URI) the same but the names
    parquet = [r for loc in transcribe_parquet(inputs, tmp_path) for r in read_part(loc)]
    assert by_path(
        [json.dumps({k: v for k, v in r.items() if v is not None}) for r in parquet]
    ) == {p: [json.dumps(json.loads(line)) for line in rows] for p, rows in want.items()}
    uri = "file://" + str(DEMO / "yes")
    transcribe_on_ray([uri], str(tmp_path / "uri"))
    from_uri = {
        p.removeprefix("file://"): [line.replace('"path": "file://', '"path": "') for line in rows]
        for p, rows in by_path(ray_lines(tmp_path / "uri")).items()
    }
    assert from_uri == {p: rows for p, rows in want.items() if p.startswith(str(DEMO / "yes"))}


def transcribe_parquet(inputs: list[str], tmp_path: Path) -> list[str]:
    transcribe_on_ray(inputs, str(tmp_path / "parquet"), fmt="parquet")
    return part_files(str(tmp_path / "parquet"))


@needs_ray
@pytest.mark.slow
def test_resume_skips_finished_inputs_and_retries_failed_ones(ray_cluster, inputs, tmp_path):
    broken = tmp_path / "fixed_later.wav"
    broken.write_bytes(b"not audio")
    words = sorted(str(p) for p in (DEMO / "no").glob("*.wav"))
    out = str(tmp_path / "out")
    first, _ = transcribe_on_ray(words[:2] + [str(broken)], out)
    assert (first.clips, first.errors) == (2, 1)
    with pytest.raises(ValueError, match="earlier runs"):
        transcribe_on_ray(words, out)
    shutil.copy(words[0], broken)
    second, _ = transcribe_on_ray(words + [str(broken)], out, resume=True)
    assert (second.files, second.errors) == (len(words) - 1, 0)
    want = by_path(local_lines(words + [str(broken)], tmp_path / "local.jsonl"))
    assert by_path(ray_lines(tmp_path / "out")) == want  # each path once, no error row left
    assert len(part_files(out)) == 2


def labeller_pids() -> set[int]:
    import psutil

    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("MapBatches(Labeller)" in part for part in p.info["cmdline"] or [])
    }


@needs_ray
@pytest.mark.slow
def test_a_killed_actor_loses_no_row(ray_cluster, tmp_path):
    """SIGKILL of the model actor half way: Ray restarts it and retries its batch; the part
    file of a retried write task replaces its own, so nothing is lost or doubled."""
    clips = sorted(p for p in DEMO.glob("*/*.wav") if p.parent.name != "_background_noise_")
    for copy in range(6):
        (tmp_path / "clips" / str(copy)).mkdir(parents=True)
        for c in clips:
            shutil.copy(c, tmp_path / "clips" / str(copy) / f"{c.parent.name}_{c.name}")
    inputs = [str(tmp_path / "clips")]
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_when_half_written():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            written = list(out.glob("run-*/part-*"))
            pids = labeller_pids()
            if written and pids:
                os.kill(min(pids), signal.SIGKILL)
                killed.append(len(written))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_half_written)
    killer.start()
    summary, _ = transcribe_on_ray(inputs, str(out), batch_rows=16, rows_per_file=32)
    killer.join()
    assert killed, "the actor was never seen at work"
    assert killed[0] < len(part_files(str(out))), "killed after the job ended"
    want = by_path(local_lines(inputs, tmp_path / "local.jsonl"))
    assert by_path(ray_lines(out)) == want
    assert summary.files == len(want) == 6 * len(clips)


def kill_once(run_dir: Path, epoch: int):
    """A callback that makes the worker of rank 1 exit at the start of `epoch`, once the
    chief has finished the epoch before (another worker crashing between epochs), leaving
    a marker so that the restarted run goes on."""
    import keras

    class KillOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            marker = run_dir / "killed"
            if e != epoch or marker.exists() or ray.train.get_context().get_world_rank() != 1:
                return
            deadline = time.time() + 120
            while time.time() < deadline and len(_epochs(run_dir)) < epoch:
                time.sleep(0.1)
            marker.touch()
            os._exit(1)

    return KillOnce()


def _epochs(run: Path) -> list[int]:
    history = run / "history.csv"
    lines = history.read_text().splitlines()[1:] if history.exists() else []
    return [int(line.split(",")[0]) for line in lines]


@needs_ray
@pytest.mark.slow
def test_two_ray_workers_survive_a_failure_and_agree(ray_cluster, tmp_path):
    from pipeline.distributed.train import train_on_ray
    from pipeline.train.config import load_config

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the callback travels
    run = tmp_path / "run"
    cfg = load_config(
        None, [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=3"]
    )
    metrics = train_on_ray(
        cfg, str(DEMO), run, workers=2, max_failures=1, callbacks=[kill_once(run, 2)]
    )
    assert (run / "killed").exists()
    assert _epochs(run) == [0, 1, 2]  # resumed after the failure, not started over
    assert metrics["workers"]["count"] == 2
    assert metrics["workers"]["weight_spread"] == 0.0
    assert metrics["test"]["n"] > 0 and not (run / "backup").exists()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_tf_config_workers_on_loopback_end_with_the_same_weights(tmp_path):
    cluster = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    run = tmp_path / "run"
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
            ),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "train.py"), "--tf-config", "--quiet"]
                + ["--data", str(DEMO), "--out", str(run), *TINY],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    chief = outs[0][0].splitlines()[-1]
    other = outs[1][0].splitlines()[-1]
    digest = json.loads((run / "metrics.json").read_text())["workers"]["weights_sha1"]
    assert chief.endswith("weight spread 0") and digest in chief
    assert other == f"done: worker 1 {digest}"
    assert _epochs(run) == [0, 1]


# One training step of a small model: alone on 8 examples, or as one of the workers in
# TF_CONFIG on its share of them. Prints the weights after the step and the step's sums.
ONE_STEP = """
import json, os, sys
sys.path.insert(0, {root!r})
from pipeline.tf_env import import_tensorflow
import_tensorflow()
import keras, numpy as np, tensorflow as tf
from pipeline.train.fit import Workers, make_steps, tf_config_workers
workers = tf_config_workers() if "TF_CONFIG" in os.environ else Workers()
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 5)).astype("float32")
y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
share = slice(workers.rank * 8 // workers.count, (workers.rank + 1) * 8 // workers.count)
keras.utils.set_random_seed(0)
with workers.strategy.scope():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.optimizer.build(model.trainable_variables)
before = [w.tolist() for w in model.get_weights()]
ds = tf.data.Dataset.from_tensor_slices((x[share], y[share])).batch(8)
loss = keras.losses.CategoricalCrossentropy(reduction=None)
step, _ = make_steps(model, loss, workers.strategy, ds.element_spec, ds.element_spec)
sums = [step(batch).numpy().tolist() for batch in ds][0]
after = [w.tolist() for w in model.get_weights()]
print(json.dumps({{"before": before, "weights": after, "sums": sums}}))
"""


@pytest.mark.slow
def test_two_workers_take_the_step_one_worker_takes_on_their_union():
    """The gradient is the global batch's mean: two workers with four examples each update
    the weights as one worker does with all eight."""
    code = ONE_STEP.format(root=str(ROOT))
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr[-2000:]
    cluster = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}}
                ),
            },
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:]
    one = json.loads(alone.stdout.splitlines()[-1])
    both = [json.loads(out.splitlines()[-1]) for out, _ in outs]
    assert both[0] == both[1]  # the same update on every worker
    for w1, w2 in zip(one["weights"], both[0]["weights"]):
        np.testing.assert_allclose(w1, w2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one["sums"], both[0]["sums"], rtol=1e-5)
    assert one["weights"] != one["before"]  # the step moved them
