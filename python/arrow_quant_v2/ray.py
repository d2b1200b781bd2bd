"""Quantizing many checkpoints on a Ray cluster (docs/ray.md).

    from arrow_quant_v2.ray import quantize_checkpoints
    job = quantize_checkpoints(["a.safetensors", "sd15/", "b.safetensors.index.json"], "out/",
                               address="auto", profile="local")
    job.failures        # the checkpoints that failed, each with the command's error line

Each checkpoint is one row of a Ray Dataset (its source path and output path: no weights pass
through the driver). ``map_batches`` runs the ``arrowquant quantize`` command on that row on a
worker, so the worker reads the checkpoint from its own disk and writes the model file there,
with exactly the bytes the command writes on one machine: the row is the command's run. A
worker that dies is retried by Ray; the command writes under a temporary name and renames into
place only when complete, and removes the temporaries of killed runs, so a retried checkpoint
ends complete and correct and nothing partial ever has the final name.

Settings are the command's options, as keywords: ``bits=4`` is ``--bits 4``,
``min_accuracy=0.99`` is ``--min-accuracy 0.99``, ``keep=["*norm*", "*.bias"]`` is two
``--keep``, ``bits_for={"*attn*": 8}`` is ``--bits-for *attn*=8``, ``type="Q4_K"`` writes GGUF
files (``.gguf``). True gives the bare flag; None and False leave an option out.

``python -m arrow_quant_v2.ray`` is what ``arrowquant quantize ... --ray ADDRESS`` runs: the same
arguments as the command, with the same progress display and summaries.

Ray is an optional dependency: ``pip install 'ray[data]'``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import ray
    import ray.data
except ImportError:  # pragma: no cover - exercised by a test in a subprocess
    raise ImportError("arrow_quant_v2.ray needs Ray Data: pip install 'ray[data]'") from None

__all__ = ["CheckpointResult", "JobResult", "quantize_checkpoints", "settings_to_args", "main"]

# Options of the command that take no value; every other option takes exactly one.
_FLAGS = frozenset({"--json", "--quiet", "-q"})
# Ray Data settings while a job runs (see _run_job).
_QUIET = {"enable_progress_bars": False, "print_on_execution_start": False,
          "verbose_stats_logs": False}
# Options the job sets itself for each checkpoint.
_OWN = frozenset({"-o", "--ray", "--command"})


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint of a job: ok, or the command's error (the tensor and what was wrong)."""

    source: str
    output: str
    ok: bool
    error: str | None = None
    summary: Mapping[str, Any] | None = None  # the command's --json summary (Python API)
    text: str = ""  # what the command printed on stdout
    seconds: float = 0.0


@dataclass(frozen=True)
class JobResult:
    """The checkpoints of a job, in the order given."""

    checkpoints: tuple[CheckpointResult, ...]
    seconds: float
    workers: int
    address: str = ""
    failures: tuple[CheckpointResult, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "failures", tuple(c for c in self.checkpoints if not c.ok))

    @property
    def ok(self) -> bool:
        return not self.failures


def settings_to_args(settings: Mapping[str, Any]) -> list[str]:
    """The command's options for keyword settings (see the module's docstring)."""
    args: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if flag in _OWN or flag in ("--o", "--output", "--json"):
            raise TypeError(f"quantize_checkpoints: '{key}' is set by the job itself")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                args += [flag, f"{k}={v}"]
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return args


def _find_command(command: str | None = None) -> str:
    """The arrowquant command: the one given, else the one installed beside this interpreter
    (pip install puts it in the environment's bin/), else the first on PATH."""
    if command:
        return os.path.abspath(command) if os.sep in command else command
    beside = os.path.join(os.path.dirname(sys.executable), "arrowquant")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("arrowquant")
    if found is None:
        raise FileNotFoundError("the arrowquant command was not found beside "
                                f"{sys.executable} nor on PATH: pip install arrow_quant_v2")
    return found


