"""GGUF out and in (docs/gguf.md), checked against PyPI's gguf (llama.cpp's gguf-py): every
block type we write decodes, with gguf.quants.dequantize, to the same floats as our decoder, bit
for bit; GGUFReader reads every file we write; files gguf's writer makes are read back by us
with the same values; bad files give errors naming the tensor or key and the byte offset."""
import json
import os
import pathlib
import subprocess
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
import arrow_quant_v2 as aq  # noqa: E402
from arrow_quant_v2 import gguf as aqg  # noqa: E402

GT = gguf.GGMLQuantizationType
WRITABLE = ["Q8_0", "Q4_0", "Q5_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "BF16", "F16", "F32"]
ROOT = pathlib.Path(__file__).resolve().parents[3]


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def inputs(n):
    """Distributions and edge cases, n elements each (n a multiple of 256)."""
    rng = np.random.default_rng(n)
    t3 = rng.standard_t(3, n) * 0.02
    out = {
        "gauss": rng.normal(0, 0.02, n),
        "laplace": rng.laplace(0, 0.014, n),
        "t3": t3,
        "zeros": np.zeros(n),
        "const": np.full(n, 0.37),
        "negconst": np.full(n, -2.5),
        "huge": rng.normal(0, 1e4, n),
        "tiny": rng.normal(0, 1e-7, n),
        "denormal": rng.normal(0, 1e-40, n),
        "positive": np.abs(rng.normal(0, 0.02, n)) + 0.1,
        "ties": np.round(rng.normal(0, 4, n)) / 8.0,
        "onehot": np.where(np.arange(n) % 97 == 0, 1.0, 0.0),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.mark.parametrize("qtype", WRITABLE)
def test_encode_decodes_like_gguf_bit_for_bit(qtype):
    block, _ = gguf.GGML_QUANT_SIZES[GT[qtype]]
    for name, x in inputs(4096).items():
        data = aqg.encode(x, qtype)
        ours = aqg.decode(data, qtype, x.shape)
        theirs = gguf.quants.dequantize(np.frombuffer(data, np.uint8), GT[qtype]).reshape(-1)
        assert np.array_equal(bits(ours), bits(theirs)), (qtype, name)
        assert np.all(np.isfinite(ours)), (qtype, name)
        if name in ("zeros",):
            assert np.array_equal(ours, x), (qtype, name)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_0"])
def test_without_search_the_bytes_are_ggml_s(qtype):
    # gguf_search="none": ggml's reference rounding, so gguf-py's quantizer (a port of ggml's
    # quantize_row_*_ref, independent of ours) gives the same bytes; the default search gives
    # other bytes with a lower error.
    for name, x in inputs(4096).items():
        with np.errstate(all="ignore"):  # gguf-py's reciprocal overflows on subnormal blocks
            theirs = gguf.quants.quantize(x, GT[qtype]).tobytes()
        assert aqg.encode(x, qtype, gguf_search="none") == theirs, (qtype, name)
        w = np.random.default_rng(1).uniform(0.5, 2.0, x.size).astype(np.float32)
        assert aqg.encode(x, qtype, w, gguf_search="none", threads=3) == theirs, (qtype, name)
    x = np.random.default_rng(2).normal(0, 0.02, 1 << 14).astype(np.float32)
    err = {s: float(np.sum((x - aqg.decode(aqg.encode(x, qtype, gguf_search=s), qtype,
                                          x.shape)) ** 2)) for s in ("none", "full")}
    assert err["full"] < err["none"], qtype
    with pytest.raises(ValueError, match="gguf_search"):
        aqg.encode(x, qtype, gguf_search="fast")


@pytest.mark.parametrize("qtype,bound", [("Q8_0", 0.006), ("Q6_K", 0.02), ("Q5_K", 0.04),
                                         ("Q5_0", 0.05), ("Q4_K", 0.08), ("Q4_0", 0.09),
                                         ("Q3_K", 0.16), ("Q2_K", 0.31)])
def test_error_is_below_ggml_reference_figures_on_gaussian(qtype, bound):
    # The bounds are ggml's reference quantizers' relative RMSE on this distribution, rounded
    # up: our searched encoders must not do worse.
    x = np.random.default_rng(7).normal(0, 0.02, 1 << 16).astype(np.float32)
    y = aqg.decode(aqg.encode(x, qtype), qtype, x.shape)
    assert np.sqrt(np.mean((x - y) ** 2)) / x.std() < bound


# ggml's reference quantizers' relative RMSE on the bench's four distributions (bench_gguf,
# std 0.02: Gaussian, Laplace, Gaussian with 0.1% at +-20 std, Student-t with 3 degrees of
# freedom), for the types whose search without importance is the lighter one.
GGML_ERRORS = {"Q3_K": (0.15083, 0.17627, 0.16350, 0.18897),
               "Q6_K": (0.01775, 0.02168, 0.02414, 0.02566)}


@pytest.mark.parametrize("qtype", sorted(GGML_ERRORS))
def test_lighter_searches_stay_below_ggml_on_four_distributions(qtype):
    # Without importance Q3_K and Q6_K search less than with it (docs/gguf.md); their error
    # must still be below ggml's on each distribution of the bench (drawn here by numpy).
    rng = np.random.default_rng(17)
    n = 1 << 18
    g = rng.normal(0, 0.02, n)
    out = np.where(rng.uniform(size=n) < 0.0005, 0.4,
                   np.where(rng.uniform(size=n) < 0.0005, -0.4, g))
    dists = [rng.normal(0, 0.02, n), rng.laplace(0, 0.02 / np.sqrt(2), n), out,
             rng.standard_t(3, n) * 0.02 / np.sqrt(3)]
    for x, ggml in zip(dists, GGML_ERRORS[qtype]):
        x = x.astype(np.float32)
        y = aqg.decode(aqg.encode(x, qtype), qtype, x.shape)
        assert np.sqrt(np.mean((x - y) ** 2)) / x.std() < ggml, qtype


def test_encode_is_independent_of_threads_and_dtype():
    x = np.random.default_rng(3).normal(0, 0.02, 1 << 15).astype(np.float32)
    for qtype in ("Q4_K", "Q3_K", "Q8_0"):
        a = aqg.encode(x, qtype, threads=1)
        assert a == aqg.encode(x, qtype, threads=3)
        # float64 and float16 sources convert to float32 first
        assert a == aqg.encode(x.astype(np.float64), qtype)
        h = x.astype(np.float16)
        assert aqg.encode(h, qtype) == aqg.encode(h.astype(np.float32), qtype)


def test_importance_steers_the_error():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.02, 1 << 14).astype(np.float32)
    w = np.where(np.arange(x.size) % 8 == 0, 100.0, 1.0).astype(np.float32)
    for qtype in ("Q4_K", "Q3_K", "Q2_K", "Q4_0"):
        plain = aqg.decode(aqg.encode(x, qtype), qtype, x.shape)
        weighted = aqg.decode(aqg.encode(x, qtype, w), qtype, x.shape)
        err = lambda y: float(np.sum(w * (x - y) ** 2))  # noqa: E731
        assert err(weighted) < err(plain), qtype


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16", "F16"])
def test_decode_blocks_from_gguf_quantizer(qtype):
    x = np.random.default_rng(11).normal(0, 0.02, (8, 256)).astype(np.float32)
    data = gguf.quants.quantize(x, GT[qtype])
    theirs = gguf.quants.dequantize(data, GT[qtype])
    ours = aqg.decode(data.tobytes(), qtype, x.shape)
    assert np.array_equal(bits(ours), bits(theirs))


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
                                   "Q4_1", "Q5_1"])
