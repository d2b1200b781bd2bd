"""arrow_quant_v2.ray on a real local Ray cluster (a head node and its worker processes on this
machine): the files the workers write are byte for byte the command's, for a diffusers folder
and for a list of checkpoints (native and GGUF, both through plans); one checkpoint is split
over several tasks (a GGUF one, and one with a calibration, too); a worker killed while it
quantizes, or while its write task's command writes a file, is retried and the files come out
complete and correct; bad tensors are reported by name and the others finish; each file's
time is the job's; and the command's --ray path gives the same files, progress in tensors and
a summary."""
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[data]'): the "
                                        "Ray scale-out tests need it")
from ray.cluster_utils import Cluster  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from arrow_quant_v2.ray import quantize_checkpoints, settings_to_args  # noqa: E402


def _checkpoint(path, seed, *, layers=3, width=256, nan=False):
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(layers):
        t[f"blocks.{i}.attn.to_q.weight"] = rng.standard_normal((width, width), np.float32)
        t[f"blocks.{i}.norm.weight"] = rng.standard_normal(width).astype(np.float32)
    if nan:
        t["blocks.1.attn.to_q.weight"][3, 5] = np.nan
    save_file(t, str(path), metadata={"seed": str(seed)})
    return path


def _sharded(folder, seed):
    """A sharded checkpoint: two shards and their index."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    wmap = {}
    for k in range(2):
        name = f"model-0000{k + 1}-of-00002.safetensors"
        t = {f"layers.{k}.mlp.weight": rng.standard_normal((256, 512), np.float32)}
        save_file(t, str(folder / name))
        wmap.update({n: name for n in t})
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return index


def _digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cluster():
    """A head node with two worker slots, in processes of its own; the test process joins it
    as the driver."""
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 96 << 20, "include_dashboard": False})
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def command(build_dir):
    path = build_dir / "src" / "cli" / "arrowquant"
    if not path.exists():
        pytest.fail(f"{path} not found: build the project first (scripts/test does)")
    return str(path)


def _run(command, *args):
    p = subprocess.run([command, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def _no_temporaries(folder):
    left = [p.name for p in pathlib.Path(folder).iterdir() if ".tmp-" in p.name]
    assert not left, left


def test_settings_become_the_commands_options():
    assert settings_to_args({"bits": 8, "keep": ["*a*", "*b*"], "bits_for": {"*attn*": 8},
                             "min_accuracy": 0.99, "quiet": True, "profile": None,
                             "target_bpw": 0}) == [
        "--bits", "8", "--keep", "*a*", "--keep", "*b*", "--bits-for", "*attn*=8",
        "--min-accuracy", "0.99", "--quiet", "--target-bpw", "0"]
    with pytest.raises(TypeError, match="set by the job"):
        settings_to_args({"o": "x"})


def test_without_ray_the_import_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "import arrow_quant_v2.ray\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: arrow_quant_v2.ray needs Ray Data: pip install 'ray[data]'")


def test_diffusers_folder_same_bytes_as_the_command(cluster, command, tmp_path):
    from diffusers_unet import small_unet

    root = tmp_path / "pipe"
    small_unet(1).save_pretrained(root / "unet")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}))
    ref = tmp_path / "ref.arrow"
    _run(command, "quantize", root, "-o", ref, "--profile", "local", "--quiet")
    job = quantize_checkpoints(root, tmp_path / "out", command=command, profile="local")
    assert job.ok, job.failures
    (c,) = job.checkpoints
    assert c.output == str(tmp_path / "out" / "pipe.arrow")
    assert _digest(c.output) == _digest(ref)
    assert c.summary["tensors"] == json.loads(
        _run(command, "quantize", root, "-o", tmp_path / "ref2.arrow", "--profile", "local",
             "--json").stdout)["tensors"]


def test_list_of_checkpoints_native_and_gguf(cluster, command, tmp_path):
    srcs = [_checkpoint(tmp_path / f"m{i}.safetensors", i) for i in range(3)]
    srcs.append(_sharded(tmp_path / "sharded", 7))
    seen = []
    job = quantize_checkpoints(srcs, tmp_path / "out", command=command, bits=8,
                               keep=["*norm*"], min_accuracy=0.999,
                               progress_callback=seen.append)
    assert job.ok and len(job.checkpoints) == 4
    done = [p["checkpoints_done"] for p in seen]
    assert done == sorted(done) and done[-1] == 4
    tensors = [p["tensors_done"] for p in seen]
    assert tensors == sorted(tensors) and tensors[-1] == seen[-1]["tensors_total"] == 3 * 6 + 2
    # Progress counts the tensors' source bytes (the files less their headers).
    total = sum(f.stat().st_size for f in tmp_path.rglob("*.safetensors"))
    assert 0.95 * total < seen[-1]["bytes_done"] == seen[-1]["bytes_total"] < total
    for s, c in zip(srcs, job.checkpoints):
        ref = tmp_path / (s.name.split(".")[0] + ".ref.arrow")
        _run(command, "quantize", s, "-o", ref, "--bits", 8, "--keep", "*norm*",
             "--min-accuracy", 0.999, "--quiet")
        assert c.output == str(tmp_path / "out" / (s.name.split(".")[0] + ".arrow"))
        assert _digest(c.output) == _digest(ref), s
        assert c.summary["quantized"] == (2 if "index" in s.name else 3)
    gjob = quantize_checkpoints(srcs[:2], tmp_path / "gguf", command=command, type="Q4_K")
    assert gjob.ok
    for s, c in zip(srcs, gjob.checkpoints):
        ref = tmp_path / (s.stem + ".ref.gguf")
        _run(command, "quantize", s, "-o", ref, "--type", "Q4_K", "--quiet")
        assert c.output.endswith(".gguf") and _digest(c.output) == _digest(ref)
        # Through its plan: the plan's tensors, executed by a task.
        assert c.tensors == (5 if "index" in s.name else 6) and c.tasks, c
    _no_temporaries(tmp_path / "out")
    _no_temporaries(tmp_path / "gguf")


def test_one_checkpoint_is_split_over_tasks(cluster, command, tmp_path):
    src = _checkpoint(tmp_path / "big.safetensors", 4, layers=8, width=512)
    settings = {"scheme": "affine_search", "threads": 1, "min_accuracy": 0.99}
    job = quantize_checkpoints(src, tmp_path / "out", command=command, range_bytes=1 << 20,
                               num_workers=2, **settings)
    assert job.ok, job.failures
    (c,) = job.checkpoints
    # Ranges of about one 1 MiB tensor each (at least 8), each its own task.
    assert len(c.tasks) >= 8, c.tasks
    ref = tmp_path / "ref.arrow"
    _run(command, "quantize", src, "-o", ref, *settings_to_args(settings), "--quiet")
    assert _digest(c.output) == _digest(ref)
    assert c.summary["tensors"] == 16 and c.summary["quantized"] == 8


def test_bad_tensors_are_reported_by_name_and_the_rest_finish(cluster, command, tmp_path):
    bad = _checkpoint(tmp_path / "bad.safetensors", 2, layers=4, nan=True)
    from safetensors.numpy import load_file
    t = load_file(str(bad))
    t["blocks.3.attn.to_q.weight"][0, 1] = np.inf
    save_file(t, str(bad))
    good = _checkpoint(tmp_path / "good.safetensors", 3, layers=4)
    # No budget: planning reads no weight, the ranges meet the bad values.
    settings = {"bits": 4, "keep": ["*norm*"]}
    job = quantize_checkpoints([bad, good], tmp_path / "out", command=command,
                               range_bytes=1 << 16, **settings)
    assert [c.ok for c in job.checkpoints] == [False, True]
    (b,) = job.failures
    assert [name for name, _ in b.tensor_failures] == ["blocks.1.attn.to_q.weight",
                                                      "blocks.3.attn.to_q.weight"]
    assert "Layer 'blocks.1.attn.to_q.weight' contains NaN or Inf at index 773" in b.error
    assert "blocks.3.attn.to_q.weight" in b.tensor_failures[1][1]
    assert sorted(os.listdir(tmp_path / "out")) == ["good.arrow"]
    ref = tmp_path / "good.ref.arrow"
    _run(command, "quantize", good, "-o", ref, *settings_to_args(settings), "--quiet")
    assert _digest(tmp_path / "out" / "good.arrow") == _digest(ref)


def test_bad_checkpoint_is_reported_and_the_others_finish(cluster, command, tmp_path):
    srcs = [_checkpoint(tmp_path / "a.safetensors", 1),
            _checkpoint(tmp_path / "bad.safetensors", 2, nan=True),
            tmp_path / "missing.safetensors",
            _checkpoint(tmp_path / "c.safetensors", 3)]
    job = quantize_checkpoints(srcs, tmp_path / "out", command=command)
    assert [c.ok for c in job.checkpoints] == [True, False, False, True]
    bad, missing = job.failures
    assert "Layer 'blocks.1.attn.to_q.weight' contains NaN or Inf at index 773" in bad.error
    assert "missing.safetensors" in missing.error
    assert sorted(os.listdir(tmp_path / "out")) == ["a.arrow", "c.arrow"]
    for name in ("a", "c"):
        ref = tmp_path / f"{name}.ref.arrow"
        _run(command, "quantize", tmp_path / f"{name}.safetensors", "-o", ref, "--quiet")
        assert _digest(tmp_path / "out" / f"{name}.arrow") == _digest(ref)


def _executing():
    """Ray worker processes quantizing tensors: a range, or a whole checkpoint's unit (Ray titles
    a worker by its task)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if argv.startswith(b"ray::") and b"_execute_batch" in argv:
            found.append(int(pid))
    return found


