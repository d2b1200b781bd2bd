"""Quantizing many checkpoints on a Ray cluster (docs/ray.md).

    from arrow_quant_v2.ray import quantize_checkpoints
    job = quantize_checkpoints(["a.safetensors", "sd15/", "b.safetensors.index.json"], "out/",
                               address="auto", profile="local")
    job.failures        # the checkpoints that failed, each with the command's error line

A job has three steps, each on the workers (docs/ray.md); no weights pass through the driver:

1. plan: a worker runs ``arrowquant quantize SRC -o OUT --plan-out`` with the job's options,
   so every rule, floor and budget is the command's. A checkpoint is cut into ranges of
   tensors only where spreading it over workers shortens the job (fewer checkpoints than
   workers, or one larger than a worker's share): such a checkpoint is planned first by a
   task, whose plan (what each tensor becomes; no weights) the driver cuts. A whole checkpoint
   is planned by its own unit of step 2.
2. execute: one Ray Dataset of units of work, quantized by ``map_batches`` on the workers. A
   whole checkpoint's unit plans it, then runs ``arrowquant quantize SRC -o OUT --plan-in
   PLAN`` on its worker, which follows the plan and writes the file in one process (its row
   brings back the plan and the command's summary, no weights). A range's unit
   (``range_bytes`` of source each, at least one per worker) reads the mapped checkpoint
   lazily (``_model_execute``: the library's aq_model_execute) into the model file's rows. A
   bad tensor is reported by name, every one of them.
3. write: once a cut checkpoint's ranges are done, a task on a worker has the command
   assemble its model file from the plan and the rows in order (``--plan-in PLAN --rows-in
   ROWS``: aq_model_writer), under a temporary name renamed into place: the same bytes
   ``arrowquant quantize`` writes on one machine. The command that writes a file prints its
   own summary of it, the plain command's, with the job's time.

A worker that dies is retried by Ray (a unit of the dataset by Ray Data, a write task by its
retries); nothing partial ever has the final name, and the temporaries of killed writers are
removed. GGUF output (``type=``) takes the same steps (a GGUF plan; each tensor's GGUF blocks
as rows; the GGUF file written by ``--plan-in PLAN --rows-in ROWS``). A calibration
(``calibration=``) is read on the driver and its table put in the object store once; the
workers that execute ranges get it from there.

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
import re
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
          "verbose_stats_logs": False,
          # Ray Data otherwise reserves half the cluster for operators that have no tasks here
          # (the input), and a two-CPU cluster then runs one task at a time.
          "op_resource_reservation_enabled": False}
# Options the job sets itself for each checkpoint.
_OWN = frozenset({"-o", "--ray", "--command"})


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint of a job: ok, or the command's error (the tensor and what was wrong)."""

    source: str
    output: str
    ok: bool
    error: str | None = None
    summary: Mapping[str, Any] | None = None  # the command's --json summary of the file
    text: str = ""  # what the command printed on stdout: its summary of the file
    seconds: float = 0.0
    # Layer rows: (tensor, error) of each tensor that failed; the tasks (Ray task ids) that
    # quantized its tensors (its ranges, or its one run), and their worker processes.
    tensor_failures: tuple[tuple[str, str], ...] = ()
    tasks: tuple[str, ...] = ()
    workers: tuple[int, ...] = ()
    # Layer rows: the checkpoint's tensors and their source bytes, from its plan.
    tensors: int = 0
    source_bytes: int = 0


@dataclass(frozen=True)
class JobResult:
    """The checkpoints of a job, in the order given."""

    checkpoints: tuple[CheckpointResult, ...]
    seconds: float
    workers: int
    address: str = ""
    # Layer rows: seconds until every plan was in, until every range was quantized, and until
    # every file was written (from the job's start on the cluster).
    phases: Mapping[str, float] = field(default_factory=dict)
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