def test_decode_random_blocks_like_gguf(qtype):
    # Every bit pattern of the codes and sub-block scales, with finite binary16 scales.
    block, size = gguf.GGML_QUANT_SIZES[GT[qtype]]
    rng = np.random.default_rng(13)
    nb = 64
    raw = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    halves = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
              "IQ4_NL": (0,), "IQ4_XS": (0,), "Q4_1": (0, 2), "Q5_1": (0, 2)}[qtype]
    for at in halves:
        raw[:, at:at + 2] = np.frombuffer(
            rng.normal(0, 0.01, nb).astype(np.float16).tobytes(), np.uint8).reshape(nb, 2)
    theirs = gguf.quants.dequantize(raw.reshape(-1), GT[qtype]).reshape(-1)
    ours = aqg.decode(raw.tobytes(), qtype, nb * block)
    assert np.array_equal(bits(ours), bits(theirs))


def test_bad_encode_input():
    with pytest.raises(aq.QuantizationError, match="not whole Q4_K blocks of 256"):
        aqg.encode(np.zeros(300, np.float32), "Q4_K")
    with pytest.raises(aq.QuantizationError, match="Unknown GGUF type 'Q7_K'"):
        aqg.encode(np.zeros(256, np.float32), "Q7_K")
    with pytest.raises(aq.QuantizationError, match="Writable types"):
        aqg.encode(np.zeros(256, np.float32), "IQ4_XS")
    x = np.zeros(512, np.float32)
    x[300] = np.nan
    with pytest.raises(aq.QuantizationError, match="NaN or Inf at index 300"):
        aqg.encode(x, "Q4_K")


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_0"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_without_search_the_first_non_finite_is_named(qtype, dtype):
    # ggml's rounding checks the input as it encodes (one pass over it): the first NaN or Inf
    # is named, in any chunk of the threads' work and after finite values of any size.
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.02, 3 * 4096 + 512).astype(dtype)
    x[9000] = 65504.0 if dtype is np.float16 else 3e38  # finite in float32 and in dtype
    for at, v in [(0, np.nan), (4097, np.inf), (9001, -np.inf), (len(x) - 1, np.nan)]:
        y = x.copy()
        y[at] = v
        y[-1] = np.nan  # a later one is not the one named
        for threads in (1, 3):
            with pytest.raises(aq.QuantizationError, match=f"NaN or Inf at index {at}\\b"):
                aqg.encode(y, qtype, gguf_search="none", threads=threads)
    assert len(aqg.encode(x, qtype, gguf_search="none")) == len(x) // 32 * (
        {"Q8_0": 34, "Q4_0": 18, "Q5_0": 22}[qtype])