def test_killed_worker_is_retried_with_complete_files(cluster, command, tmp_path):
    # Big enough that a range lasts long enough to be caught in the act (a few tenths of a
    # second each with the searched scheme on one thread).
    srcs = [_checkpoint(tmp_path / f"k{i}.safetensors", 10 + i, layers=4, width=1024)
            for i in range(3)]
    settings = {"scheme": "affine_search", "threads": 1}
    out = tmp_path / "out"
    killed = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid in _executing():
                os.kill(pid, signal.SIGKILL)  # the Ray worker process quantizing a range
                killed.append(pid)
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    job = quantize_checkpoints(srcs, out, command=command, range_bytes=4 << 20, **settings)
    t.join()
    assert killed, "no worker was caught running"
    assert job.ok, job.failures
    for s, c in zip(srcs, job.checkpoints):
        ref = tmp_path / (s.stem + ".ref.arrow")
        _run(command, "quantize", s, "-o", ref, *settings_to_args(settings), "--quiet")
        assert _digest(c.output) == _digest(ref), s
    assert sorted(os.listdir(out)) == ["k0.arrow", "k1.arrow", "k2.arrow"]


def _write_worker():
    """The Ray worker process running a write task (Ray titles a worker by its task)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::") and b"_write_checkpoint" in title:
            return int(pid)
    return None


def _writing(worker, output):
    """Whether the write task's worker has a child command writing `output` from rows (read
    from the lists of children of the worker's threads, which are cheap to poll)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{worker}/task"):
            kids += pathlib.Path(f"/proc/{worker}/task/{tid}/children").read_text().split()
    except OSError:
        return False
    for kid in kids:
        try:
            argv = pathlib.Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--rows-in" in argv and os.fsencode(output) in argv:
            return True
    return False


