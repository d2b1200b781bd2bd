"""Every quantization scheme goes end to end through the command: quantize -> inspect ->
report -> dequantize -> compare, on the demo generator's heavy-tailed UNet weights; a model
file's kquant rows are validated against kquant's own layout."""
import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from safetensors.numpy import load_file

SCHEMES = ["affine", "affine_search", "kquant"]


@pytest.fixture(scope="module")
def unet(build_dir, tmp_path_factory):
    """The demo's generator at width 32: 10.4 M parameters, outlier rows and columns."""
    path = tmp_path_factory.mktemp("unet") / "unet.safetensors"
    subprocess.run([str(build_dir / "examples" / "gen_unet"), str(path), "--width", "32",
                    "--seed", "7"], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def quantized(aq, unet, tmp_path_factory):
    """Each scheme at 4 bits: (model file, quantize summary)."""
    d = tmp_path_factory.mktemp("q")
    out = {}
    for s in SCHEMES:
        f = d / f"{s}.arrow"
        summary = json.loads(aq("quantize", unet, "-o", f, "--bits", "4", "--scheme", s,
                                "--json", "--quiet").stdout)
        out[s] = (f, summary)
    return out


def _table(path):
    with pa.ipc.open_file(str(path)) as r:
        return r.read_all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_round_trip(aq, unet, quantized, tmp_path, scheme):
    f, summary = quantized[scheme]
    group = 512 if scheme == "kquant" else 128
    assert summary["group_size"] == group
    t = _table(f)
    meta = t.schema.metadata
    assert meta[b"arrowquant.scheme"] == scheme.encode()
    assert meta[b"arrowquant.group_size"] == str(group).encode()
    rows = t.to_pylist()
    q = [r for r in rows if r["scheme"] != "raw"]
    assert len(q) == summary["quantized"] > 0
    assert {(r["scheme"], r["group_size"], r["bit_width"]) for r in q} == {(scheme, group, 4)}

    listing = json.loads(aq("inspect", f, "--json").stdout)
    by_name = {x["name"]: x for x in listing["tensors"]}
    for r in q:
        assert by_name[r["layer_name"]]["scheme"] == scheme
        assert by_name[r["layer_name"]]["group_size"] == group

    aq("report", f, "-o", tmp_path / "r.html")
    assert scheme in (tmp_path / "r.html").read_text()

    back = tmp_path / "back.safetensors"
    aq("dequantize", f, "-o", back)
    src, got = load_file(str(unet)), load_file(str(back))
    assert set(src) == set(got)
    # compare reads both files; its figures agree with those recorded while quantizing and
    # with numpy's, tensor by tensor.
    cmp = json.loads(aq("compare", unet, back, "--json").stdout)
    cmp_by = {x["name"]: x for x in cmp["tensors"]}
    for r in q:
        a = src[r["layer_name"]].astype(np.float64).ravel()
        b = got[r["layer_name"]].astype(np.float64).ravel()
        sqnr = 10 * np.log10((a * a).sum() / ((a - b) ** 2).sum())
        assert sqnr == pytest.approx(r["sqnr_db"], abs=1e-6)
        assert cmp_by[r["layer_name"]]["sqnr_db"] == pytest.approx(sqnr, abs=1e-3)
    # compare straight against the model file gives the same figures.
    cmp2 = json.loads(aq("compare", unet, f, "--json").stdout)
    for x in cmp2["tensors"]:
        if x["name"] in cmp_by and isinstance(x["sqnr_db"], float):
            assert x["sqnr_db"] == pytest.approx(cmp_by[x["name"]]["sqnr_db"], abs=1e-3)


def _quantized_bpw(path):
    """Bits per weight of the quantized rows, every byte of the file's row counted."""
    rows = [r for r in _table(path).to_pylist() if r["scheme"] != "raw"]
    size = sum(len(r["quantized_data"]) + 4 * len(r["scales"]) + 4 * len(r["zero_points"])
               for r in rows)
    return 8 * size / sum(int(np.prod(r["shape"])) for r in rows)


def test_kquant_beats_affine_on_heavy_tails(quantized):
    aff, kq = quantized["affine"][1], quantized["kquant"][1]
    bpw_aff, bpw_kq = _quantized_bpw(quantized["affine"][0]), _quantized_bpw(quantized["kquant"][0])
    assert 4.5 <= bpw_aff < 4.52  # short last groups of some rows
    # Rows whose length is not a multiple of 512 end in a short super-block: a little more.
    assert bpw_kq < 4.65
    assert kq["mean_sqnr_db"] > aff["mean_sqnr_db"] + 3.0
    assert kq["min_sqnr_db"] > aff["min_sqnr_db"] + 3.0


def _corrupt(src, dst, name, **changes):
    t = _table(src)
    rows = t.to_pylist()
    for r in rows:
        if r["layer_name"] == name:
            r.update(changes)
    bad = pa.Table.from_pylist(rows, schema=t.schema)
    # The row checksum would catch any edit first: without the column (files written before
    # it), the values' own checks are what refuses them.
    bad = bad.drop_columns(["checksum"])
    with pa.ipc.new_file(str(dst), bad.schema) as w:
        w.write_table(bad)
    return dst


@pytest.mark.parametrize("change,expect", [
    ("short", "with the kquant scheme"),
    ("group", "kquant group_size is 128, expected 512"),
    ("affine_sized", "with the kquant scheme"),
])
def test_corrupted_kquant_row_refused(aq, quantized, tmp_path, change, expect):
    f = quantized["kquant"][0]
    t = _table(f)
    row = next(r for r in t.to_pylist() if r["scheme"] == "kquant")
    name, data = row["layer_name"], row["quantized_data"]
    n = int(np.prod(row["shape"]))
    if change == "short":
        kw = dict(quantized_data=data[:-1])
    elif change == "group":
        kw = dict(group_size=128)
    else:  # the codes alone, as an affine row of that shape would hold them
        kw = dict(quantized_data=data[: n * 4 // 8])
    bad = _corrupt(f, tmp_path / "bad.arrow", name, **kw)
    out = tmp_path / "out"
    out.mkdir()
    p = aq.fails("dequantize", bad, "-o", out / "x.safetensors", expect=expect,
                 leaves_nothing_in=out)
    assert f"'{name}'" in p.stderr
    aq.fails("inspect", bad, expect=expect)
