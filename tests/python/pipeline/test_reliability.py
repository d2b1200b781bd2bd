"""The files around the parsers: an output never replaces one of its inputs or something that
is not a regular file, it is checked before the work starts, nothing hostile makes the
command hang, and no input yields a wrong file or a silent partial result."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from safetensors.numpy import load_file, save_file

# The runner's own timeout (600 s) guards every command against a hang; this one guards
# the signal test's wait.
HANG = 120


@pytest.fixture()
def src(tmp_path):
    rng = np.random.default_rng(11)
    p = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "b.weight": rng.standard_normal((64, 256)).astype(np.float32)}, str(p))
    return p


def _pipeline(root, comps=("unet", "vae")):
    rng = np.random.default_rng(12)
    for c in comps:
        (root / c).mkdir(parents=True)
        save_file({"w": rng.standard_normal((32, 256)).astype(np.float32)},
                  str(root / c / "diffusion_pytorch_model.safetensors"))
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "P", **{c: ["diffusers", "UNet2DModel"] for c in comps}}))
    return root


# ---- an output never replaces one of its inputs ----

@pytest.mark.parametrize("spelling", ["same", "dot", "hardlink", "symlink"])
def test_quantize_refuses_its_source(aq, src, tmp_path, spelling):
    before = src.read_bytes()
    out = {"same": src, "dot": tmp_path / "." / src.name, "hardlink": tmp_path / "h.safetensors",
           "symlink": tmp_path / "s.safetensors"}[spelling]
    if spelling == "hardlink":
        os.link(src, out)
    elif spelling == "symlink":
        os.symlink(src.name, out)
    aq.fails("quantize", src, "-o", out, expect="refusing to overwrite a source")
    assert src.read_bytes() == before


def test_quantize_refuses_the_index_and_a_shard(aq, tmp_path):
    rng = np.random.default_rng(13)
    shards = {"s-00001-of-00002.safetensors": "a.weight", "s-00002-of-00002.safetensors": "b.weight"}
    for f, t in shards.items():
        save_file({t: rng.standard_normal((64, 256)).astype(np.float32)}, str(tmp_path / f))
    index = tmp_path / "s.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {t: f for f, t in shards.items()}}))
    for out in (index, tmp_path / "s-00002-of-00002.safetensors"):
        before = out.read_bytes()
        aq.fails("quantize", index, "-o", out, expect="refusing to overwrite a source")
        assert out.read_bytes() == before


def test_dequantize_refuses_its_source(aq, src, tmp_path):
    q = tmp_path / "q.arrow"
    aq("quantize", src, "-o", q, "--quiet")
    before = q.read_bytes()
    aq.fails("dequantize", q, "-o", q, expect="refusing to overwrite a source")
    aq.fails("report", q, "-o", q, expect="refusing to overwrite a source")
    os.mkfifo(tmp_path / "fifo.html")
    aq.fails("report", q, "-o", tmp_path / "fifo.html", expect="is a FIFO")
    os.symlink(q, tmp_path / "link.safetensors")
    aq.fails("dequantize", q, "-o", tmp_path / "link.safetensors",
             expect="refusing to overwrite a source")
    assert q.read_bytes() == before


def test_dequantize_into_the_source_pipeline_is_refused(aq, tmp_path):
    root = _pipeline(tmp_path / "pipe")
    q = tmp_path / "p.arrow"
    aq("quantize", root, "-o", q, "--quiet")
    before = {p: p.read_bytes() for p in root.rglob("*.safetensors")}
    aq.fails("dequantize", q, "-o", f"{root}/", expect="already holds weights",
             leaves_nothing_in=root / "unet")
    assert {p: p.read_bytes() for p in root.rglob("*.safetensors")} == before


def _calibration(path):
    table = pa.table({"layer_name": ["a", "b"], "timestep_group": pa.array([0, 0], pa.int64()),
                      "mean_square": pa.array([[1.0] * 256] * 2, pa.list_(pa.float32()))})
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table)
    return path


@pytest.mark.parametrize("spelling", ["same", "dot", "hardlink", "symlink"])
def test_quantize_refuses_its_calibration(aq, src, tmp_path, spelling):
    cal = _calibration(tmp_path / "cal.arrow")
    before = cal.read_bytes()
    out = {"same": cal, "dot": tmp_path / "." / cal.name, "hardlink": tmp_path / "h.arrow",
           "symlink": tmp_path / "s.arrow"}[spelling]
    if spelling == "hardlink":
        os.link(cal, out)
    elif spelling == "symlink":
        os.symlink(cal.name, out)
    aq.fails("quantize", src, "-o", out, "--scheme", "kquant", "--calibration", cal,
             expect="refusing to overwrite a source")
    assert cal.read_bytes() == before
    # GGUF output: the table under a .gguf name (any name is a table's).
    gcal = _calibration(tmp_path / "table.gguf")
    before = gcal.read_bytes()
    aq.fails("quantize", src, "-o", gcal, "--type", "Q4_K", "--calibration", gcal,
             expect="refusing to overwrite a source")
    assert gcal.read_bytes() == before
    # The same table and output path are fine when the output is another file.
    aq("quantize", src, "-o", tmp_path / "q.arrow", "--scheme", "kquant", "--calibration", cal,
       "--quiet")


def test_python_quantize_refuses_its_calibration(src, tmp_path):
    aqv2 = pytest.importorskip("arrow_quant_v2")
    cal = _calibration(tmp_path / "cal.arrow")
    before = cal.read_bytes()
    os.symlink(cal, tmp_path / "link.arrow")
    for out in (cal, tmp_path / "link.arrow"):
        with pytest.raises(ValueError, match="refusing to overwrite a source"):
            aqv2.quantize_diffusion_model(src, out, "local", calibration=cal)
        with pytest.raises(ValueError, match="refusing to overwrite a source"):
            aqv2.quantize_diffusion_model(src, out, "local", calibration=str(cal))
    assert cal.read_bytes() == before


def test_python_quantize_refuses_its_source(src):
    aqv2 = pytest.importorskip("arrow_quant_v2")
    before = src.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite a source"):
        aqv2.quantize_diffusion_model(src, src)
    assert src.read_bytes() == before


# ---- the destination is checked before the work ----

@pytest.mark.parametrize("kind,expect", [
    ("chardev", "is a character device"),
    ("fifo", "is a FIFO"),
    ("dangling", "symbolic link to a missing file"),
    ("folder", "is a folder, expected a file name"),
    ("slash", "is a folder, expected a file name"),
    ("empty", "output path is empty"),
])
@pytest.mark.parametrize("command", ["quantize", "dequantize"])
def test_output_that_is_not_a_file(aq, src, tmp_path, kind, expect, command):
    q = tmp_path / "q.arrow"
    if command == "dequantize":
        aq("quantize", src, "-o", q, "--quiet")
    out = tmp_path / "out"
    if kind == "chardev":
        # A link to the device: an unchecked run would replace the link, never the device.
        os.symlink("/dev/null", out)
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "dangling":
        os.symlink(tmp_path / "nowhere", out)
    elif kind == "folder":
        out.mkdir()
    elif kind == "slash":
        out = f"{tmp_path}/nothere/"
    elif kind == "empty":
        out = ""
    before = sorted(os.listdir(tmp_path))
    args = ("quantize", src, "-o", out) if command == "quantize" else ("dequantize", q, "-o", out)
    if command == "dequantize" and kind in ("folder", "slash"):
        expect = "not a diffusers pipeline"  # a folder is the output of a pipeline's file
    p = aq.fails(*args, expect=expect)
    # Nothing was done: no progress line, nothing new beside the output.
    assert "progress:" not in p.stderr
    assert sorted(os.listdir(tmp_path)) == before
    if kind in ("dangling", "chardev"):
        assert os.path.islink(out)
    if kind == "fifo":
        assert os.path.exists(out) and not os.path.isfile(out)


# ---- nothing hangs ----

def test_fifo_inputs_are_refused(aq, tmp_path):
    fifo = tmp_path / "in.safetensors"
    os.mkfifo(fifo)
    for cmd in (("quantize", fifo, "-o", tmp_path / "q.arrow"), ("inspect", fifo),
                ("compare", fifo, fifo)):
        aq.fails(*cmd, expect="is a FIFO")
    fa = tmp_path / "in.arrow"
    os.mkfifo(fa)
    aq.fails("dequantize", fa, "-o", tmp_path / "x.safetensors", expect="is a FIFO")
    # An index, a shard and a pipeline's model_index.json that are FIFOs.
    index = tmp_path / "s.safetensors.index.json"
    os.mkfifo(index)
    aq.fails("quantize", index, "-o", tmp_path / "q.arrow", expect="is a FIFO")
    os.unlink(index)
    index.write_text(json.dumps({"weight_map": {"w": "shard.safetensors"}}))
    os.mkfifo(tmp_path / "shard.safetensors")
    aq.fails("quantize", index, "-o", tmp_path / "q.arrow", expect="is a FIFO")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    os.mkfifo(pipe / "model_index.json")
    aq.fails("quantize", pipe, "-o", tmp_path / "q.arrow", expect="is a FIFO")
    # A GGUF name: the format sniffing must not open it either.
    fg = tmp_path / "in.gguf"
    os.mkfifo(fg)
    for cmd in (("inspect", fg), ("dequantize", fg, "-o", tmp_path / "g.safetensors"),
                ("compare", fg, fg), ("validate", fg, fg)):
        aq.fails(*cmd, expect="is a FIFO")


def test_many_metadata_keys(aq, tmp_path):
    """Metadata keys are merged through a hash: 300k keys (which a check of every key
    against the earlier ones took minutes over) go through well within the hang guard."""
    n = 300_000
    meta = {f"k{i}": "v" for i in range(n)}
    save_file({"w": np.ones((64, 256), np.float32)}, str(tmp_path / "m.safetensors"),
              metadata=meta)
    p = aq("quantize", tmp_path / "m.safetensors", "-o", tmp_path / "m.arrow", "--quiet")
    assert p.returncode == 0
    t = pa.ipc.open_file(str(tmp_path / "m.arrow")).read_all()
    assert len(json.loads(t.schema.metadata[b"arrowquant.model_metadata"])) == n


# ---- no wrong file ----

def test_unknown_source_dtype_of_a_quantized_row(aq, src, tmp_path):
    q = tmp_path / "q.arrow"
    aq("quantize", src, "-o", q, "--quiet", "--compression", "none")
    t = pa.ipc.open_file(str(q)).read_all()
    i = t.schema.get_field_index("source_dtype")
    bad = t.set_column(i, t.schema.field(i), pa.array(["F32", "Q9"], pa.utf8()))
    out = tmp_path / "out"
    out.mkdir()
    # With the row checksum the edit is damage; without it (older files) the value is refused.
    for table, expect in ((bad, "row 1 (layer 'b.weight'): checksum mismatch"),
                          (bad.drop_columns(["checksum"]),
                           "row 1 (layer 'b.weight'): source_dtype 'Q9'")):
        with pa.ipc.new_file(str(tmp_path / "bad.arrow"), table.schema) as w:
            w.write_table(table)
        aq.fails("dequantize", tmp_path / "bad.arrow", "-o", out / "x.safetensors",
                 expect=expect, leaves_nothing_in=out)


def test_sharded_component_comes_back_loadable(aq, tmp_path):
    """A pipeline whose UNet is sharded is dequantized into one safetensors file under the
    name diffusers looks for, and diffusers loads it."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from diffusers_unet import small_unet

    root = tmp_path / "pipe"
    unet = small_unet(3)
    unet.save_pretrained(root / "unet", max_shard_size="200KB")
    assert (root / "unet" / "diffusion_pytorch_model.safetensors.index.json").exists()
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "P", "unet": ["diffusers", "UNet2DModel"]}))
    q = tmp_path / "p.arrow"
    aq("quantize", root, "-o", q, "--bits", "8", "--quiet")
    out = tmp_path / "out"
    out.mkdir()
    aq("dequantize", q, "-o", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file()) == ["unet/diffusion_pytorch_model.safetensors"]
    (out / "unet" / "config.json").write_bytes((root / "unet" / "config.json").read_bytes())
    back = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    for (name, a), (_, b) in zip(unet.state_dict().items(), back.state_dict().items()):
        assert a.shape == b.shape, name
        assert torch.nn.functional.cosine_similarity(
            a.flatten().float(), b.flatten().float(), dim=0) > 0.99, name