def test_worker_killed_while_writing_is_retried_with_a_complete_file(cluster, command,
                                                                     tmp_path):
    """One checkpoint on two workers is cut into ranges; the worker of its write task is
    killed while its command writes the file: Ray runs the write again, and the file is the
    command's, with no temporary left and nothing under the final name before it is whole."""
    src = _checkpoint(tmp_path / "w.safetensors", 40, layers=16, width=1024)
    out = tmp_path / "out"
    final = out / "w.arrow"
    settings = {"bits": 8, "keep": ["*norm*"], "threads": 1}
    killed, seen_final = [], []

    def killer():
        deadline = time.monotonic() + 300
        worker = None
        while time.monotonic() < deadline and not killed:
            worker = worker or _write_worker()
            if worker is not None and _writing(worker, final):
                os.kill(worker, signal.SIGKILL)  # the Ray worker running the write task
                killed.append(worker)
                seen_final.append(final.exists())
                return
            time.sleep(0.001)

    t = threading.Thread(target=killer)
    t.start()
    job = quantize_checkpoints(src, out, command=command, num_workers=2, range_bytes=8 << 20,
                               **settings)
    t.join()
    assert killed, "no write task was caught writing"
    assert seen_final == [False]  # the killed writer had not put anything under the name
    assert job.ok, job.failures
    (c,) = job.checkpoints
    assert len(c.tasks) >= 2, c  # in ranges, written by a write task
    ref = tmp_path / "ref.arrow"
    _run(command, "quantize", src, "-o", ref, *settings_to_args(settings), "--quiet")
    assert _digest(final) == _digest(ref)
    assert sorted(os.listdir(out)) == ["w.arrow"]