def _output_name(source: str, ext: str) -> str:
    """The model file's name for a source: its file name without .safetensors (and
    .safetensors.index.json), or the folder's name."""
    base = os.path.basename(os.path.normpath(source))
    for suffix in (".safetensors.index.json", ".safetensors"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return base + ext


def _plan(sources: Sequence[str], output_dir: str | None, output: str | None,
          ext: str) -> list[tuple[str, str]]:
    """(source, output) pairs; two sources that would write the same file are an error."""
    # Workers may run elsewhere, in another folder: they get absolute paths (the same paths
    # must hold on every node).
    sources = [os.path.abspath(x) for x in sources]
    if output is not None:
        return [(sources[0], os.path.abspath(output))]
    assert output_dir is not None
    pairs, seen = [], {}
    for s in sources:
        out = os.path.abspath(os.path.join(output_dir, _output_name(s, ext)))
        if out in seen:
            raise ValueError(f"'{s}' and '{seen[out]}' would both write {out}: give them "
                             "different names")
        seen[out] = s
        pairs.append((s, out))
    return pairs


def _die_with_parent() -> None:
    """In the command's process: die when the worker that started it dies, so that a killed
    worker leaves no run behind to race its retry."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the orphan finishes, atomically, harmlessly
        pass


def _writer_gone(pid: int) -> bool:
    """The rule the command applies to its temporaries: the writer does not exist, or it is a
    zombie not yet reaped (a run killed with its worker, until the raylet collects it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _remove_stale_temporaries(output: str) -> None:
    """After a run on this node: the temporaries of `output` ("OUT.tmp-PID-XXXXXX") whose
    writer is gone. The command removes them when it starts; a run killed with its worker may
    still have been dying then."""
    folder, base = os.path.split(output)
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for name in names:
        pid, sep, rest = name.removeprefix(base + ".tmp-").partition("-")
        if (name.startswith(base + ".tmp-") and sep and pid.isdigit() and len(rest) == 6
                and int(pid) != os.getpid() and _writer_gone(int(pid))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _run_one(command: str, source: str, output: str, args: Sequence[str]) -> dict[str, Any]:
    """One checkpoint: the command's run on this worker."""
    t0 = time.monotonic()
    argv = [command, "quantize", source, "-o", output, *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_die_with_parent,
                              check=False)
    except OSError as e:
        return {"ok": False, "error": f"{command}: {e.strerror}", "text": "",
                "seconds": time.monotonic() - t0}
    _remove_stale_temporaries(output)
    errors = [ln.removeprefix("arrowquant: error: ")
              for ln in proc.stderr.splitlines() if ln.startswith("arrowquant: ")]
    error = None
    if proc.returncode != 0:
        error = "; ".join(errors) or f"the command exited with status {proc.returncode}"
    return {"ok": proc.returncode == 0, "error": error, "text": proc.stdout,
            "seconds": time.monotonic() - t0}


def _quantize_batch(batch: dict[str, Any], command: str, args: Sequence[str]) -> dict[str, Any]:
    """The map_batches function, on a worker: each row (source, output) through the command.
    Errors of a checkpoint become its row's error; only a dead worker makes Ray retry the task.
    The command the driver named is used where it exists on this node, else this node's own."""
    if not os.access(command, os.X_OK):
        command = _find_command(None)
    out: dict[str, list[Any]] = {k: [] for k in ("index", "ok", "error", "text", "seconds",
                                                 "pid", "node")}
    node = ray.get_runtime_context().get_node_id()
    for i, src, dst in zip(batch["index"], batch["source"], batch["output"]):
        r = _run_one(command, str(src), str(dst), args)
        out["index"].append(int(i))
        out["ok"].append(r["ok"])
        out["error"].append(r["error"] or "")
        out["text"].append(r["text"])
        out["seconds"].append(r["seconds"])
        out["pid"].append(os.getpid())
        out["node"].append(node)
    return out


def _connect(address: str | None, num_workers: int | None) -> None:
    """Joins the cluster at address ("auto": the one this machine belongs to; None or "local":
    a new one on this machine with num_workers CPUs)."""
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                          "logging_level": "ERROR", "configure_logging": True}
    if address in (None, "", "local"):
        kw["num_cpus"] = num_workers or os.cpu_count() or 1
        # The objects of a job are rows of two paths: a small store will do.
        kw["object_store_memory"] = 128 << 20
        ray.init(**kw)
    else:
        _reachable(address)
        ray.init(address=address, **kw)


def _reachable(address: str) -> None:
    """A cluster given as HOST:PORT (or ray://HOST:PORT) must answer, or the job fails with
    one line now (ray.init would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: "
                              f"{e.strerror or e}") from None


def _bytes_of(path: str) -> int:
    """Source bytes of a checkpoint (for progress): its files' sizes (a sharded index's
    shards)."""
    try:
        if os.path.isdir(path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path)
                       for f in fs if f.endswith(".safetensors"))
        if path.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                shards = set(json.load(f).get("weight_map", {}).values())
            base = os.path.dirname(path)
            return sum(os.path.getsize(os.path.join(base, s)) for s in shards)
        return os.path.getsize(path)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0  # the worker's run reports what is wrong with it


def _execute(pairs: list[tuple[str, str]], cmd: str, args: list[str],
             num_workers: int | None,
             progress: Callable[[Mapping[str, Any]], Any] | None
             ) -> tuple[dict[int, CheckpointResult], int]:
    """The dataset of checkpoint rows, run through map_batches and consumed as a stream."""
    workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    items = [{"index": i, "source": s, "output": o} for i, (s, o) in enumerate(pairs)]
    sizes = [_bytes_of(s) for s, _ in pairs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(_quantize_batch, fn_kwargs={"command": cmd, "args": list(args)},
                        batch_size=1, num_cpus=1,
                        compute=ray.data.TaskPoolStrategy(size=max(1, min(workers, len(items)))))
    results: dict[int, CheckpointResult] = {}
    done_bytes, total = 0, sum(sizes)
    for row in ds.iter_rows():
        i = int(row["index"])
        src, dst = pairs[i]
        summary = None
        if row["ok"] and "--json" in args and row["text"].strip():
            try:
                summary = json.loads(row["text"])
            except ValueError:
                summary = None
        results[i] = CheckpointResult(src, dst, bool(row["ok"]), row["error"] or None, summary,
                                      row["text"], float(row["seconds"]))
        done_bytes += sizes[i]
        if progress is not None:
            progress({"checkpoints_done": len(results), "checkpoints_total": len(pairs),
                      "bytes_done": done_bytes, "bytes_total": total, "current": src,
                      "ok": bool(row["ok"])})
    return results, workers


def _run_job(pairs: list[tuple[str, str]], args: list[str], *, address: str | None,
             num_workers: int | None, command: str | None,
             progress: Callable[[Mapping[str, Any]], Any] | None) -> JobResult:
    cmd = _find_command(command)
    t0 = time.monotonic()
    _connect(address, num_workers)
    # Ray Data's own progress bars and execution logs are off while the job runs: progress is
    # reported per checkpoint (the caller's own datasets keep their settings).
    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _QUIET}
    for k, v in _QUIET.items():
        setattr(ctx, k, v)
    try:
        results, workers = _execute(pairs, cmd, args, num_workers, progress)
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
    missing = [pairs[i][0] for i in range(len(pairs)) if i not in results]
    if missing:
        raise RuntimeError(f"the Ray job returned no result for {', '.join(missing)}")
    return JobResult(tuple(results[i] for i in range(len(pairs))), time.monotonic() - t0,
                     workers, address or "local")


def quantize_checkpoints(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                         output_dir: str | os.PathLike[str], *, address: str | None = None,
                         num_workers: int | None = None, command: str | None = None,
                         progress_callback: Callable[[Mapping[str, Any]], Any] | None = None,
                         **settings: Any) -> JobResult:
    """Quantizes checkpoints on a Ray cluster, one model file each in output_dir.

    sources: a checkpoint (a .safetensors file, a *.safetensors.index.json, a diffusers or
    model folder) or a list of them, as paths every worker can read. output_dir: where each
    checkpoint's file goes, named after its source (``unet.safetensors`` -> ``unet.arrow``,
    ``sd15/`` -> ``sd15.arrow``; ``.gguf`` with ``type=``); created if missing.
    address: the cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
    a local one with num_workers CPUs (default: one per CPU). num_workers: checkpoints
    quantized at once (default: the cluster's CPUs). command: the arrowquant command the
    workers run (default: the one installed beside the worker's Python, else on PATH).
    progress_callback: called on this thread as each checkpoint finishes, with a mapping
    (checkpoints_done, checkpoints_total, bytes_done, bytes_total, current, ok).
    settings: the command's options as keywords (the module's docstring); each checkpoint's
    file has the bytes ``arrowquant quantize SOURCE -o FILE`` with those options writes.

    A checkpoint that fails (a bad tensor, an unreadable file) is reported in the result's
    ``failures`` with the command's error line, and the others finish; nothing is written
    under its name. Returns a JobResult.
    """
    if isinstance(sources, (str, os.PathLike)):
        srcs = [os.fspath(sources)]
    else:
        srcs = [os.fspath(s) for s in sources]
    if not srcs:
        raise ValueError("quantize_checkpoints: no sources")
    outdir = os.fspath(output_dir)
    os.makedirs(outdir, exist_ok=True)
    args = settings_to_args(settings) + ["--json"]
    ext = ".gguf" if settings.get("type") else ".arrow"
    return _run_job(_plan(srcs, outdir, None, ext), args, address=address,
                    num_workers=num_workers, command=command, progress=progress_callback)


# ---- the command's --ray path: python -m arrow_quant_v2.ray ----


def _split(argv: Sequence[str]) -> tuple[list[str], str | None, str | None, str | None,
                                         list[str]]:
    """The command's quantize arguments: sources, -o, --ray, --command, and the rest (passed
    to every run as they are)."""
    sources, rest = [], []
    out = address = command = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _OWN or (a.startswith("-") and len(a) > 1 and a not in _FLAGS):
            if i + 1 >= len(argv):
                raise SystemExit(_fail(f"{a} needs a value"))
            v = argv[i + 1]
            if a == "-o":
                out = v
            elif a == "--ray":
                address = v
            elif a == "--command":
                command = v
            else:
                rest += [a, v]
            i += 2
            continue
        if a.startswith("-") and len(a) > 1:
            rest.append(a)
        else:
            sources.append(a)
        i += 1
    return sources, out, address, command, rest


def _fail(msg: str) -> int:
    print(f"arrowquant: error: {msg}", file=sys.stderr)
    return 1


class _Progress:
    """The command's progress display, counted in checkpoints: a bar on a terminal, a line per
    tenth of the work otherwise, nothing with --quiet or --json."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last_decile = -1

    def __call__(self, p: Mapping[str, Any]) -> None:
        if self.quiet:
            return
        el = time.monotonic() - self.t0
        frac = p["bytes_done"] / p["bytes_total"] if p["bytes_total"] > 0 else 1.0
        rate = p["bytes_done"] / el if el > 0 else 0.0
        left = (p["bytes_total"] - p["bytes_done"]) / rate if rate > 0 else 0.0
        n, total = p["checkpoints_done"], p["checkpoints_total"]
        if self.tty:
            fill = int(frac * 30)
            bar = "#" * fill + "." * (30 - fill)
            print(f"\r[{bar}] {n}/{total} checkpoints  {_size(p['bytes_done'])}/"
                  f"{_size(p['bytes_total'])}  {_size(rate)}/s  {left:.0f}s left  ",
                  end="\n" if n == total else "", file=sys.stderr, flush=True)
            return
        decile = int(frac * 10)
        if decile > self.last_decile or n == total:
            self.last_decile = decile
            print(f"progress: {n}/{total} checkpoints, {_size(p['bytes_done'])} of "
                  f"{_size(p['bytes_total'])}, {_size(rate)}/s, {el:.1f}s elapsed",
                  file=sys.stderr, flush=True)


