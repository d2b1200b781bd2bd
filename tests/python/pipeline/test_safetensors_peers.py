"""Checkpoints written by Hugging Face's safetensors are read exactly; our output is read back
by safetensors."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import _TYPES, load_file, save_file

FLOATS = {"F32", "F16", "BF16", "F64"}


def _tensor(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * 3
    if dtype == torch.bool:
        return x > 0
    if dtype.is_complex:
        return torch.complex(x, -x).to(dtype)
    if dtype.is_floating_point:
        return x.to(dtype)
    info = torch.iinfo(dtype)
    lo = max(info.min, -100)
    return torch.clamp(x * 10, lo, min(info.max, 100)).to(torch.int64).to(dtype) \
        if lo < 0 else torch.clamp(x.abs() * 10, 0, 100).to(dtype)


@pytest.fixture()
def every_dtype(tmp_path):
    """One tensor per dtype safetensors writes, plus big float tensors to be quantized."""
    tensors = {}
    for i, (name, dtype) in enumerate(sorted(_TYPES.items())):
        tensors[f"t_{name.lower()}"] = _tensor(dtype, (3, 5), i)
    for i, name in enumerate(sorted(FLOATS)):
        tensors[f"layer_{name.lower()}.weight"] = _tensor(_TYPES[name], (128, 256), 100 + i)
    path = tmp_path / "every.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "every dtype"})
    return path, tensors


def test_inspect_reads_every_dtype(aq, every_dtype):
    path, tensors = every_dtype
    info = json.loads(aq("inspect", path, "--json").stdout)
    got = {t["name"]: t for t in info["tensors"]}
    with safe_open(str(path), "pt") as f:
        for name in f.keys():
            sl = f.get_slice(name)
            assert got[name]["dtype"] == sl.get_dtype()
            assert got[name]["shape"] == list(sl.get_shape())
    assert set(got) == set(tensors)
    assert info["parameters"] == sum(t.numel() for t in tensors.values())


def test_roundtrip_every_dtype(aq, every_dtype, tmp_path):
    path, tensors = every_dtype
    out = tmp_path / "q.arrow"
    # The plain path (one scheme for every tensor; small tensors kept by --min-elements).
    aq("quantize", path, "-o", out, "--bits", "8", "--scheme", "affine", "--quiet")
    back = tmp_path / "back.safetensors"
    aq("dequantize", out, "-o", back)
    restored = load_file(str(back))
    with safe_open(str(back), "pt") as f:
        assert f.metadata() == {"format": "pt", "note": "every dtype"}
    assert set(restored) == set(tensors)
    for name, orig in tensors.items():
        got = restored[name]
        assert got.shape == orig.shape, name
        if not orig.dtype.is_floating_point or orig.dtype in (torch.float8_e4m3fn,
                                                              torch.float8_e5m2,
                                                              torch.float8_e4m3fnuz,
                                                              torch.float8_e5m2fnuz):
            # Carried through unchanged, byte for byte.
            assert got.dtype == orig.dtype, name
            assert got.view(torch.uint8).equal(orig.view(torch.uint8)) if orig.dtype != torch.bool \
                else got.equal(orig), name
            continue
        want = torch.float32 if orig.dtype == torch.float64 else orig.dtype
        assert got.dtype == want, name
        a = orig.to(torch.float64)
        b = got.to(torch.float64)
        if name.startswith("t_"):
            # Small tensors are kept (float64 narrowed to float32).
            assert torch.equal(b, orig.to(want).to(torch.float64)), name
        else:
            # Quantized at 8 bits: every value within one step of its group's range.
            err = (a - b).abs().max().item()
            assert err <= (a.max() - a.min()).item() / 255 + 1e-2, (name, err)
            cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
            assert cos > 0.9999, (name, cos)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_dequantize_dtype_option(aq, every_dtype, tmp_path, dtype):
    path, _ = every_dtype
    out = tmp_path / "q.arrow"
    aq("quantize", path, "-o", out, "--quiet")
    back = tmp_path / "back.safetensors"
    aq("dequantize", out, "-o", back, "--dtype", dtype)
    want = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[dtype]
    with safe_open(str(back), "pt") as f:
        for name in f.keys():
            got = f.get_slice(name).get_dtype()
            if name.startswith("layer_") or name in ("t_f32", "t_f16", "t_bf16", "t_f64"):
                assert got == want, name
            else:
                assert got != want or name == f"t_{want.lower()}", name


def test_sharded_checkpoint(aq, tmp_path):
    """A checkpoint split in shards by huggingface_hub, read through its index."""
    from huggingface_hub import save_torch_state_dict
    g = torch.Generator().manual_seed(7)
    state = {f"blocks.{i}.weight": torch.randn(64, 128, generator=g) for i in range(6)}
    state["blocks.0.bias"] = torch.randn(64, generator=g)
    save_torch_state_dict(state, str(tmp_path), max_shard_size="80KB")
    index = tmp_path / "model.safetensors.index.json"
    assert index.exists()
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert len(shards) > 1
    info = json.loads(aq("inspect", index, "--json").stdout)
    assert {t["name"] for t in info["tensors"]} == set(state)
    out = tmp_path / "q.arrow"
    aq("quantize", tmp_path, "-o", out, "--quiet", "--bits", "8")
    back = tmp_path / "back.safetensors"
    aq("dequantize", out, "-o", back)
    restored = load_file(str(back))
    for name, t in state.items():
        cos = torch.nn.functional.cosine_similarity(t.flatten(), restored[name].flatten(), dim=0)
        assert cos > 0.9999, name
    assert torch.equal(restored["blocks.0.bias"], state["blocks.0.bias"])


def test_quantized_rows_match_an_independent_dequantizer(aq, every_dtype, tmp_path):
    """The model file's six seed columns alone restore the weights (pyarrow + numpy)."""
    import pyarrow as pa
    import pyarrow.ipc
    path, tensors = every_dtype
    out = tmp_path / "q.arrow"
    aq("quantize", path, "-o", out, "--quiet", "--bits", "4", "--group-size", "64")
    back = tmp_path / "back.safetensors"
    aq("dequantize", out, "-o", back, "--dtype", "f32")
    ours = load_file(str(back))
    table = pa.ipc.open_file(str(out)).read_all()
    assert table.column_names[:6] == ["layer_name", "quantized_data", "scales", "zero_points",
                                      "shape", "bit_width"]
    assert table.column_names[6:] == ["group_size", "scheme", "source_dtype", "sqnr_db",
                                      "cosine", "max_abs_error", "checksum"]
    md = table.schema.metadata
    assert md[b"arrowquant.format_version"] == b"2"
    assert json.loads(md[b"arrowquant.model_metadata"]) == {"format": "pt", "note": "every dtype"}
    for row in table.to_pylist():
        if row["scheme"] != "affine":
            continue
        shape = row["shape"]
        n = int(np.prod(shape))
        codes = np.frombuffer(row["quantized_data"], np.uint8)
        q = np.stack([codes & 15, codes >> 4], axis=1).reshape(-1)[:n].astype(np.float32)
        cols = n // shape[0]
        g = row["group_size"]
        gpr = -(-cols // g)
        scale = np.repeat(np.asarray(row["scales"], np.float32).reshape(shape[0], gpr), g,
                          axis=1)[:, :cols].reshape(-1)
        zp = np.repeat(np.asarray(row["zero_points"], np.float32).reshape(shape[0], gpr), g,
                       axis=1)[:, :cols].reshape(-1)
        x = (q - zp) * scale
        np.testing.assert_array_equal(x, ours[row["layer_name"]].numpy().reshape(-1))
        assert row["sqnr_db"] > 15 and 0.98 < row["cosine"] <= 1.0
