"""Ray scale-out: the same checkpoints through the plain command and through arrow_quant_v2.ray
on a local Ray cluster with 1 and 2 workers (docs/ray.md).

    .venv/bin/python bench/ray_scaleout.py [--checkpoints 4] [--mib 32] [--split-mib 128]
        [--reps 3] [--command build/src/cli/arrowquant] [--args "--profile local"]

Writes --checkpoints float32 checkpoints of about --mib MiB each (linear layers of 1024 x 1024,
plus a norm per layer) into a temporary folder, then, --reps times in alternation:
- plain: ``arrowquant quantize SRC -o OUT --threads 1 ARGS`` for each checkpoint in turn, in one
  loop on the driver (the work of one worker, without Ray);
- ray1 / ray2: ``quantize_checkpoints`` on a running local cluster of 1 and 2 CPUs, its
  workers at the driver's niceness as ``--ray local`` starts it (one Dataset of units: each
  checkpoint whole in one unit that plans, quantizes and writes it, or, where that spreads it
  over idle workers, planned by a task, cut into ranges of tensors and written by a task;
  ``--threads 1``), the cluster started before the timing;
- split: one checkpoint of --split-mib MiB, through the command and through the cluster of 1
  and 2 CPUs (on two, its tensors cut into ranges over the workers; on one, whole).
Every output is checked byte for byte against the plain command's. Prints each best time, the
throughput in source MiB/s, the ratios ray1 / plain (the overhead of the Ray path on one worker,
target <= 1.15) and plain / ray2 (the speed-up of two workers), and the cluster's start-up time
(paid once per job by ``--ray local``, not per checkpoint).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_checkpoints(folder: pathlib.Path, n: int, mib: int) -> list[pathlib.Path]:
    from safetensors.numpy import save_file

    layers = max(1, mib // 4)  # 1024 x 1024 float32 = 4 MiB
    out = []
    for c in range(n):
        rng = np.random.default_rng(c)
        t = {}
        for i in range(layers):
            t[f"blocks.{i}.proj.weight"] = (rng.standard_normal((1024, 1024), np.float32) * 0.02)
            t[f"blocks.{i}.norm.weight"] = np.ones(1024, np.float32)
        p = folder / f"ckpt{c}.safetensors"
        save_file(t, str(p))
        out.append(p)
    return out


def digest(p: pathlib.Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def run_plain(command: str, srcs, outdir: pathlib.Path, args: list[str]) -> float:
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for s in srcs:
        subprocess.run([command, "quantize", str(s), "-o", str(outdir / (s.stem + ".arrow")),
                        "--threads", "1", "--quiet", *args], check=True)
    return time.perf_counter() - t0


PHASES: dict[str, dict[str, float]] = {}


def run_ray(srcs, outdir: pathlib.Path, args: list[str], command: str, workers: int,
            key: str = "") -> float:
    from arrow_quant_v2.ray import _plan, _run_job

    outdir.mkdir(parents=True, exist_ok=True)
    pairs = _plan([str(s) for s in srcs], str(outdir), None, ".arrow")
    t0 = time.perf_counter()
    job = _run_job(pairs, ["--threads", "1", "--quiet", *args], address=None,
                   num_workers=workers, command=command, progress=None)
    dt = time.perf_counter() - t0
    if not job.ok:
        raise SystemExit(f"ray job failed: {job.failures}")
    if key and (key not in PHASES or job.phases.get("written", 1e9) <
                PHASES[key].get("written", 1e9)):
        PHASES[key] = dict(job.phases)
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--split-mib", type=int, default=128,
                    help="size of the one checkpoint split over the workers (0: not measured)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--command", default=str(ROOT / "build" / "src" / "cli" / "arrowquant"))
    ap.add_argument("--args", default="", help="more options of the command (quoted)")
    a = ap.parse_args()
    import logging
    import warnings

    import ray

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    args = shlex.split(a.args)
    with tempfile.TemporaryDirectory(prefix="aq-ray-bench-") as tmp:
        tmpd = pathlib.Path(tmp)
        srcs = make_checkpoints(tmpd, a.checkpoints, a.mib)
        size = sum(s.stat().st_size for s in srcs) / (1 << 20)
        big: list[pathlib.Path] = []
        if a.split_mib > 0:
            (tmpd / "big").mkdir()
            big = make_checkpoints(tmpd / "big", 1, a.split_mib)
        big_size = sum(s.stat().st_size for s in big) / (1 << 20)
        print(f"{a.checkpoints} checkpoints, {size:.1f} MiB of float32 in all; command "
              f"{a.command} {' '.join(args)}; {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}")
        best = {k: float("inf") for k in ("plain", "ray1", "ray2", "split_plain", "split_ray1",
                                          "split_ray2")}
        startup = {}
        for workers in (1, 2):
            key = f"ray{workers}"
            t0 = time.perf_counter()
            # Workers at the driver's niceness, as the cluster --ray local starts (Ray's
            # default, 15, would weigh the comparison against the job on a busy machine).
            ray.init(address="local", num_cpus=workers, object_store_memory=128 << 20,
                     include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     _system_config={"worker_niceness": os.nice(0)})
            # The first job also starts the worker processes: not timed.
            run_ray(srcs[:1], tmpd / "warm", args, a.command, workers)
            startup[key] = time.perf_counter() - t0
            for r in range(a.reps):
                best["plain"] = min(best["plain"],
                                    run_plain(a.command, srcs, tmpd / "plain", args))
                best[key] = min(best[key], run_ray(srcs, tmpd / key, args, a.command, workers,
                                                   key))
                if big:
                    best["split_plain"] = min(best["split_plain"], run_plain(
                        a.command, big, tmpd / "split_plain", args))
                    best["split_" + key] = min(best["split_" + key], run_ray(
                        big, tmpd / ("split_" + key), args, a.command, workers,
                        "split_" + key))
            ray.shutdown()
            for s in srcs:
                ref = digest(tmpd / "plain" / (s.stem + ".arrow"))
                if digest(tmpd / key / (s.stem + ".arrow")) != ref:
                    raise SystemExit(f"{key}: {s.stem}.arrow differs from the command's")
            for s in big:
                ref = digest(tmpd / "split_plain" / (s.stem + ".arrow"))
                if digest(tmpd / ("split_" + key) / (s.stem + ".arrow")) != ref:
                    raise SystemExit(f"split {key}: {s.stem}.arrow differs from the command's")
        print(f"load after: {os.getloadavg()[0]:.2f}")
        print("| run | best of %d (s) | MiB/s | vs plain |" % a.reps)
        print("|---|---|---|---|")
        for k in ("plain", "ray1", "ray2"):
            print(f"| {k} | {best[k]:.3f} | {size / best[k]:.1f} | "
                  f"{best[k] / best['plain']:.3f} |")
        if big:
            print(f"\none checkpoint of {big_size:.1f} MiB split into ranges of tensors:\n")
            print("| run | best of %d (s) | MiB/s | vs plain |" % a.reps)
            print("|---|---|---|---|")
            for k in ("split_plain", "split_ray1", "split_ray2"):
                print(f"| {k} | {best[k]:.3f} | {big_size / best[k]:.1f} | "
                      f"{best[k] / best['split_plain']:.3f} |")
            print(f"one checkpoint on two workers: plain / split_ray2 = "
                  f"{best['split_plain'] / best['split_ray2']:.2f}x")
        over = best["ray1"] / best["plain"]
        print(f"Ray overhead on one worker: ray1 / plain = {over:.3f} (target <= 1.15: "
              f"{'met' if over <= 1.15 else 'missed'})")
        print(f"two workers: plain / ray2 = {best['plain'] / best['ray2']:.2f}x, "
              f"ray1 / ray2 = {best['ray1'] / best['ray2']:.2f}x")
        print("phases of the fastest run (s from the job's start: plans in, ranges done, files "
              "written): " + "; ".join(
                  f"{k} " + ", ".join(f"{p} {v:.2f}" for p, v in ph.items())
                  for k, ph in PHASES.items()))
        print("cluster start-up and first task (not in the times above): " +
              ", ".join(f"{k} {v:.1f} s" for k, v in startup.items()))
        print("every output byte-identical to the command's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