def _connect(address: str | None, num_workers: int | None) -> None:
    """Joins the cluster at address ("auto": the one this machine belongs to; None or "local":
    a new one on this machine with num_workers CPUs)."""
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False,
                          "logging_level": "ERROR", "configure_logging": True}
    if address in (None, "", "local"):
        kw["num_cpus"] = num_workers or os.cpu_count() or 1
        # Rows of paths and plans, and the quantized rows of the checkpoints in flight (Ray
        # spills to disk beyond it).
        kw["object_store_memory"] = 128 << 20
        # Ray runs its workers at niceness 15 by default (its daemons keep priority): on a
        # machine with other work, the job's quantizing would get a fraction of the CPU the
        # plain command gets. The workers of a cluster started for the job run at the
        # priority of whoever started it, as the command does.
        kw["_system_config"] = {"worker_niceness": os.nice(0)}
        # "local": a new cluster even where RAY_ADDRESS names a running one.
        ray.init(address="local", **kw)
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


# ---- layer rows: plan, execute, write ----

# Source bytes of one range of tensors by default: large enough that a task's fixed cost (about
# 50 ms) is small against it, small enough that the rows of a range stay well inside one block.
RANGE_BYTES = 64 << 20


def _command_error(command: str, proc: subprocess.CompletedProcess) -> str:
    """The command's error lines (without their prefix), or its exit status."""
    err = "; ".join(ln.removeprefix("arrowquant: error: ")
                    for ln in proc.stderr.splitlines() if ln.startswith("arrowquant: error: "))
    return err or f"{command} exited with status {proc.returncode}"


def _run_command(command: str, argv: Sequence[str]) -> subprocess.CompletedProcess | str:
    """The command run on this worker, tied to it (it dies with the worker), or the reason it
    could not start."""
    try:
        return subprocess.run([command, *argv], capture_output=True, text=True, check=False,
                              preexec_fn=_die_with_parent)
    except OSError as e:
        return f"{command}: {e.strerror or e}"


def _make_plan(command: str, source: str, output: str, args: Sequence[str],
               plan_path: str) -> tuple[bool, str, bytes]:
    """On a worker: the checkpoint planned by the command (--plan-out plan_path), which reads
    every option as it always does. (ok, error line, the serialised plan)."""
    proc = _run_command(command, ["quantize", source, "-o", output, "--plan-out", plan_path,
                                  *[a for a in args if a not in ("--json", "--quiet", "-q")],
                                  "--quiet"])
    if isinstance(proc, str):
        return False, proc, b""
    if proc.returncode != 0:
        return False, _command_error(command, proc), b""
    with open(plan_path, "rb") as f:
        return True, "", f.read()


@ray.remote(num_cpus=1, max_retries=-1)
def _plan_checkpoint(source: str, output: str, command: str,
                     args: Sequence[str]) -> tuple[bool, str, bytes]:
    """A task on a worker: a checkpoint to be cut into ranges, planned (_make_plan)."""
    import tempfile

    if not os.access(command, os.X_OK):
        command = _find_command(None)
    with tempfile.TemporaryDirectory(prefix="aq-plan-") as tmp:
        return _make_plan(command, source, output, args, os.path.join(tmp, "plan"))


