"""Bad input: one line on stderr, a non-zero exit, and no output file left behind."""
import json
import os
import resource
import signal
import struct
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file


def _header(entries, meta=None):
    h = dict(entries)
    if meta:
        h["__metadata__"] = meta
    return json.dumps(h).encode()


def _raw_file(path, header: bytes, data: bytes, length=None):
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


@pytest.fixture()
def good(tmp_path):
    rng = np.random.default_rng(3)
    p = tmp_path / "good.safetensors"
    save_file({"a.weight": rng.standard_normal((128, 256)).astype(np.float32),
               "a.bias": rng.standard_normal(128).astype(np.float32)}, str(p))
    return p


def test_missing_path(aq, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    aq.fails("quantize", tmp_path / "nope.safetensors", "-o", out / "m.arrow",
             expect="No such file or directory", leaves_nothing_in=out)


def test_not_safetensors(aq, tmp_path):
    p = tmp_path / "photo.safetensors"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    aq.fails("quantize", p, "-o", tmp_path / "m.arrow", expect="not a safetensors file",
             leaves_nothing_in=tmp_path)
    p.write_bytes(b'\x04\x00\x00\x00\x00\x00\x00\x00[1] ')
    aq.fails("inspect", p, expect="not a JSON object")


def test_truncated_file(aq, good, tmp_path):
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    aq.fails("quantize", cut, "-o", tmp_path / "m.arrow", expect="extend past the data region",
             leaves_nothing_in=tmp_path)


def test_header_larger_than_file(aq, tmp_path):
    p = _raw_file(tmp_path / "h.safetensors", b'{"a": 1}', b"", length=5000)
    aq.fails("quantize", p, "-o", tmp_path / "m.arrow", expect="larger than the file",
             leaves_nothing_in=tmp_path)


def test_overlapping_offsets(aq, tmp_path):
    h = _header({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                 "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})
    p = _raw_file(tmp_path / "o.safetensors", h, bytes(24))
    aq.fails("quantize", p, "-o", tmp_path / "m.arrow", expect="overlaps tensor 'a'",
             leaves_nothing_in=tmp_path)


def test_out_of_range_offsets(aq, tmp_path):
    h = _header({"a": {"dtype": "F32", "shape": [400], "data_offsets": [0, 1600]}})
    p = _raw_file(tmp_path / "r.safetensors", h, bytes(64))
    aq.fails("quantize", p, "-o", tmp_path / "m.arrow", expect="extend past the data region",
             leaves_nothing_in=tmp_path)


def test_unknown_dtype(aq, tmp_path):
    h = _header({"w": {"dtype": "Q7", "shape": [256, 128], "data_offsets": [0, 1000]}})
    p = _raw_file(tmp_path / "u.safetensors", h, bytes(1000))
    aq.fails("quantize", p, "-o", tmp_path / "m.arrow",
             expect="tensor 'w' has unknown dtype 'Q7' and cannot be quantized",
             leaves_nothing_in=tmp_path)
    # Kept on request, it is carried through unchanged.
    aq("quantize", p, "-o", tmp_path / "m.arrow", "--keep", "w", "--quiet")
    aq("dequantize", tmp_path / "m.arrow", "-o", tmp_path / "back.safetensors")
    back = (tmp_path / "back.safetensors").read_bytes()
    n = struct.unpack("<Q", back[:8])[0]
    assert json.loads(back[8:8 + n])["w"]["dtype"] == "Q7"
    assert back[8 + n:] == bytes(1000)


def test_index_names_missing_shard(aq, tmp_path, good):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"a.weight": "good.safetensors",
                                        "a.bias": "good.safetensors",
                                        "x": "model-00002-of-00002.safetensors"}}))
    out = tmp_path / "out"
    out.mkdir()
    aq.fails("quantize", tmp_path / "model.safetensors.index.json", "-o", out / "m.arrow",
             expect="names shard 'model-00002-of-00002.safetensors', which is missing",
             leaves_nothing_in=out)


def test_output_directory_missing(aq, good, tmp_path):
    aq.fails("quantize", good, "-o", tmp_path / "no" / "such" / "m.arrow",
             expect="no/such", leaves_nothing_in=tmp_path)
    aq("quantize", good, "-o", tmp_path / "m.arrow", "--quiet")
    aq.fails("dequantize", tmp_path / "m.arrow", "-o", tmp_path / "no" / "x.safetensors",
             expect="does not exist")


