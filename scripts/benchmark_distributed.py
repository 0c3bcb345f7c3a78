#!/usr/bin/env python3
"""Distributed transcription on a local Ray cluster against the local command, same files.

  python scripts/benchmark_distributed.py [--clips DIR ...] [--sizes 500 1000 2500 0]
      [--repeats 2] [--model EXPORT] [--out runs/benchmarks/distributed.md]

Every audio file of the folders (default: the two development folders, 5,184 files of
which 6 long noise recordings) goes into a manifest; the first N lines of it, for each
size (0: all), are transcribed by `scripts/transcribe.py @LIST` and by
`scripts/transcribe.py @LIST --ray ADDRESS`, each a fresh process as a user runs it, the
Ray one joining a local cluster started once (its start-up is reported apart: a real
cluster is already up, but every job starts its own driver and worker processes). The
two take turns --repeats times and the fastest run of each counts. The rows of the
largest size are compared path by path. A line fitted through the wall times gives each
side's per-job and per-file cost, from which a prediction for a bigger cluster follows
(--nodes x --cpus-per-node). Writes a Markdown report and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data"  # the development data beside a checkout


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line."""
    import numpy as np

    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def grouped(lines: list[str]) -> dict[str, list[str]]:
    """Rows by input path, in their order within each input."""
    out: dict[str, list[str]] = {}
    for line in lines:
        out.setdefault(json.loads(line)["path"], []).append(line)
    return out