def test_calibration_is_shipped_to_range_workers(cluster, command, tmp_path):
    """A checkpoint with a calibration is cut into ranges: the table reaches the workers that
    execute them, and the file is the command's (max and mean combine)."""
    import pyarrow as pa

    src = _checkpoint(tmp_path / "c.safetensors", 50, layers=4, width=256)
    rng = np.random.default_rng(5)
    names, groups, ms = [], [], []
    for i in range(4):
        base = rng.gamma(0.5, 1.0, 256) + 1e-3
        for g in range(3):
            names.append(f"blocks.{i}.attn.to_q")
            groups.append(g)
            ms.append((base * (1.0 + 3.0 * g * rng.random(256))).astype(np.float32))
    t = pa.table({"layer_name": pa.array(names, pa.string()),
                  "timestep_group": pa.array(groups, pa.int64()),
                  "mean_square": pa.array(ms, pa.list_(pa.float32()))},
                 metadata={"arrowquant.timestep_groups": "3"})
    table = tmp_path / "calib.arrow"
    with pa.OSFile(str(table), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t)
    plain = tmp_path / "plain.arrow"
    _run(command, "quantize", src, "-o", plain, "--scheme", "kquant", "--quiet")
    for combine in ("max", "mean"):
        settings = {"scheme": "kquant", "calibration": table, "calibration_combine": combine}
        job = quantize_checkpoints(src, tmp_path / combine, command=command, num_workers=2,
                                   range_bytes=1 << 16, **settings)
        assert job.ok, job.failures
        (c,) = job.checkpoints
        assert len(c.tasks) >= 2, c  # in ranges, each on a worker
        ref = tmp_path / f"ref-{combine}.arrow"
        _run(command, "quantize", src, "-o", ref, *settings_to_args(settings), "--quiet")
        assert _digest(c.output) == _digest(ref), combine
        assert _digest(ref) != _digest(plain)  # the table changed the file
        assert c.summary["calibration"]["combine"] == combine


def test_time_is_the_jobs(cluster, command, tmp_path):
    """Each file's summary gives the job's time until that file was written, planning
    included (the plain command's covers its whole run), in its text and its --json."""
    srcs = [_checkpoint(tmp_path / f"t{i}.safetensors", 60 + i) for i in range(2)]
    job = quantize_checkpoints(srcs, tmp_path / "out", command=command, bits=4,
                               min_accuracy=0.99)
    assert job.ok, job.failures
    for c in job.checkpoints:
        assert job.phases["planned"] < c.seconds <= job.seconds
        assert abs(c.summary["seconds"] - c.seconds) < 1e-3
    p = subprocess.run([command, "quantize", *srcs, "-o", tmp_path / "cli", "--bits", "4",
                        "--ray", cluster.address], capture_output=True, text=True,
                       env=dict(os.environ, AQ_PYTHON=sys.executable), timeout=600)
    assert p.returncode == 0, p.stderr
    times = [float(ln.split()[1]) for ln in p.stdout.splitlines() if ln.startswith("  time ")]
    total = float(p.stdout.rstrip().rsplit(", ", 1)[1].removesuffix(" s"))
    assert len(times) == 2 and all(0 < x <= total + 0.01 for x in times), p.stdout