# ---- no silent partial result ----

def test_skipped_components_are_reported(aq, tmp_path):
    root = _pipeline(tmp_path / "pipe", comps=("unet",))
    (root / "text_encoder").mkdir()
    (root / "text_encoder" / "pytorch_model.bin").write_bytes(b"\0" * 16)
    (root / "vae").mkdir()
    (root / "vqvae").mkdir()
    save_file({"w": np.ones(4, np.float32)}, str(root / "vqvae" / "m-00001-of-00002.safetensors"))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "P", "unet": ["diffusers", "U"], "text_encoder": ["transformers", "T"],
        "vae": ["diffusers", "V"], "vqvae": ["diffusers", "Q"], "scheduler": ["diffusers", "S"],
        "safety_checker": ["x", "Y"]}))
    p = aq("quantize", root, "-o", tmp_path / "q.arrow", "--json")
    got = {s["component"]: s["reason"] for s in json.loads(p.stdout)["skipped"]}
    assert got == {"safety_checker": "no folder",
                   "scheduler": "no weight files (configuration only)",
                   "text_encoder": "weights only in a format other than safetensors "
                                   "(e.g. pytorch_model.bin)",
                   "vae": "empty folder",
                   "vqvae": "safetensors shards without their index (*.safetensors.index.json)"}
    p = aq("quantize", root, "-o", tmp_path / "q.arrow")
    assert "  skipped      text_encoder: weights only in a format other than safetensors" in \
        p.stdout
    aqv2 = pytest.importorskip("arrow_quant_v2")
    r = aqv2.quantize_diffusion_model(root, tmp_path / "q2.arrow")
    assert dict(r.summary["skipped"]) == got