def run_command(manifest: Path, out: Path, model: str | None, ray: str | None) -> dict:
    """scripts/transcribe.py on the manifest in a fresh process: wall time and summary."""
    cmd = [sys.executable, str(ROOT / "scripts" / "transcribe.py"), f"@{manifest}"]
    cmd += ["--out", str(out), "--summary-json"] + (["--model", model] if model else [])
    cmd += [f"--ray={ray}"] if ray else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"transcription failed: {proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 3), **json.loads(proc.stderr.splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips",
        nargs="+",
        default=[str(DEV / "speech_commands_dev"), str(DEV / "speech_commands_test_dev")],
        help="folders of audio (default: the development folders)",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[500, 1000, 2500, 0], help="files per job; 0: all"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, fastest counts")
    parser.add_argument("--model", help="exported model (default: the bundled one)")
    parser.add_argument("--nodes", type=int, default=100, help="predicted cluster: nodes (100)")
    parser.add_argument("--cpus-per-node", type=int, default=16, help="and CPUs each (16)")
    parser.add_argument(
        "--out",
        default=str(ROOT / "runs" / "benchmarks" / "distributed.md"),
        help="results page (default runs/benchmarks/distributed.md)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback, one node
    import ray

    from pipeline.distributed.transcribe import model_actors, part_files
    from pipeline.runtime.files import atomic_write_text
    from pipeline.runtime.inputs import expand_inputs

    work = Path(args.out).with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    paths = [p for p, _ in expand_inputs(args.clips)]
    sizes = sorted({n if 0 < n < len(paths) else len(paths) for n in args.sizes})
    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    cluster_start_s = time.perf_counter() - start
    address = ray.get_runtime_context().gcs_address
    local: dict[int, list[dict]] = {n: [] for n in sizes}
    distributed: dict[int, list[dict]] = {n: [] for n in sizes}
    for n in sizes:
        manifest = work / f"manifest_{n}.txt"
        manifest.write_text("".join(p + "\n" for p in paths[:n]))
        for r in range(args.repeats):
            local[n].append(run_command(manifest, work / f"local_{n}.jsonl", args.model, None))
            out = work / f"ray_{n}_{r}"
            for old in part_files(str(out)):
                os.unlink(old)
            distributed[n].append(run_command(manifest, out, args.model, address))
            print(
                f"{n} files: local {local[n][-1]['wall_s']:.2f} s, "
                f"ray {distributed[n][-1]['wall_s']:.2f} s"
            )
    ray.shutdown()
    best_local = {n: min(runs, key=lambda r: r["wall_s"]) for n, runs in local.items()}
    best_ray = {n: min(runs, key=lambda r: r["wall_s"]) for n, runs in distributed.items()}

    n = sizes[-1]
    want = grouped((work / f"local_{n}.jsonl").read_text().splitlines())
    got = grouped(
        [
            line
            for loc in part_files(str(work / f"ray_{n}_{args.repeats - 1}"))
            for line in Path(loc).read_text().splitlines()
        ]
    )
    differing = sorted(p for p in want.keys() | got.keys() if want.get(p) != got.get(p))
    local_job, local_file = fit_line(sizes, [best_local[k]["wall_s"] for k in sizes])
    ray_job, ray_file = fit_line(sizes, [best_ray[k]["wall_s"] for k in sizes])
    # inference bounds the Ray side: a file costs one actor ray_file x actors of its time
    actors = model_actors(cpus)
    actor_s_per_file = ray_file * actors
    big_actors = model_actors(args.nodes * args.cpus_per_node)
    million = 1_000_000
    predicted_s = ray_job + million * actor_s_per_file / big_actors
    result = {
        "files": n,
        "rows": sum(len(v) for v in want.values()),
        "rows_identical": not differing,
        "differing_paths": differing[:10],
        "cpus": cpus,
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "cluster_start_s": round(cluster_start_s, 2),
        "local_wall_s": {str(k): [r["wall_s"] for r in v] for k, v in local.items()},
        "ray_wall_s": {str(k): [r["wall_s"] for r in v] for k, v in distributed.items()},
        "local_per_job_s": round(local_job, 2),
        "local_per_file_ms": round(local_file * 1000, 3),
        "ray_per_job_s": round(ray_job, 2),
        "ray_per_file_ms": round(ray_file * 1000, 3),
        "overhead_s": round(best_ray[n]["wall_s"] - best_local[n]["wall_s"], 2),
        "actors": actors,
        "actor_ms_per_file": round(actor_s_per_file * 1000, 3),
        "prediction": {
            "nodes": args.nodes,
            "cpus_per_node": args.cpus_per_node,
            "actors": big_actors,
            "files": million,
            "wall_s": round(predicted_s, 1),
        },
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    rows = "\n".join(
        f"| {k} | {best_local[k]['wall_s']:.2f} s | {best_ray[k]['wall_s']:.2f} s | "
        f"{best_ray[k]['wall_s'] - best_local[k]['wall_s']:+.2f} s |"
        for k in sizes
    )
    same = (
        "identical, path by path and line by line"
        if not differing
        else (f"{len(differing)} paths differ")
    )
    report = f"""# Distributed transcription benchmark

Written by `python scripts/benchmark_distributed.py` (one run on one machine: {cpus} CPUs,
{result["machine"]}, load average after {result["load_average"]}; the machine is shared,
so single numbers move with the load: each side ran {args.repeats} times, the fastest counts).

Local: `scripts/transcribe.py @LIST --out rows.jsonl`. Ray: the same command with
`--ray ADDRESS`, joining a local cluster of {cpus} CPUs started once ({cluster_start_s:.1f} s,
not counted): its own driver, decode tasks, one model actor, write tasks. Both are fresh
processes, timed from start to exit.

| files | local command | `--ray` command | difference |
| ---: | ---: | ---: | ---: |
{rows}

Rows of the {n} files: {same} ({result["rows"]} rows).

Fitted, wall = per job + files x per file: local {local_job:.2f} s + {local_file * 1000:.2f} ms/file;
Ray {ray_job:.2f} s + {ray_file * 1000:.2f} ms/file. The Ray side is bound by its {actors}
model actor(s) ({actor_s_per_file * 1000:.2f} actor-ms a file; decode and write tasks take the
other CPUs). Scaling model: wall = per job + files x actor-ms / actors. {million:,} files on
{args.nodes} nodes x {args.cpus_per_node} CPUs ({big_actors} actors, the default three quarters
of the CPUs), if the storage keeps up: {ray_job:.1f} s + {million:,} x {actor_s_per_file * 1000:.2f} ms /
{big_actors} = {predicted_s:.0f} s.

```json
{json.dumps(result, indent=1)}
```
"""
    atomic_write_text(Path(args.out), report)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