def _tensor_failures(source: str, plan: bytes, begin: int, end: int,
                     calibration: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Tensors [begin, end) of the plan executed one by one on this worker: (name, error) of
    each that fails. calibration: _model_execute's calibration and combine, if any."""
    from arrow_quant_v2.arrow_quant_v2 import _model_execute, _model_plan_tensors

    names = [t[0] for t in _model_plan_tensors(plan)]
    failures = []
    for i in range(begin, end):
        try:
            _model_execute(source, plan, i, i + 1, **(calibration or {}))
        except Exception as ex:  # noqa: BLE001 - every failure is reported, by tensor
            failures.append((names[i], str(ex)))
    return failures


def _follow_plan(command: str, source: str, output: str, plan: bytes, args: Sequence[str],
                 rows: Sequence[str] = ()) -> dict[str, Any]:
    """On a worker: the command writes the checkpoint's file following its plan (--plan-in),
    executing its tensors, or from the rows made elsewhere (--rows-in), and prints its own
    summary, as the plain command does. {ok, text, error, failures}."""
    import tempfile

    if not os.access(command, os.X_OK):
        command = _find_command(None)
    with tempfile.TemporaryDirectory(prefix="aq-plan-") as tmp:
        plan_path = os.path.join(tmp, "plan")
        with open(plan_path, "wb") as f:
            f.write(plan)
        argv = ["quantize", source, "-o", output, "--plan-in", plan_path]
        for r in rows:
            argv += ["--rows-in", r]
        proc = _run_command(command, [*argv, *args])
    _remove_stale_temporaries(output)
    if isinstance(proc, str):
        return {"ok": False, "text": "", "error": proc, "failures": [("", proc)]}
    if proc.returncode == 0:
        return {"ok": True, "text": proc.stdout, "error": None, "failures": []}
    return {"ok": False, "text": "", "error": _command_error(command, proc), "failures": []}


def _calibration_of(args: Sequence[str]) -> dict[str, Any] | None:
    """The job's calibration (--calibration TABLE, --calibration-combine HOW), read here on
    the driver and put in the object store once: every worker executing a range gets the
    table's bytes, not its path. None without one."""
    path = how = None
    for k in range(len(args) - 1):
        if args[k] == "--calibration":
            path = args[k + 1]
        elif args[k] == "--calibration-combine":
            how = args[k + 1]
    if path is None:
        return None
    with open(path, "rb") as f:
        return {"table": ray.put(f.read()), "combine": how or "max"}


class _calibration_file:
    """On a worker, for a `with`: the job's calibration table in a temporary file of this
    worker's, as _model_execute's keywords (calibration, combine); None without one."""

    def __init__(self, calibration: Mapping[str, Any] | None):
        self.calibration = calibration
        self.path: str | None = None

    def __enter__(self) -> dict[str, Any] | None:
        import tempfile

        if self.calibration is None:
            return None
        table = self.calibration["table"]
        data = ray.get(table) if isinstance(table, ray.ObjectRef) else table
        fd, self.path = tempfile.mkstemp(prefix="aq-calib-", suffix=".arrow")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return {"calibration": self.path, "combine": self.calibration["combine"]}

    def __exit__(self, *exc: Any) -> None:
        if self.path is not None:
            os.unlink(self.path)


def _run_whole(command: str, source: str, output: str, plan: bytes, args: Sequence[str],
               calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """On a worker: a checkpoint that is not cut into ranges, executed and written in one run
    of the command following its plan (no rows leave the process). A tensor that fails stops
    the command; the tensors after it are then run one by one here, so that every failing
    tensor is named, as ranges name them."""
    from arrow_quant_v2.arrow_quant_v2 import _model_plan_tensors

    r = _follow_plan(command, source, output, plan, args)
    if not r["ok"] and r["error"]:
        names = [t[0] for t in _model_plan_tensors(plan)]
        first = next((i for i, n in enumerate(names) if f"'{n}'" in r["error"]), None)
        if first is not None:
            with _calibration_file(calibration) as calib:
                r["failures"] = [(names[first], r["error"])] + _tensor_failures(
                    source, plan, first + 1, len(names), calib)
            r["error"] = "; ".join(e for _, e in r["failures"])
    return r


def _execute_batch(batch: dict[str, Any], command: str, args: Sequence[str],
                   calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """map_batches on a worker, for each unit of work: a whole checkpoint's unit plans it with
    the command (--plan-out), then runs the command following that plan, which quantizes and
    writes the file here (the row that comes back holds the plan and the command's summary, no
    weights); a range's unit quantizes its tensors from the
    checkpoint (read through this worker's own memory map) into the model file's rows, as an
    Arrow IPC stream. A range that fails is run again tensor by tensor, so every failing
    tensor is named. calibration: the job's calibration table (_calibration_file), which
    executing a range needs when the plan was made with one."""
    import tempfile

    import pyarrow as pa

    from arrow_quant_v2.arrow_quant_v2 import _model_execute, _model_plan_tensors

    class _Rows:
        def __init__(self, pair: tuple[Any, Any]):
            self.pair = pair

        def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]:
            return self.pair

    if not os.access(command, os.X_OK):
        command = _find_command(None)
    out: dict[str, list[Any]] = {k: [] for k in ("ckpt", "range", "begin", "end", "ok",
                                                 "failures", "rows", "pid", "task", "text",
                                                 "error", "planned", "plan")}
    task = ray.get_runtime_context().get_task_id() or ""
    for c, k, b, e, whole, src, dst, plan in zip(
            batch["ckpt"], batch["range"], batch["begin"], batch["end"], batch["whole"],
            batch["source"], batch["output"], batch["plan"]):
        b, e, src, plan = int(b), int(e), str(src), bytes(plan)
        failures: list[tuple[str, str]] = []
        rows, text, error, ok, planned_ok = b"", "", "", True, True
        if whole:
            with tempfile.TemporaryDirectory(prefix="aq-plan-") as tmp:
                planned_ok, error, plan = _make_plan(command, src, str(dst), args,
                                                     os.path.join(tmp, "plan"))
            if planned_ok:
                r = _run_whole(command, src, str(dst), plan, args, calibration)
                failures = [tuple(f) for f in r["failures"]]
                text, error, ok = r["text"], r["error"] or "", bool(r["ok"])
            else:  # planning failed: the command's error, no tensor to name
                ok = False
        else:
            with _calibration_file(calibration) as calib:
                try:
                    rb = pa.record_batch(_Rows(_model_execute(src, plan, b, e,
                                                              **(calib or {}))))
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, rb.schema) as w:
                        w.write_batch(rb)
                    rows = sink.getvalue().to_pybytes()
                except Exception:  # noqa: BLE001 - every failure is reported, by tensor
                    failures = _tensor_failures(src, plan, b, e, calib)
                    if not failures:  # it failed as a range only (memory): say so
                        names = [t[0] for t in _model_plan_tensors(plan)]
                        failures.append((names[b], f"tensors {b}..{e - 1} failed together"))
            ok = not failures
        out["ckpt"].append(int(c))
        out["range"].append(int(k))
        out["begin"].append(b)
        out["end"].append(e)
        out["ok"].append(ok)
        out["failures"].append(json.dumps(failures))
        out["rows"].append(rows)
        out["pid"].append(os.getpid())
        out["task"].append(task)
        out["text"].append(text)
        out["error"].append(error)
        out["planned"].append(planned_ok)
        out["plan"].append(plan if whole else b"")
    return out


@ray.remote(num_cpus=1, max_retries=-1)
def _write_checkpoint(plan: bytes, source: str, output: str, command: str, args: Sequence[str],
                      ckpt: int, *blocks: Any) -> dict[str, Any]:
    """A task on a worker: the model file of checkpoint `ckpt` from its plan and the rows of its
    ranges (the execute blocks, which may hold other checkpoints' ranges too), in order,
    written by the command (--plan-in, --rows-in), which prints its summary."""
    import tempfile

    import pyarrow as pa
    from ray.data.block import BlockAccessor

    ranges = []
    for block in blocks:
        tbl = BlockAccessor.for_block(block).to_arrow()
        small = tbl.drop_columns(["rows"]).to_pylist()  # the rows stay in Arrow buffers
        for j, row in enumerate(small):
            if int(row["ckpt"]) == ckpt:
                row["rows"] = tbl.column("rows")[j].as_buffer()
                ranges.append(row)
    ranges.sort(key=lambda r: int(r["range"]))
    failures = [tuple(f) for r in ranges for f in json.loads(r["failures"])]
    pids = sorted({int(r["pid"]) for r in ranges})
    tasks = sorted({str(r["task"]) for r in ranges})
    if failures:
        return {"ok": False, "failures": failures, "pids": pids, "tasks": tasks, "text": "",
                "error": "; ".join(e for _, e in failures)}
    # The ranges' rows as one stream in a file of this worker's, which the command maps.
    with tempfile.TemporaryDirectory(prefix="aq-rows-") as tmp:
        path = os.path.join(tmp, "rows.arrows")
        with pa.OSFile(path, "wb") as f:
            writer = None
            for r in ranges:
                reader = pa.ipc.open_stream(r["rows"])
                writer = writer or pa.ipc.new_stream(f, reader.schema)
                for b in reader:
                    writer.write_batch(b)
            if writer is not None:
                writer.close()
        w = _follow_plan(command, source, output, plan, args, [path])
    if not w["ok"]:
        w["failures"] = [("", w["error"])]
    w["pids"], w["tasks"] = pids, tasks
    return w


def _ranges(tensors: Sequence[tuple[Any, ...]], range_bytes: int,
            workers: int) -> list[tuple[int, int]]:
    """[begin, end) ranges of a plan's tensors of about range_bytes of source each, and at
    least `workers` ranges when there are that many tensors (one huge checkpoint spreads)."""
    total = sum(int(t[4]) for t in tensors)
    target = max(1, min(range_bytes, -(-total // max(1, workers))))
    out, begin, acc = [], 0, 0
    for i, t in enumerate(tensors):
        acc += int(t[4])
        if acc >= target and i + 1 < len(tensors):
            out.append((begin, i + 1))
            begin, acc = i + 1, 0
    out.append((begin, len(tensors)))
    return out


def _to_split(sizes: Sequence[int], workers: int) -> set[int]:
    """The checkpoints cut into ranges of tensors: only where spreading one over several
    workers shortens the job, i.e. with more workers than checkpoints, or for a checkpoint
    larger than a worker's share of the job. The others run whole, one task each, as the
    plain command runs them (no rows leave the process)."""
    if workers <= 1:
        return set()
    share = sum(sizes) / workers
    return {i for i, n in enumerate(sizes) if len(sizes) < workers or n > share}


def _timed(text: str, seconds: float) -> str:
    """The command's summary of a file with its time set to the job's: the model file's
    `time` line, a GGUF file's last figure, or the --json document's seconds (the command's
    run covers only its own part of the job)."""
    if text.lstrip().startswith("{"):
        doc = _json_or_none(text)
        if isinstance(doc, dict):
            inner = doc.get("summary")
            if isinstance(inner, dict) and "seconds" in inner:  # a GGUF file's
                inner["seconds"] = round(seconds, 3)
            elif "seconds" in doc:
                doc["seconds"] = round(seconds, 3)
            return json.dumps(doc) + "\n"
        return text
    text = re.sub(r"^  time( +)[0-9.]+ s$", lambda m: f"  time{m.group(1)}{seconds:.2f} s",
                  text, flags=re.M)
    return re.sub(r"^(.*\.gguf: .*bits per weight, )[0-9.]+ s$",
                  lambda m: f"{m.group(1)}{seconds:.1f} s", text, flags=re.M)


def _execute_layers(pairs: list[tuple[str, str]], cmd: str, args: list[str],
                    num_workers: int | None, range_bytes: int,
                    progress: Callable[[Mapping[str, Any]], Any] | None,
                    phases: dict[str, float],
                    t_job: float) -> tuple[dict[int, CheckpointResult], int]:
    """One Ray Dataset of units of work through map_batches: a whole checkpoint's unit plans,
    quantizes and writes its file on a worker; a cut checkpoint, planned first by a task, has
    its ranges quantized into rows, and its file written from them by a task. Each file is
    written on a worker by the command, which prints its summary; its time is the job's, from
    its start (t_job) to the file."""
    from arrow_quant_v2.arrow_quant_v2 import _model_plan_tensors
    from ray.data.block import BlockAccessor

    workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    t0 = time.monotonic()
    sizes = [_bytes_of(src) for src, _ in pairs]
    split = _to_split(sizes, workers)
    # A cut checkpoint is planned first, by a task (the driver cuts its plan into ranges); a
    # whole checkpoint is planned by its own unit, on the worker that then quantizes it.
    planned = {i: _plan_checkpoint.remote(pairs[i][0], pairs[i][1], cmd, list(args))
               for i in sorted(split)}
    finals: dict[int, Any] = {}  # the write tasks of cut checkpoints
    results: dict[int, CheckpointResult] = {}
    plans: dict[int, bytes] = {}
    tensors: dict[int, list[tuple[Any, ...]]] = {}
    # Progress: tensors and their bytes done, and the totals of the plans in so far (a
    # checkpoint not yet planned counts its files' size in bytes, no tensors).
    done = {"t": 0, "b": 0, "total_t": 0, "total_b": sum(sizes)}

    def plan_in(i: int, got: tuple[bool, str, bytes]) -> None:
        ok, error, plan = got
        done["total_b"] -= sizes[i]
        if ok:
            plans[i] = plan
            tensors[i] = _model_plan_tensors(plan)
            done["total_t"] += len(tensors[i])
            done["total_b"] += sum(int(t[4]) for t in tensors[i])
        else:
            results[i] = CheckpointResult(pairs[i][0], pairs[i][1], False, error or None,
                                          seconds=time.monotonic() - t_job)

    def report(i: int, ok: bool) -> None:
        if progress is not None:
            progress({"tensors_done": done["t"], "tensors_total": done["total_t"],
                      "bytes_done": done["b"], "bytes_total": done["total_b"],
                      "current": pairs[i][0], "checkpoints_done": len(results),
                      "checkpoints_total": len(pairs), "ok": ok})

    def finish(i: int, w: dict[str, Any]) -> None:
        fails = tuple((str(a), str(b)) for a, b in w["failures"])
        secs = time.monotonic() - t_job
        text = _timed(w["text"], secs) if w["ok"] and w["text"] else w["text"]
        results[i] = CheckpointResult(pairs[i][0], pairs[i][1], bool(w["ok"]),
                                      w["error"] or None,
                                      _json_or_none(text) if "--json" in args else None,
                                      text, secs, fails, tuple(w["tasks"]), tuple(w["pids"]),
                                      len(tensors[i]), sum(int(t[4]) for t in tensors[i]))
        if i not in split:  # a whole checkpoint's tensors are done with it
            done["t"] += len(tensors[i])
            done["b"] += sum(int(t[4]) for t in tensors[i])
        report(i, bool(w["ok"]))

    def collect(block: bool) -> None:
        """The finished writes (all of them when block)."""
        while finals:
            refs = list(finals.values())
            ready, _ = ray.wait(refs, num_returns=len(refs) if block else 1,
                                timeout=None if block else 0)
            if not ready:
                return
            for i in [i for i, r in finals.items() if r in ready]:
                finish(i, ray.get(finals.pop(i)))

    for i in sorted(split):
        plan_in(i, ray.get(planned[i]))
    phases["planned"] = time.monotonic() - t0  # the plans of the cut checkpoints
    # The units, in checkpoint order: one for a whole checkpoint, its ranges for a cut one.
    rows, span = [], {}
    for i in range(len(pairs)):
        if i not in split:
            rows.append({"ckpt": i, "range": 0, "begin": 0, "end": 0, "whole": True,
                         "source": pairs[i][0], "output": pairs[i][1], "plan": b""})
        elif i in plans:
            first = len(rows)
            for k, (b, e) in enumerate(_ranges(tensors[i], range_bytes, workers)):
                rows.append({"ckpt": i, "range": k, "begin": b, "end": e, "whole": False,
                             "source": pairs[i][0], "output": pairs[i][1], "plan": plans[i]})
            span[i] = (first, len(rows))
    dctx = ray.data.DataContext.get_current()
    saved_order = dctx.execution_options.preserve_order
    dctx.execution_options.preserve_order = True  # blocks come back in unit order
    try:
        bundles: Iterable[Any] = ()
        if rows:
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                _execute_batch, batch_size=1, num_cpus=1,
                fn_kwargs={"command": cmd, "args": list(args),
                           "calibration": _calibration_of(args)},
                compute=ray.data.TaskPoolStrategy(size=max(1, min(workers, len(rows)))))
            bundles = ds.iter_internal_ref_bundles()
        held: list[tuple[int, int, Any]] = []  # (first row, end row, block ref)
        pos = 0
        pending = sorted(span)
        for bundle in bundles:
            for entry in bundle.blocks:
                n = int(entry.metadata.num_rows or 0)
                held.append((pos, pos + n, entry.ref))
                last = None
                for j in range(pos, pos + n):
                    r = rows[j]
                    if not r["whole"]:
                        done["t"] += r["end"] - r["begin"]
                        done["b"] += sum(int(t[4])
                                         for t in tensors[r["ckpt"]][r["begin"]:r["end"]])
                        last = r["ckpt"]
                if any(rows[j]["whole"] for j in range(pos, pos + n)):
                    # Whole checkpoints' units: planned and written on their worker; their
                    # rows hold the plan and the command's summary, no weights.
                    tbl = BlockAccessor.for_block(ray.get(entry.ref)).to_arrow()
                    for w in tbl.drop_columns(["rows"]).to_pylist():
                        i = int(w["ckpt"])
                        if i in span:
                            continue
                        plan_in(i, (bool(w["planned"]), w["error"], bytes(w["plan"])))
                        if i in results:  # its planning failed
                            report(i, False)
                        else:
                            w["failures"] = json.loads(w["failures"])
                            w["pids"], w["tasks"] = [int(w["pid"])], [str(w["task"])]
                            finish(i, w)
                pos += n
                if last is not None:
                    report(last, True)
            # Each checkpoint whose ranges are all in: its file, written on a worker.
            while pending and span[pending[0]][1] <= pos:
                i = pending.pop(0)
                lo, hi = span[i]
                refs = [ref for a, b, ref in held if a < hi and b > lo]
                finals[i] = _write_checkpoint.remote(plans[i], pairs[i][0], pairs[i][1],
                                                     cmd, list(args), i, *refs)
            # Blocks of written checkpoints only: their write tasks hold them now, and the
            # object store lets them go when those finish.
            keep_from = span[pending[0]][0] if pending else pos
            held = [h for h in held if h[1] > keep_from]
            collect(False)
    finally:
        dctx.execution_options.preserve_order = saved_order
    phases["executed"] = time.monotonic() - t0
    collect(True)
    phases["written"] = time.monotonic() - t0
    return results, workers


def _run_job(pairs: list[tuple[str, str]], args: list[str], *, address: str | None,
             num_workers: int | None, command: str | None,
             progress: Callable[[Mapping[str, Any]], Any] | None,
             range_bytes: int = RANGE_BYTES) -> JobResult:
    cmd = _find_command(command)
    t0 = time.monotonic()
    _connect(address, num_workers)
    # Ray Data's own progress bars and execution logs are off while the job runs: progress is
    # reported per checkpoint (the caller's own datasets keep their settings).
    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _QUIET}
    for k, v in _QUIET.items():
        setattr(ctx, k, v)
    phases: dict[str, float] = {}
    try:
        results, workers = _execute_layers(pairs, cmd, args, num_workers, range_bytes,
                                           progress, phases, t0)
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
    missing = [pairs[i][0] for i in range(len(pairs)) if i not in results]
    if missing:
        raise RuntimeError(f"the Ray job returned no result for {', '.join(missing)}")
    return JobResult(tuple(results[i] for i in range(len(pairs))), time.monotonic() - t0,
                     workers, address or "local", phases)


def quantize_checkpoints(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                         output_dir: str | os.PathLike[str], *, address: str | None = None,
                         num_workers: int | None = None, command: str | None = None,
                         progress_callback: Callable[[Mapping[str, Any]], Any] | None = None,
                         range_bytes: int = RANGE_BYTES, **settings: Any) -> JobResult:
    """Quantizes checkpoints on a Ray cluster, one model file each in output_dir.

    sources: a checkpoint (a .safetensors file, a *.safetensors.index.json, a diffusers or
    model folder) or a list of them, as paths every worker can read. output_dir: where each
    checkpoint's file goes, named after its source (``unet.safetensors`` -> ``unet.arrow``,
    ``sd15/`` -> ``sd15.arrow``; ``.gguf`` with ``type=``); created if missing.
    address: the cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts
    a local one with num_workers CPUs (default: one per CPU). num_workers: checkpoints
    quantized at once (default: the cluster's CPUs). command: the arrowquant command the
    workers run (default: the one installed beside the worker's Python, else on PATH).
    progress_callback: called on this thread as work finishes, with a mapping
    (checkpoints_done, checkpoints_total, bytes_done, bytes_total, current, ok; with layer rows
    also tensors_done, tensors_total, as each range of tensors is quantized; the totals are
    those of the checkpoints planned so far, each one not yet planned counting its files'
    size in bytes_total).
    range_bytes: source bytes of one range of tensors (layer rows); a checkpoint is also cut
    into at least one range per worker, so one huge checkpoint spreads over the cluster.
    settings: the command's options as keywords (the module's docstring); each checkpoint's
    file has the bytes ``arrowquant quantize SOURCE -o FILE`` with those options writes.

    A checkpoint that fails (a bad tensor, an unreadable file) is reported in the result's
    ``failures`` with the error (and, with layer rows, ``tensor_failures``: every failing
    tensor by name), and the others finish; nothing is written under its name. Returns a
    JobResult.
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
                    num_workers=num_workers, command=command, progress=progress_callback,
                    range_bytes=range_bytes)


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
        what = "checkpoints"
        if "tensors_total" in p:  # layer rows: counted in tensors, as the command counts
            n, total, what = p["tensors_done"], p["tensors_total"], "tensors"
        if self.tty:
            fill = int(frac * 30)
            bar = "#" * fill + "." * (30 - fill)
            print(f"\r[{bar}] {n}/{total} {what}  {_size(p['bytes_done'])}/"
                  f"{_size(p['bytes_total'])}  {_size(rate)}/s  {left:.0f}s left  ",
                  end="\n" if n == total else "", file=sys.stderr, flush=True)
            return
        decile = int(frac * 10)
        if decile > self.last_decile or n == total:
            self.last_decile = decile
            print(f"progress: {n}/{total} {what}, {_size(p['bytes_done'])} of "
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
    written = [c for c in job.checkpoints if c.ok]
    totals = {"checkpoints": len(job.checkpoints), "written": len(written),
              "failed": len(job.failures), "tensors": sum(c.tensors for c in written),
              "source_bytes": sum(c.source_bytes for c in written),
              "file_bytes": sum(_file_size(c.output) for c in written)}
    if json_out:
        doc = {"address": job.address, "workers": job.workers, "seconds": job.seconds,
               "totals": totals,
               "checkpoints": [{"source": c.source, "output": c.output, "ok": c.ok,
                                "error": c.error, "seconds": c.seconds,
                                "summary": _json_or_none(c.text) if c.text else c.summary,
                                "tensor_failures": [list(f) for f in c.tensor_failures]}
                               for c in job.checkpoints],
               "failed": len(job.failures)}
        print(json.dumps(doc, indent=2))
    else:
        for c in job.checkpoints:
            if len(job.checkpoints) > 1 and not quiet:
                print(f"== {c.source} -> {c.output}")
            if c.ok and c.text:
                sys.stdout.write(c.text)
            elif not c.ok and not quiet:
                print(f"  failed: {c.error}")
        if not quiet:
            sizes = (f": {totals['tensors']} tensors, {_size(totals['source_bytes'])} -> "
                     f"{_size(totals['file_bytes'])} in files" if totals["tensors"] else "")
            print(f"ray job  {totals['written']}/{totals['checkpoints']} checkpoints written, "
                  f"{totals['failed']} failed{sizes}; {job.workers} workers ({job.address}), "
                  f"{job.seconds:.2f} s")
    for c in job.failures:
        print(f"arrowquant: error: {c.source}: {c.error}", file=sys.stderr)
    return 0 if job.ok else 1


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # written on a node whose files this machine does not see
        return 0


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