# ---- whole files ----------------------------------------------------------------------------

def small_model(path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(1)
    t = {
        "double_blocks.0.img_attn.proj.weight": rng.normal(0, 0.02, (64, 512)),
        "double_blocks.0.img_attn.proj.bias": rng.normal(0, 0.02, (64,)),
        "img_in.weight": rng.normal(0, 0.02, (96, 256)),
        "final_layer.linear.weight": rng.normal(0, 0.02, (16, 768)),
        "odd.weight": rng.normal(0, 0.02, (48, 100)),
        "narrow.weight": rng.normal(0, 0.02, (40, 96)),
        "conv.weight": rng.normal(0, 0.02, (32, 16, 3, 3)),
        "video.weight": rng.normal(0, 0.02, (4, 2, 2, 2, 256)),
    }
    t = {k: v.astype(np.float16 if "proj" in k else np.float32) for k, v in t.items()}
    save_file(t, str(path), metadata={"format": "pt", "source": "unit test"})
    return t


def load_st(path):
    """A safetensors file as float32 numpy arrays, bfloat16 included (which numpy lacks)."""
    import json
    data = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    out = {}
    for name, e in head.items():
        if name == "__metadata__":
            continue
        b0, b1 = e["data_offsets"]
        raw = data[8 + n + b0:8 + n + b1]
        if e["dtype"] == "BF16":
            v = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            v = np.frombuffer(raw, {"F32": np.float32, "F16": np.float16}[e["dtype"]])
        out[name] = (e["dtype"], v.astype(np.float32).reshape(e["shape"]))
    return out


def read_back(path):
    """Every tensor of a GGUF file as float32, decoded by gguf-py, in C order."""
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        v = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (t.tensor_type.name, np.asarray(v, dtype=np.float32))
    return r, out


@pytest.mark.parametrize("qtype", WRITABLE)
def test_quantize_gguf_file_reads_in_gguf_py(tmp_path, qtype):
    src = tmp_path / "m.safetensors"
    tensors = small_model(src)
    res = aq.quantize_gguf(src, tmp_path / "m.gguf", qtype)
    r, got = read_back(tmp_path / "m.gguf")
    assert set(got) == set(tensors)
    assert r.fields["general.architecture"].contents() == "flux"
    assert r.fields["general.quantization_version"].contents() == 2
    assert r.fields["arrowquant.meta.source"].contents() == "unit test"
    assert list(r.fields["comfy.gguf.orig_shape.video.weight"].contents()) == [4, 2, 2, 2, 256]
    types = {t.name: t.type for t in res.tensors}
    assert types["double_blocks.0.img_attn.proj.bias"] == "F32"  # 1-D
    assert types["conv.weight"] in ("F16", "F32", qtype)
    for t in r.tensors:
        if t.name == "video.weight":
            assert tuple(reversed(t.shape.tolist())) == (8, 2, 2, 256)
        else:
            assert tuple(reversed(t.shape.tolist())) == tensors[t.name].shape
    # Our own decoding of the file (dequantize_gguf) gives gguf-py's floats, bit for bit.
    aq.dequantize_gguf(tmp_path / "m.gguf", tmp_path / "back.safetensors")
    back = load_st(tmp_path / "back.safetensors")
    for name, (tname, v) in got.items():
        ours = back[name][1].reshape(-1)
        assert np.array_equal(bits(ours), bits(v.reshape(-1))), (name, tname)
        assert back[name][1].shape == tensors[name].shape
    # The quality reported is that of the decoded floats.
    for t in res.tensors:
        x = tensors[t.name].astype(np.float32).reshape(-1)
        y = got[t.name][1].reshape(-1)
        cos = float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))
        assert abs(cos - t.cosine) < 1e-6


