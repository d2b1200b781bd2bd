"""The Ray path's overhead on one worker: the same checkpoints through the plain command and
through a one-CPU local Ray cluster, for several configurations in one run (docs/ray.md).

    .venv/bin/python bench/ray_overhead.py [--checkpoints 4] [--mib 128] [--reps 3]
        [--command build/src/cli/arrowquant] [--args "..."] [--before OLD_RAY_PY]

Two local clusters of one CPU in turn: one started with Ray's defaults (its workers at
niceness 15, below the plain command's), then one whose workers run at the driver's niceness, as
the cluster ``--ray local`` starts. On each (started, warmed by one job, then timed), each
repetition runs, one after the other so that all see the same load:
- plain: ``arrowquant quantize SRC -o OUT --threads 1 ARGS`` for each checkpoint in turn;
- after: the job through ``arrow_quant_v2.ray`` as installed (``--threads 1 ARGS``);
- before, with ``--before FILE`` (an earlier ``arrow_quant_v2/ray.py``, e.g. from
  ``git show REV:python/arrow_quant_v2/ray.py``): the same job through it.
Every output is checked byte for byte against the plain command's. Prints the best and the
median time of each and the ratios job / plain (target <= 1.15), and the CPU time each used
(the plain commands'; the job's: the cluster's processes, the commands they ran and the
driver), which the machine's load does not change as it changes wall times.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import resource
import shlex
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ray_scaleout import ROOT, digest, make_checkpoints, run_plain  # noqa: E402


def load(path: str | None):
    """The module at path (an earlier ray.py), or the installed arrow_quant_v2.ray."""
    if path is None:
        import arrow_quant_v2.ray as mod
        return mod
    import ray.cloudpickle

    spec = importlib.util.spec_from_file_location("aq_ray_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["aq_ray_before"] = mod
    spec.loader.exec_module(mod)
    ray.cloudpickle.register_pickle_by_value(mod)  # its tasks go to the workers by value
    return mod


def descendants_cpu() -> float:
    """CPU seconds (user + system) of this process's descendants (the local cluster: its
    raylet, workers and the commands they run, reaped ones included through their parents'
    children times) and of this process itself."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        stats[int(pid)] = (int(f[1]), sum(int(x) for x in f[11:15]) / tick)
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(kids.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += kids.get(pid, [])
    return total + time.process_time()


def job(mod, srcs, outdir: pathlib.Path, args: list[str], command: str) -> tuple[float, float]:
    """(wall, CPU) seconds of the job."""
    outdir.mkdir(parents=True, exist_ok=True)
    pairs = mod._plan([str(s) for s in srcs], str(outdir), None, ".arrow")
    c0 = descendants_cpu()
    t0 = time.perf_counter()
    res = mod._run_job(pairs, ["--threads", "1", "--quiet", *args], address=None,
                       num_workers=1, command=command, progress=None)
    dt = time.perf_counter() - t0
    if not res.ok:
        raise SystemExit(f"ray job failed: {res.failures}")
    return dt, descendants_cpu() - c0


def plain(command: str, srcs, outdir: pathlib.Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of the plain command over every checkpoint."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    dt = run_plain(command, srcs, outdir, args)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return dt, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--command", default=str(ROOT / "build" / "src" / "cli" / "arrowquant"))
    ap.add_argument("--args", default="", help="more options of the command (quoted)")
    ap.add_argument("--before", help="an earlier arrow_quant_v2/ray.py to measure too")
    a = ap.parse_args()
    import logging
    import warnings

    import ray

    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    args = shlex.split(a.args)
    mods = {"after": load(None)}
    if a.before:
        mods = {"before": load(a.before), **mods}
    times: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="aq-ray-overhead-") as tmp:
        tmpd = pathlib.Path(tmp)
        srcs = make_checkpoints(tmpd, a.checkpoints, a.mib)
        size = sum(s.stat().st_size for s in srcs) / (1 << 20)
        print(f"{a.checkpoints} checkpoints, {size:.1f} MiB of float32 in all; command "
              f"{a.command} --threads 1 {' '.join(args)}; {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.2f}; driver and plain command at niceness {os.nice(0)}")
        for own in (False, True):
            kw = {"num_cpus": 1, "object_store_memory": 128 << 20, "include_dashboard": False,
                  "log_to_driver": False, "logging_level": "ERROR"}
            if own:  # as the cluster --ray local starts
                kw["_system_config"] = {"worker_niceness": os.nice(0)}
            ray.init(address="local", **kw)  # a new cluster, even where one runs here

            @ray.remote
            def niceness() -> int:
                return os.nice(0)

            cluster = f"workers at niceness {ray.get(niceness.remote())}"
            for name, mod in mods.items():
                job(mod, srcs[:1], tmpd / f"warm-{name}", args, a.command)
            for _ in range(a.reps):
                wall, cpu = plain(a.command, srcs, tmpd / "plain", args)
                times.setdefault((cluster, "plain"), []).append(wall)
                cpus.setdefault((cluster, "plain"), []).append(cpu)
                for name, mod in mods.items():
                    out = tmpd / f"{name}-{own}"
                    wall, cpu = job(mod, srcs, out, args, a.command)
                    times.setdefault((cluster, name), []).append(wall)
                    cpus.setdefault((cluster, name), []).append(cpu)
                    for s in srcs:
                        if digest(out / (s.stem + ".arrow")) != \
                                digest(tmpd / "plain" / (s.stem + ".arrow")):
                            raise SystemExit(f"{name}: {s.stem}.arrow differs from the "
                                             "command's")
            ray.shutdown()
        print(f"load after: {os.getloadavg()[0]:.2f}")
        print(f"| cluster | run | best of {a.reps} (s) | median (s) | best / plain's best | "
              "median / plain's median | CPU, median (s) | CPU / plain's |")
        print("|---|---|---|---|---|---|---|---|")
        for (cluster, name), ts in times.items():
            p = times[(cluster, "plain")]
            c, pc = statistics.median(cpus[(cluster, name)]), statistics.median(
                cpus[(cluster, "plain")])
            print(f"| {cluster} | {name} | {min(ts):.3f} | {statistics.median(ts):.3f} | "
                  f"{min(ts) / min(p):.3f} | {statistics.median(ts) / statistics.median(p):.3f} "
                  f"| {c:.3f} | {c / pc:.3f} |")
        print("every output byte-identical to the command's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
