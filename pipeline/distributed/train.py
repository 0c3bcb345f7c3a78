"""Data-parallel training on a Ray cluster.

Ray Train (TensorflowTrainer) starts the workers, writes each one's TF_CONFIG and, after a
worker fails, restarts them all; each runs pipeline.train.fit.train as one worker of a
MultiWorkerMirroredStrategy: the same training step as a single machine, on its own shard
of the file list. The run directory is where the chief writes everything, the per-epoch
backup included, so it must be storage every node sees (NFS, a cluster mount): a restarted
group resumes from it, exactly as a single machine restarted by hand does.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras


class EpochReport(keras.callbacks.Callback):
    """Hands each epoch's scores to Ray Train (every worker reports, as it requires)."""

    def on_epoch_end(self, epoch, logs=None):
        import ray.train

        ray.train.report({"epoch": epoch + 1, **(logs or {})})


def _worker(config: dict) -> None:
    from pipeline.train.fit import tf_config_workers, train

    workers = tf_config_workers([EpochReport(), *config["callbacks"]])
    train(config["cfg"], config["source"], config["run_dir"], config["verbose"], workers)


def train_on_ray(
    cfg: dict,
    source: str,
    run_dir: str | Path,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
    max_failures: int = 3,
    verbose: int = 2,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict:
    """Train with `workers` Ray workers into run_dir (a path all nodes see) and return the
    chief's metrics.json. callbacks run on every worker, after the run's own."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    run_dir = Path(run_dir).absolute()
    local = Path(source)
    trainer = TensorflowTrainer(
        _worker,
        train_loop_config={
            "cfg": cfg,
            "source": str(local.absolute()) if local.exists() else source,
            "run_dir": str(run_dir),
            "verbose": verbose,
            "callbacks": list(callbacks or []),
        },
        scaling_config=ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name="ray",
            storage_path=str(run_dir),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    trainer.fit()
    return json.loads((run_dir / "metrics.json").read_text())