def test_block_misfit_rows_are_f16(tmp_path):
    src = tmp_path / "m.safetensors"
    small_model(src)
    res = aq.quantize_gguf(src, tmp_path / "m.gguf", "Q4_K")
    t = {x.name: x for x in res.tensors}
    assert (t["odd.weight"].type, t["odd.weight"].reason) == ("F16", "block")
    assert (t["img_in.weight"].type, t["img_in.weight"].reason) == ("Q4_K", "type")
    # Rows of 96: whole blocks of 32 but not of 256, so Q8_0 (llama.cpp's fallback).
    assert (t["narrow.weight"].type, t["narrow.weight"].reason) == ("Q8_0", "block")
    res = aq.quantize_gguf(src, tmp_path / "m8.gguf", "Q8_0")
    t = {x.name: x for x in res.tensors}
    assert t["odd.weight"].type == "F16"  # 100 is not a multiple of 32 either
    assert t["narrow.weight"].type == "Q8_0"
    assert t["conv.weight"].type == "F16"  # innermost 3


def test_mixed_file_follows_the_layer_rules(tmp_path):
    src = tmp_path / "m.safetensors"
    small_model(src)
    cfg = aq.DiffusionQuantConfig("local", bits_for={"img_in.*": 8}, keep=["final_layer.*"])
    res = aq.quantize_gguf(src, tmp_path / "mixed.gguf", "Q3_K", config=cfg)
    t = {x.name: x for x in res.tensors}
    # The rules' 8 bits give Q8_0, kept tensors F16, the profile's tensors the type asked for.
    assert (t["img_in.weight"].type, t["img_in.weight"].reason) == ("Q8_0", "override")
    assert t["final_layer.linear.weight"].type == "F16"
    assert t["double_blocks.0.img_attn.proj.weight"].type == "Q3_K"
    assert t["double_blocks.0.img_attn.proj.weight"].reason == "profile"
    assert res.summary["types"]["Q3_K"] >= 1
    r, got = read_back(tmp_path / "mixed.gguf")
    assert {n: v[0] for n, v in got.items()} == {n: x.type for n, x in t.items()}


def test_validate_and_compare_read_gguf(tmp_path):
    src = tmp_path / "m.safetensors"
    small_model(src)
    aq.quantize_gguf(src, tmp_path / "q8.gguf", "Q8_0")
    rep = aq.validate_quality(src, tmp_path / "q8.gguf", min_cosine=0.999)
    assert rep.passed
    aq.quantize_gguf(src, tmp_path / "q2.gguf", "Q2_K")
    assert not aq.validate_quality(src, tmp_path / "q2.gguf", min_cosine=0.999).passed


def write_with_gguf_py(path, items, arch="flux"):
    w = gguf.GGUFWriter(str(path), arch)
    for name, qtype, raw in items:
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_files_from_gguf_writer_read_back(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 0.02, (6, 512)).astype(np.float32)
    items, expect = [], {}
    for q in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        raw = x.astype(np.float16) if q == "F16" else (
            x if q == "F32" else gguf.quants.quantize(x, GT[q]))
        items.append((f"t.{q}", GT[q], raw))
        expect[f"t.{q}"] = np.asarray(gguf.quants.dequantize(raw, GT[q]), np.float32)
    write_with_gguf_py(tmp_path / "theirs.gguf", items)
    aq.dequantize_gguf(tmp_path / "theirs.gguf", tmp_path / "theirs.safetensors")
    back = load_st(tmp_path / "theirs.safetensors")
    for name, v in expect.items():
        got = back[name][1]
        assert got.shape == (6, 512), name
        assert np.array_equal(bits(got), bits(v.reshape(6, 512))), name


# ---- bad files ------------------------------------------------------------------------------