def test_command_ray_flag(cluster, command, tmp_path):
    srcs = [_checkpoint(tmp_path / f"m{i}.safetensors", 20 + i) for i in range(2)]
    env = dict(os.environ, AQ_PYTHON=sys.executable)
    p = subprocess.run([command, "quantize", *srcs, "-o", tmp_path / "out", "--bits", "2",
                        "--ray", cluster.address], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "progress: 12/12 tensors" in p.stderr
    assert p.stdout.rstrip().splitlines()[-1].startswith("ray job  2/2 checkpoints written, 0 "
                                                         "failed")
    for s in srcs:
        ref = tmp_path / (s.stem + ".ref.arrow")
        plain = _run(command, "quantize", s, "-o", ref, "--bits", "2")
        out = tmp_path / "out" / (s.stem + ".arrow")
        assert _digest(out) == _digest(ref)
        # Each file's summary: the plain command's lines, its time apart.
        assert _summary_of(p.stdout, s, out) == _untimed(plain.stdout.replace(str(ref), str(out)))
    assert p.stdout.rstrip().splitlines()[-1].startswith(
        "ray job  2/2 checkpoints written, 0 failed: 12 tensors, ")
    # One SRC: -o is the file; a bad checkpoint: one error line and exit 1.
    bad = _checkpoint(tmp_path / "bad.safetensors", 2, nan=True)
    p = subprocess.run([command, "quantize", bad, "-o", tmp_path / "bad.arrow", "--ray",
                        cluster.address, "--quiet"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"arrowquant: error: {bad}: Layer 'blocks.1.attn.to_q.weight' contains NaN or Inf "
        "at index 773"]
    assert not (tmp_path / "bad.arrow").exists()


def _untimed(text):
    """A summary's lines, without its time (a GGUF summary's last figure)."""
    return [ln.rsplit(", ", 1)[0] if ln.endswith(" s") and ".gguf: " in ln else ln
            for ln in text.splitlines() if not ln.startswith("  time ")]


def _summary_of(stdout, src, out):
    """The summary lines --ray printed for one checkpoint (after its '== SRC -> OUT' line)."""
    lines = stdout.splitlines()
    at = lines.index(f"== {src} -> {out}") + 1
    end = next((k for k in range(at, len(lines))
                if lines[k].startswith(("== ", "ray job "))), len(lines))
    return _untimed("\n".join(lines[at:end]))


def _check_ray_run_is_plain(command, src, out, ref, options, address):
    """`arrowquant quantize src -o out OPTIONS --ray address` of one checkpoint of 6 tensors:
    progress counted in tensors, the plain command's bytes (written to ref), and the plain
    command's summary text followed by the job's line. Returns both runs."""
    env = dict(os.environ, AQ_PYTHON=sys.executable)
    p = subprocess.run([command, "quantize", src, "-o", out, *options, "--ray", address],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "progress: 6/6 tensors" in p.stderr
    plain = _run(command, "quantize", src, "-o", ref, *options)
    assert _digest(out) == _digest(ref)
    lines = p.stdout.splitlines()
    assert _untimed("\n".join(lines[:-1])) == _untimed(plain.stdout.replace(str(ref), str(out)))
    assert lines[-1].startswith("ray job  1/1 checkpoints written, 0 failed: 6 tensors, ")
    return p, plain


def _ray_json(command, src, out, options, address):
    """The --json document of `arrowquant quantize src -o out OPTIONS --json --ray address`."""
    env = dict(os.environ, AQ_PYTHON=sys.executable)
    p = subprocess.run([command, "quantize", src, "-o", out, *options, "--json", "--ray",
                        address], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("options,local", [(("--bits", "4", "--scheme", "affine"), False),
                                           (("--bits", "2"), False),
                                           (("--bits", "4", "--min-accuracy", "0.9999"), False),
                                           (("--bits", "4", "--target-bpw", "5",
                                             "--budget-scope", "model"), False),
                                           (("--bits", "4", "--min-accuracy", "0.9999"), True)])
def test_command_ray_summary_is_the_commands(cluster, command, tmp_path, options, local):
    """One checkpoint on two workers is cut into ranges: its file is written from their rows,
    and --ray prints the summary the plain command prints (text and --json), the cosine each
    tensor had before the floor raised its bits included; on the test's cluster, and on the
    one --ray local starts (this machine's two CPUs)."""
    src = _checkpoint(tmp_path / "m.safetensors", 31)
    out, ref = tmp_path / "m.arrow", tmp_path / "ref.arrow"
    p, plain = _check_ray_run_is_plain(command, src, out, ref, options,
                                       "local" if local else cluster.address)
    if "--min-accuracy" in options:  # the floor moved tensors: their cosine before is there
        assert "moved to more bits" in plain.stdout and "(cosine nan" not in p.stdout
    if local:  # the text is enough: a second local cluster would only cost its start-up
        return
    doc = _ray_json(command, src, out, options, cluster.address)
    (c,) = doc["checkpoints"]
    assert doc["totals"]["tensors"] == 6 and doc["totals"]["written"] == 1
    want = json.loads(_run(command, "quantize", src, "-o", ref, *options, "--json").stdout)
    for k in ("seconds", "output"):
        c["summary"].pop(k), want.pop(k)
    assert c["summary"] == want


@pytest.mark.parametrize("options", [("--type", "Q4_K"),
                                     ("--type", "Q3_K", "--profile", "local")])
def test_command_ray_gguf_summary_is_the_commands(cluster, command, tmp_path, options):
    """GGUF output of one checkpoint on two workers: cut into ranges of GGUF blocks, the file
    written from their rows (--plan-in --rows-in), the plain command's bytes and report (text
    and --json)."""
    src = _checkpoint(tmp_path / "m.safetensors", 31)
    out, ref = tmp_path / "m.gguf", tmp_path / "ref.gguf"
    _check_ray_run_is_plain(command, src, out, ref, options, cluster.address)
    job = quantize_checkpoints(src, tmp_path / "job", command=command, num_workers=2,
                               range_bytes=1 << 12, **{"type": options[1]},
                               **({"profile": "local"} if "--profile" in options else {}))
    (c,) = job.checkpoints
    assert job.ok and len(c.tasks) >= 2, c  # in ranges
    assert _digest(c.output) == _digest(ref)
    (c,) = _ray_json(command, src, out, options, cluster.address)["checkpoints"]
    want = json.loads(_run(command, "quantize", src, "-o", ref, *options, "--json").stdout)
    for d in (c["summary"], want):
        d.pop("file"), d["summary"].pop("seconds")
    assert c["summary"] == want


def test_command_ray_errors_are_one_line(command, tmp_path):
    src = _checkpoint(tmp_path / "m.safetensors", 1, layers=1)
    cases = [({"AQ_PYTHON": sys.executable}, "127.0.0.1:1",
              "arrowquant: error: cannot reach the Ray cluster at 127.0.0.1:1: "),
             ({"AQ_PYTHON": str(tmp_path / "nopython")}, "local",
              f"arrowquant: error: --ray: cannot run {tmp_path / 'nopython'} (No such file")]
    for env, address, expect in cases:
        p = subprocess.run([command, "quantize", src, "-o", tmp_path / "m.arrow", "--ray",
                            address], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **env))
        assert p.returncode == 1
        (line,) = p.stderr.strip().splitlines()
        assert line.startswith(expect), line
        assert not (tmp_path / "m.arrow").exists()


def test_installed_command_finds_its_python(cluster, tmp_path):
    """pip puts arrowquant beside the environment's python3: --ray runs the module with that
    interpreter, and quantize_checkpoints finds that command, with no setting."""
    installed = pathlib.Path(sys.executable).parent / "arrowquant"
    if not installed.exists():
        pytest.skip(f"{installed} not installed (pip install . puts it there)")
    src = _checkpoint(tmp_path / "m.safetensors", 5, layers=1)
    env = {k: v for k, v in os.environ.items() if k != "AQ_PYTHON"}
    p = subprocess.run([installed, "quantize", src, "-o", tmp_path / "a.arrow", "--ray",
                        cluster.address, "--quiet"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    job = quantize_checkpoints([src], tmp_path / "out")
    assert job.ok
    _run(str(installed), "quantize", src, "-o", tmp_path / "ref.arrow", "--quiet")
    assert _digest(tmp_path / "a.arrow") == _digest(tmp_path / "ref.arrow")
    assert _digest(tmp_path / "out" / "m.arrow") == _digest(tmp_path / "ref.arrow")