def test_inputs_without_tensors_are_errors(aq, tmp_path):
    index = tmp_path / "e.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    aq.fails("quantize", index, "-o", tmp_path / "q.arrow", expect="\"weight_map\" is empty",
             leaves_nothing_in=tmp_path)
    save_file({}, str(tmp_path / "none.safetensors"))
    aq.fails("quantize", tmp_path / "none.safetensors", "-o", tmp_path / "q.arrow",
             expect="holds no tensors", leaves_nothing_in=tmp_path)


# ---- signals and temporary files ----

def test_sighup_leaves_nothing(cli, tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "big.safetensors"
    save_file({f"blocks.{i}.weight": rng.standard_normal((1024, 1024)).astype(np.float32)
               for i in range(40)}, str(src))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([str(cli), "quantize", str(src), "-o", str(out / "m.arrow")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()
    assert first.startswith("progress: 1/40"), first
    p.send_signal(signal.SIGHUP)
    _, rest = p.communicate(timeout=HANG)
    assert p.returncode == 130, (p.returncode, rest)
    assert os.listdir(out) == []


def test_stale_temporaries_are_removed(aq, src, tmp_path):
    """A temporary named for a process that is gone (a run killed with -9) is removed by the
    next run writing the same output; one of a live process is left alone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"m.arrow.tmp-{gone.pid}-abcdef"
    live = out / f"m.arrow.tmp-{os.getpid()}-abcdef"
    other = out / f"n.arrow.tmp-{gone.pid}-abcdef"
    for f in (stale, live, other):
        f.write_bytes(b"x")
    aq("quantize", src, "-o", out / "m.arrow", "--quiet")
    assert sorted(os.listdir(out)) == sorted(["m.arrow", live.name, other.name])



def test_temporaries_of_an_unreaped_run_are_removed(aq, src, tmp_path):
    """A run killed together with its parent stays a zombie until a subreaper collects it (Ray's
    raylet is one): its temporary is stale too."""
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 30
        while pathlib.Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] \
                != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        out = tmp_path / "out"
        out.mkdir()
        stale = out / f"m.arrow.tmp-{zombie.pid}-abcdef"
        stale.write_bytes(b"x")
        aq("quantize", src, "-o", out / "m.arrow", "--quiet")
        assert os.listdir(out) == ["m.arrow"]
    finally:
        zombie.wait()


# ---- messages ----

def test_messages_name_what_the_user_gave(aq, src, tmp_path):
    for name, data in (("zero.arrow", b""), ("bad.arrow", b"NOTARROW" * 4)):
        p = aq.fails("inspect", tmp_path / name if (tmp_path / name).write_bytes(data) is not None
                     else None, expect="not an Arrow IPC file")
        assert "safetensors" not in p.stderr
    q = tmp_path / "q.arrow"
    # Without --profile, --bits 2 alone means the edge profile; naming a scheme takes the
    # plain path, which no profile labels.
    aq("quantize", src, "-o", q, "--bits", "2", "--quiet")
    assert "profile edge" in aq("inspect", q).stdout.splitlines()[0]
    aq("quantize", src, "-o", q, "--bits", "2", "--scheme", "affine", "--quiet")
    p = aq("inspect", q)
    assert "profile none" in p.stdout.splitlines()[0]
    p = aq("inspect", src)
    assert p.stdout.splitlines()[0].endswith("safetensors checkpoint, 2 tensors")
    assert p.stdout.endswith("\n")
    aq("dequantize", q, "-o", tmp_path / "back.safetensors", "--quiet")
    assert set(load_file(str(tmp_path / "back.safetensors"))) == {"a.weight", "b.weight"}
    # Each mean says what it averages.
    p = aq("quantize", src, "-o", tmp_path / "q4.arrow")
    assert "mean" in p.stdout and "over the 2 quantized tensors" in p.stdout
    p = aq("compare", src, tmp_path / "back.safetensors")
    assert "over the compared tensors (kept ones included): mean SQNR" in p.stdout


def test_input_truncated_while_read(cli, tmp_path):
    """The input is memory-mapped: truncated by another process mid-run, the next page read
    past its new end raises SIGBUS. One line, exit 1, and the temporary file is gone."""
    rng = np.random.default_rng(6)
    src = tmp_path / "big.safetensors"
    save_file({f"blocks.{i}.weight": rng.standard_normal((1024, 1024)).astype(np.float32)
               for i in range(60)}, str(src))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([str(cli), "quantize", str(src), "-o", str(out / "m.arrow"),
                          "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stderr.readline()
    assert first.startswith("progress: 1/60"), first
    os.truncate(src, 1 << 20)
    _, rest = p.communicate(timeout=HANG)
    lines = [l for l in rest.splitlines() if not l.startswith("progress:")]
    assert p.returncode == 1, (p.returncode, rest)
    assert lines == [f"arrowquant: error: {src}: the file changed while being read (truncated "
                     "by another process?)"], rest
    assert os.listdir(out) == []


# A process embedding the library: the same truncation raises an exception naming the file
# (no SIGBUS), and the temporary is gone. Run in a child so that a regression kills the child,
# not the test run; a SIGBUS handler the host had before (faulthandler's) stays in the chain.
_EMBEDDED = """
import faulthandler, os, sys
import arrow_quant_v2 as aq
faulthandler.enable()
src, out = sys.argv[1:3]
def cut(p):
    if p["tensors_done"] == 1:
        os.truncate(src, 1 << 20)
try:
    aq.quantize_diffusion_model(src, out, "local", progress_callback=cut, threads=1)
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
"""


def test_python_input_truncated_while_read(tmp_path):
    pytest.importorskip("arrow_quant_v2")
    rng = np.random.default_rng(7)
    src = tmp_path / "big.safetensors"
    save_file({f"blocks.{i}.weight": rng.standard_normal((1024, 1024)).astype(np.float32)
               for i in range(16)}, str(src))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([sys.executable, "-c", _EMBEDDED, str(src), str(out / "m.arrow")],
                       capture_output=True, text=True, timeout=HANG)
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert f"{src}: the file changed while being read (truncated by another process?)" \
        in p.stdout, p.stdout
    assert os.listdir(out) == []


# A C host reading a model file through aq_qmodel_next: the rows after the cut are refused,
# as is the end of the file, and a SIGBUS that is not a fault in a mapping still kills.
_C_HOST = """
import ctypes, os, signal, sys
lib = ctypes.CDLL(sys.argv[1])
path = sys.argv[2].encode()
class Err(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]
err = Err()
qm = ctypes.c_void_p()
assert lib.aq_qmodel_open(path, ctypes.byref(qm), ctypes.byref(err)) == 0, err.message
os.truncate(sys.argv[2], 4096)
row = ctypes.c_void_p()
st = 0
for _ in range(100):
    st = lib.aq_qmodel_next(qm, ctypes.byref(row), ctypes.byref(err))
    if st != 0 or not row.value:
        break
print(st, err.message.decode())
lib.aq_qmodel_free(qm)
sys.stdout.flush()
signal.raise_signal(signal.SIGBUS)
"""


def test_c_host_model_file_truncated_while_read(build_dir, aq, tmp_path):
    lib = build_dir / "libarrowquant.so"
    cache = build_dir / "CMakeCache.txt"
    if cache.exists() and "AQ_SANITIZE:BOOL=ON" in cache.read_text():
        pytest.skip("a plain host process cannot load the sanitizer build's library (its "
                    "runtimes must come first); the release build's runs cover this host")
    rng = np.random.default_rng(8)
    src = tmp_path / "m.safetensors"
    save_file({f"blocks.{i}.weight": rng.standard_normal((512, 512)).astype(np.float32)
               for i in range(8)}, str(src))
    q = tmp_path / "q.arrow"
    aq("quantize", src, "-o", q, "--compression", "none", "--quiet")
    p = subprocess.run([sys.executable, "-c", _C_HOST, str(lib), str(q)],
                       capture_output=True, text=True, timeout=HANG)
    st, _, message = p.stdout.strip().partition(" ")
    assert int(st) != 0, p.stdout
    assert message == f"{q}: the file changed while being read (truncated by another process?)"
    assert p.returncode == -signal.SIGBUS, (p.returncode, p.stderr)


def _peak_rss_kib(cli, *args):
    """Peak resident memory of one run of the command, in KiB, measured in a fresh process
    so that earlier children of the test process do not count."""
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "assert p.returncode == 0, p\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    p = subprocess.run([sys.executable, "-c", code, str(cli), *map(str, args)],
                       capture_output=True, text=True, timeout=600, check=True)
    return int(p.stdout)


def test_large_header_memory(cli, tmp_path):
    """A header of 200k tensors is parsed in a small multiple of its size (one JSON tree of
    it took about a kilobyte per tensor, 20 times the header)."""
    def write(path, n):
        members = ",".join('"layer.%07d.weight":{"dtype":"F32","shape":[1],'
                           '"data_offsets":[%d,%d]}' % (i, 4 * i, 4 * i + 4) for i in range(n))
        header = ("{" + members + "}").encode()
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            f.write(bytes(4 * n))
        return len(header)

    write(tmp_path / "tiny.safetensors", 1)
    size = write(tmp_path / "big.safetensors", 200_000)
    base = _peak_rss_kib(cli, "inspect", tmp_path / "tiny.safetensors")
    big = _peak_rss_kib(cli, "inspect", tmp_path / "big.safetensors")
    grown = (big - base) * 1024
    assert grown < 6 * size, f"{grown} bytes for a header of {size}"