def header(n_tensors, n_kv):
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def info(name, dims, qtype, offset):
    return (s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", qtype, offset))


def pad(b):
    return b + bytes((-len(b)) % 32)


@pytest.mark.parametrize("data,pattern", [
    (b"GGU", r"byte 0: truncated"),
    (header(1, 0)[:20], r"byte 16: truncated: the metadata count needs 8 bytes, 4 left"),
    (pad(header(1, 0) + info("blk.w", [32], 99, 0)) + bytes(64),
     r"byte 49, tensor 'blk.w': tensor type 99 is not one this library reads"),
    (pad(header(1, 0) + info("blk.w", [256], 0, 0)) + bytes(64),
     r"tensor 'blk.w': data of 1024 bytes at byte 64 runs past the end of the file"),
    (pad(header(1, 0) + info("blk.w", [8], 0, 4)) + bytes(64),
     r"tensor 'blk.w': data offset 4 \(byte 68\) is not a multiple of the alignment 32"),
    (header(0, 1) + s("k") + struct.pack("<I", 42), r"byte 33, key 'k': unknown value type 42"),
    (header(0, 1) + s("general.alignment") + struct.pack("<II", 4, 48),
     r"key 'general.alignment': alignment 48 is not a power of two"),
])
def test_bad_files_name_tensor_and_offset(tmp_path, data, pattern):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(aq.QuantizationError, match=pattern):
        aq.dequantize_gguf(p, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_truncated_real_file(tmp_path):
    src = tmp_path / "m.safetensors"
    small_model(src)
    aq.quantize_gguf(src, tmp_path / "m.gguf", "Q4_K")
    data = (tmp_path / "m.gguf").read_bytes()
    for cut in (10, 200, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(aq.QuantizationError, match=r"(byte \d+|runs past the end)"):
            aq.dequantize_gguf(tmp_path / "cut.gguf", tmp_path / "o.safetensors")


# ---- the command ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli(build_dir):
    exe = build_dir / "src" / "cli" / "arrowquant"
    if not exe.exists():
        pytest.fail(f"{exe} not found: build the project first")
    return exe


def run(cli, *args, ok=True):
    p = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    assert (p.returncode == 0) == ok, p.stderr
    return p


def test_cli_quantize_inspect_compare_dequantize(tmp_path, cli):
    src = tmp_path / "m.safetensors"
    small_model(src)
    out = tmp_path / "m.gguf"
    p = run(cli, "quantize", src, "-o", out, "--type", "Q5_K", "--json")
    import json
    doc = json.loads(p.stdout)
    assert doc["summary"]["types"]["Q5_K"] >= 2
    via_py = aq.quantize_gguf(src, tmp_path / "py.gguf", "Q5_K", threads=1)
    assert out.read_bytes()[:64] == (tmp_path / "py.gguf").read_bytes()[:64]
    # The same bytes whatever the thread count or entry point (names differ only in no byte).
    assert out.read_bytes() == (tmp_path / "py.gguf").read_bytes()
    assert via_py.summary["types"] == doc["summary"]["types"]
    p = run(cli, "inspect", out, "--json")
    info_doc = json.loads(p.stdout)
    assert info_doc["format"] == "gguf"
    assert {t["name"]: t["type"] for t in info_doc["tensors"]} == {
        t.name: t.type for t in via_py.tensors}
    p = run(cli, "compare", src, out)
    assert "min" in p.stdout
    run(cli, "validate", src, out, "--min-accuracy", "0.99")
    run(cli, "dequantize", out, "-o", tmp_path / "back.safetensors", "--dtype", "f16")
    from safetensors.numpy import load_file
    back = load_file(str(tmp_path / "back.safetensors"))
    assert back["img_in.weight"].dtype == np.float16
    # --gguf-search none (the settings table's flag) and the keyword give ggml's rounding.
    run(cli, "quantize", src, "-o", tmp_path / "n.gguf", "--type", "Q8_0", "--gguf-search", "none")
    aq.quantize_gguf(src, tmp_path / "npy.gguf", "Q8_0", gguf_search="none")
    aq.quantize_gguf(src, tmp_path / "full.gguf", "Q8_0")
    assert (tmp_path / "n.gguf").read_bytes() == (tmp_path / "npy.gguf").read_bytes()
    assert (tmp_path / "n.gguf").read_bytes() != (tmp_path / "full.gguf").read_bytes()
    r, got = read_back(tmp_path / "n.gguf")
    for t in r.tensors:
        if t.tensor_type == GT.Q8_0:
            x = load_st(src)[t.name][1].astype(np.float32)
            assert t.data.tobytes() == gguf.quants.quantize(x, GT.Q8_0).tobytes(), t.name
    p = run(cli, "quantize", src, "-o", tmp_path / "y.gguf", "--type", "Q8_0", "--gguf-search",
            "fast", ok=False)
    assert "gguf_search" in p.stderr or "--gguf-search" in p.stderr
    p = run(cli, "quantize", src, "-o", tmp_path / "y.arrow", "--gguf-search", "none", ok=False)
    assert "GGUF output" in p.stderr
    p = run(cli, "quantize", src, "-o", tmp_path / "x.gguf", "--type", "IQ4_XS", ok=False)
    assert "Writable types" in p.stderr
    assert not (tmp_path / "x.gguf").exists()
    p = run(cli, "quantize", src, "-o", tmp_path / "mixed.gguf", "--type", "Q4_K",
            "--profile", "edge", "--bits-for", "double_blocks.*.weight=8")
    assert "Q8_0" in p.stdout



def test_cli_gguf_setting_flags_follow_the_table(tmp_path, cli):
    # The settings table's flags with GGUF output: those of the settings the GGUF writer applies
    # (the same ones _quantize_gguf takes) work and are checked against the table's bounds and
    # choices; every other setting's flag is refused as not applying to GGUF output.
    from arrow_quant_v2.arrow_quant_v2 import _keywords, _settings
    src = tmp_path / "m.safetensors"
    small_model(src)
    applies = set(_keywords()["_quantize_gguf"][2])
    flagged = [d for d in _settings() if d["flag"] is not None]
    assert applies <= {d["name"] for d in flagged}
    ref = tmp_path / "ref.gguf"
    run(cli, "quantize", src, "-o", ref, "--type", "Q4_K", "-q")
    for d in flagged:
        out = tmp_path / f"{d['name']}.gguf"
        if d["name"] not in applies:
            p = run(cli, "quantize", src, "-o", out, "--type", "Q4_K", d["flag"],
                    d["default"], ok=False)
            assert f"{d['flag']} (setting {d['name']}) does not apply to GGUF output" in p.stderr
            assert "unknown option" not in p.stderr
            assert not out.exists()
            continue
        run(cli, "quantize", src, "-o", out, "--type", "Q4_K", "-q", d["flag"], d["default"])
        if d["name"] != "profile":  # a profile brings the layer rules; the others at their
            assert out.read_bytes() == ref.read_bytes(), d["name"]  # defaults change nothing
        bad = (str(int(d["upper"]) + 1) if d["type"] == "int" else "nope")
        p = run(cli, "quantize", src, "-o", out, "--type", "Q4_K", d["flag"], bad, ok=False)
        assert d["flag"] in p.stderr
        if d["type"] == "int":
            assert str(int(d["upper"])) in p.stderr, p.stderr
        else:
            assert all(c in p.stderr for c in d["choices"]), p.stderr
    # Applied flags take effect: threads never change the bytes, the profile gives the layer
    # rules; gguf_search none gives ggml's rounding (above).
    run(cli, "quantize", src, "-o", tmp_path / "t.gguf", "--type", "Q4_K", "-q", "--threads", "2")
    assert (tmp_path / "t.gguf").read_bytes() == ref.read_bytes()
    p = run(cli, "quantize", src, "-o", tmp_path / "p.gguf", "--type", "Q4_K", "--profile",
            "edge", "--family", "flux", "--json")
    doc = json.loads(p.stdout)
    assert any(t["reason"] == "profile" for t in doc["tensors"]), doc


def test_float16_range(tmp_path):
    from safetensors.numpy import save_file
    big = np.full((4, 100), 1e6, np.float32)
    save_file({"big.weight": big, "w.weight": np.ones((4, 256), np.float32)},
              str(tmp_path / "m.safetensors"))
    # A tensor the writer would keep as F16 (rows of 100) but whose values F16 cannot hold is
    # stored as F32 instead of Inf.
    res = aq.quantize_gguf(tmp_path / "m.safetensors", tmp_path / "m.gguf", "Q4_K")
    t = {x.name: x for x in res.tensors}
    assert (t["big.weight"].type, t["big.weight"].reason) == ("F32", "range")
    # Asking for F16 explicitly is refused, naming the tensor and the element.
    with pytest.raises(aq.QuantizationError, match=r"'big.weight': the value at index 0 is "
                                                   r"beyond the float16 range"):
        aq.quantize_gguf(tmp_path / "m.safetensors", tmp_path / "f16.gguf", "F16")
    assert not (tmp_path / "f16.gguf").exists()