def test_bad_options(aq, good, tmp_path):
    aq.fails("quantize", good, "-o", tmp_path / "m.arrow", "--bits", "3",
             expect="Invalid bit_width: 3. Must be 2, 4, or 8", leaves_nothing_in=tmp_path)
    aq.fails("quantize", good, "-o", tmp_path / "m.arrow", "--scheme", "magic",
             expect="magic", leaves_nothing_in=tmp_path)
    aq.fails("quantize", good, "-o", tmp_path / "m.arrow", "--compression", "gzip",
             expect="gzip", leaves_nothing_in=tmp_path)
    aq.fails("dequantize", good, "-o", tmp_path / "x.safetensors",
             expect="", leaves_nothing_in=tmp_path)


def _limit_fsize(limit):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def test_disk_full(aq, good, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    aq.fails("quantize", good, "-o", out / "m.arrow", "--compression", "none",
             expect="File too large", leaves_nothing_in=out, preexec_fn=_limit_fsize(20000))
    aq("quantize", good, "-o", tmp_path / "m.arrow", "--quiet")
    aq.fails("dequantize", tmp_path / "m.arrow", "-o", out / "d.safetensors",
             expect="File too large", leaves_nothing_in=out, preexec_fn=_limit_fsize(20000))


def test_interrupt_mid_run(cli, tmp_path):
    """SIGINT after the first tensor: exit 130, one line, no output file, no temporary."""
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
    p.send_signal(signal.SIGINT)
    _, rest = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, rest)
    lines = [l for l in rest.splitlines() if not l.startswith("progress:")]
    assert lines == ["arrowquant: interrupted; no output written"], rest
    assert os.listdir(out) == []


def test_non_finite_weights(aq, tmp_path):
    w = np.ones((64, 512), np.float32)
    w[3, 17] = np.nan
    src = tmp_path / "nan.safetensors"
    save_file({"blocks.0.weight": w}, str(src))
    aq.fails("quantize", src, "-o", tmp_path / "m.arrow",
             expect="Layer 'blocks.0.weight' contains NaN or Inf at index 1553",
             leaves_nothing_in=tmp_path)


def test_folder_output_cleaned_on_failure(aq, tmp_path):
    """Dequantizing a pipeline into a folder: when the second component fails (file size
    limit), the first component's file and the folders made for it are removed too."""
    rng = np.random.default_rng(9)
    root = tmp_path / "pipe"
    for comp, rows in (("a_small", 4), ("b_large", 512)):
        (root / comp).mkdir(parents=True)
        save_file({"w": rng.standard_normal((rows, 128)).astype(np.float32)},
                  str(root / comp / "diffusion_pytorch_model.safetensors"))
    (root / "model_index.json").write_text(json.dumps(
        {"a_small": ["diffusers", "X"], "b_large": ["diffusers", "Y"]}))
    q = tmp_path / "p.arrow"
    aq("quantize", root, "-o", q, "--keep", "*", "--quiet")
    out = tmp_path / "out"
    out.mkdir()
    aq.fails("dequantize", q, "-o", out, expect="File too large", leaves_nothing_in=out,
             preexec_fn=_limit_fsize(100000))
    aq("dequantize", q, "-o", out)
    assert (out / "b_large" / "diffusion_pytorch_model.safetensors").stat().st_size > 200000


def test_version_names_the_kernel_set(aq):
    """--version says which kernel set runs (scripts/test reads it to pick the narrower set for
    its second pass); AQ_KERNELS forces one, and an unknown name is one clear error."""
    lines = aq("--version").stdout.splitlines()
    assert lines[0].startswith("arrowquant ")
    own = lines[1].removeprefix("kernels: ")
    assert own in {"avx512", "avx2", "neon", "ref"}, lines
    forced = aq("--version", env={**os.environ, "AQ_KERNELS": "ref"}).stdout
    assert forced.splitlines()[1] == "kernels: ref"
    aq.fails("--version", env={**os.environ, "AQ_KERNELS": "sse9"}, expect="AQ_KERNELS=sse9")


def test_json_summary_of_huge_weights_is_valid_json(aq, tmp_path):
    """Weights near float32's limit overflow the cosine's sums; the summaries stay JSON (a
    non-finite figure is written as a string) and name awkward paths correctly."""
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((64, 512)) * 1e30).astype(np.float32)
    src = tmp_path / 'odd "name".safetensors'
    save_file({"blocks.0.weight": w}, str(src))
    out = tmp_path / "m.arrow"
    q = json.loads(aq("quantize", src, "-o", out, "--json").stdout)
    assert q["source"] == str(src)
    assert q["quantized"] == 1
    for key in ("mean_cosine", "mean_sqnr_db", "min_sqnr_db", "bits_per_weight"):
        assert isinstance(q[key], float) or q[key] in ("inf", "-inf", "nan"), (key, q[key])
    c = json.loads(aq("compare", src, out, "--json").stdout)
    assert c["compared"] == 1
    v = json.loads(aq("validate", src, out, "--json", check=False).stdout)
    assert v["compared"] == 1
