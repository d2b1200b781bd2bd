"""The quality options of the command: --min-accuracy (a cosine floor that moves tensors to more
bits) and --target-bpw (bits and scheme per tensor within a size budget), on the demo
generator's heavy-tailed UNet weights."""
import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from safetensors.numpy import load_file


@pytest.fixture(scope="module")
def unet(build_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "unet.safetensors"
    subprocess.run([str(build_dir / "examples" / "gen_unet"), str(path), "--width", "32",
                    "--seed", "7"], check=True, capture_output=True)
    return path


def _rows(path):
    with pa.ipc.open_file(str(path)) as r:
        return [x for x in r.read_all().to_pylist() if x["scheme"] != "raw"]


def _bytes(row):
    return len(row["quantized_data"]) + 4 * len(row["scales"]) + 4 * len(row["zero_points"])


def _sse(aq, src, model, tmp_path):
    """Total squared error of the quantized tensors, computed by numpy from the restored file."""
    back = tmp_path / (model.stem + ".safetensors")
    aq("dequantize", model, "-o", back)
    a, b = load_file(str(src)), load_file(str(back))
    return sum(float(((a[r["layer_name"]].astype(np.float64)
                       - b[r["layer_name"]].astype(np.float64)) ** 2).sum())
               for r in _rows(model))


def test_min_accuracy_moves_hard_tensors(aq, unet, tmp_path):
    plain, floor = tmp_path / "plain.arrow", tmp_path / "floor.arrow"
    s0 = json.loads(aq("quantize", unet, "-o", plain, "--bits", "2", "--scheme", "affine",
                       "--json", "--quiet").stdout)
    s1 = json.loads(aq("quantize", unet, "-o", floor, "--bits", "2", "--min-accuracy", "0.97",
                       "--json", "--quiet").stdout)
    assert s0["moved"] == []
    moved = {m["name"]: m for m in s1["moved"]}
    assert moved, "2-bit affine on heavy tails must fall below cosine 0.97 somewhere"
    r0 = {r["layer_name"]: r for r in _rows(plain)}
    r1 = {r["layer_name"]: r for r in _rows(floor)}
    for name, r in r1.items():
        if name in moved:
            m = moved[name]
            assert m["from_bits"] == 2 and m["to_bits"] == r["bit_width"] in (4, 8)
            assert m["cosine_before"] < 0.97 <= m["cosine"]
            assert m["cosine_before"] == pytest.approx(r0[name]["cosine"], abs=1e-6)
            # The bytes really changed: more bits, more data.
            assert len(r["quantized_data"]) > len(r0[name]["quantized_data"])
            assert r["cosine"] >= 0.97
        else:
            assert r["bit_width"] == 2 and r["quantized_data"] == r0[name]["quantized_data"]
            assert r["cosine"] >= 0.97
    assert s1["bytes_out"] > s0["bytes_out"]
    assert s1["min_sqnr_db"] > s0["min_sqnr_db"]
    # The human summary names them too.
    text = aq("quantize", unet, "-o", tmp_path / "f2.arrow", "--bits", "2",
              "--min-accuracy", "0.97", "--quiet").stdout
    assert text == ""
    text = aq("quantize", unet, "-o", tmp_path / "f2.arrow", "--bits", "2",
              "--min-accuracy", "0.97").stdout
    assert f"{len(moved)} tensors moved to more bits" in text
    assert next(iter(moved)) in text


@pytest.mark.parametrize("target", [3.0, 4.5])
def test_target_bpw_met_and_better_than_uniform_affine(aq, unet, tmp_path, target):
    out = tmp_path / "budget.arrow"
    s = json.loads(aq("quantize", unet, "-o", out, "--target-bpw", str(target), "--json",
                      "--quiet").stdout)
    rows = _rows(out)
    elements = sum(int(np.prod(r["shape"])) for r in rows)
    true_bpw = 8 * sum(_bytes(r) for r in rows) / elements
    assert true_bpw <= target
    assert true_bpw > target - 0.25  # the budget is used, not wasted
    assert s["quantized_bits_per_weight"] == pytest.approx(true_bpw, abs=1e-3)
    # The file's columns carry each tensor's choice, and the allocation adds up to them.
    seen = {}
    for r in rows:
        group = 512 if r["scheme"] == "kquant" else 128
        assert r["group_size"] == group and r["bit_width"] in (2, 4, 8)
        key = (r["scheme"], r["bit_width"])
        seen[key] = seen.get(key, 0) + 1
    assert {(a["scheme"], a["bits"]): a["tensors"] for a in s["allocation"]} == seen
    assert sum(a["bytes"] for a in s["allocation"]) == sum(_bytes(r) for r in rows)
    # inspect and report show each row's choice.
    listing = {x["name"]: x for x in json.loads(aq("inspect", out, "--json").stdout)["tensors"]}
    for r in rows:
        x = listing[r["layer_name"]]
        assert (x["scheme"], x["bit_width"], x["group_size"]) == \
            (r["scheme"], r["bit_width"], r["group_size"])
    aq("report", out, "-o", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert all(a["scheme"] in html for a in s["allocation"])
    # Uniform affine of the same size (4 bits in groups of 128 and 2 bits in groups of 64 cost
    # 4.5 and 3 bits per weight, plus the short last groups of some rows) loses more.
    bits, group = (4, 128) if target >= 4.5 else (2, 64)
    uni = tmp_path / "uniform.arrow"
    aq("quantize", unet, "-o", uni, "--bits", str(bits), "--group-size", str(group), "--quiet")
    uni_bpw = 8 * sum(_bytes(r) for r in _rows(uni)) / elements
    assert uni_bpw >= true_bpw - 0.02
    assert _sse(aq, unet, out, tmp_path) < 0.8 * _sse(aq, unet, uni, tmp_path)


def test_target_bpw_options(aq, unet, tmp_path):
    out = tmp_path / "o.arrow"
    s = json.loads(aq("quantize", unet, "-o", out, "--target-bpw", "4.5", "--scheme", "affine",
                      "--json", "--quiet").stdout)
    assert {a["scheme"] for a in s["allocation"]} == {"affine"}
    aq.fails("quantize", unet, "-o", out, "--target-bpw", "2", expect="smallest allocation",
             leaves_nothing_in=tmp_path)
    # Below the settings table's bound: refused before the model is read.
    aq.fails("quantize", unet, "-o", out, "--target-bpw", "1",
             expect="--target-bpw: '1' is not 0 (off) or a number in [2, 32]",
             leaves_nothing_in=tmp_path)
    aq.fails("quantize", unet, "-o", out, "--scheme", "affine,kquant",
             expect="needs --target-bpw")
    aq.fails("quantize", unet, "-o", out, "--target-bpw", "4", "--scheme", "affine,magic",
             expect="magic")
    aq.fails("quantize", unet, "-o", out, "--min-accuracy", "1.5", expect="--min-accuracy")