def _size(b: float) -> str:
    """b bytes with a binary unit, as the command prints them."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while b >= 1024.0 and i < 4:
        b /= 1024.0
        i += 1
    return f"{b:.0f} {units[i]}" if i == 0 else f"{b:.1f} {units[i]}"


def main(argv: Sequence[str] | None = None) -> int:
    """arrowquant quantize SRC... -o OUT --ray ADDRESS|local [options]: the command's run of
    each checkpoint on the cluster's workers. One SRC: -o is the file, as without --ray.
    Several: -o is a folder (created if missing) and each file is named after its source."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The command's stderr holds progress and error lines only: Ray's own warnings are not ours
    # to show.
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    sources, out, address, command, rest = _split(argv)
    if not sources or out is None:
        return _fail("quantize needs SRC and -o OUT (a folder when there are several SRC)")
    gguf = "--type" in rest or out.endswith(".gguf")
    ext = ".gguf" if gguf else ".arrow"
    as_dir = len(sources) > 1 or os.path.isdir(out) or out.endswith(os.sep)
    json_out = "--json" in rest
    quiet = "--quiet" in rest or "-q" in rest
    try:
        if as_dir:
            os.makedirs(out, exist_ok=True)
        pairs = _plan(sources, out if as_dir else None, None if as_dir else out, ext)
        job = _run_job(pairs, rest, address=address, num_workers=None, command=command,
                       progress=_Progress(quiet or json_out))
    except KeyboardInterrupt:
        print("arrowquant: interrupted; no output written", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    except Exception as e:  # Ray's own errors (a cluster that cannot be reached, ...)
        return _fail(f"ray: {type(e).__name__}: {e}")
    if json_out:
        doc = {"address": job.address, "workers": job.workers, "seconds": job.seconds,
               "checkpoints": [{"source": c.source, "output": c.output, "ok": c.ok,
                                "error": c.error, "seconds": c.seconds,
                                "summary": _json_or_none(c.text)} for c in job.checkpoints],
               "failed": len(job.failures)}
        print(json.dumps(doc, indent=2))
    else:
        for c in job.checkpoints:
            if len(job.checkpoints) > 1 and not quiet:
                print(f"== {c.source} -> {c.output}")
            if c.ok:
                sys.stdout.write(c.text)
            elif not quiet:
                print(f"  failed: {c.error}")
        if not quiet:
            print(f"ray job  {len(job.checkpoints) - len(job.failures)}/{len(job.checkpoints)} "
                  f"checkpoints written, {len(job.failures)} failed, {job.workers} workers "
                  f"({job.address}), {job.seconds:.2f} s")
    for c in job.failures:
        print(f"arrowquant: error: {c.source}: {c.error}", file=sys.stderr)
    return 0 if job.ok else 1


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
