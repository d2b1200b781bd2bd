"""Model files from outside are validated row by row: pyarrow writes files that are wrong in
one way each, and every command refuses them with one line, naming the layer."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from safetensors.numpy import load_file, save_file

META = {b"arrowquant.format_version": b"1", b"arrowquant.scheme": b"affine",
        b"arrowquant.group_size": b"8", b"arrowquant.packing": b"lsb-first",
        b"arrowquant.model_metadata": b"{}"}


def _row(**kw):
    row = {"layer_name": "w", "quantized_data": bytes([0x21] * 8), "scales": [1.0, 1.0],
           "zero_points": [0.0, 0.0], "shape": [2, 8], "bit_width": 4, "group_size": 8,
           "scheme": "affine", "source_dtype": "F32", "sqnr_db": 20.0, "cosine": 0.99,
           "max_abs_error": 0.1}
    row.update(kw)
    return row


SCHEMA = pa.schema([("layer_name", pa.utf8()), ("quantized_data", pa.binary()),
                    ("scales", pa.list_(pa.float32())), ("zero_points", pa.list_(pa.float32())),
                    ("shape", pa.list_(pa.int64())), ("bit_width", pa.uint8()),
                    ("group_size", pa.uint32()), ("scheme", pa.utf8()),
                    ("source_dtype", pa.utf8()), ("sqnr_db", pa.float64()),
                    ("cosine", pa.float64()), ("max_abs_error", pa.float64())], metadata=META)


def _write(path, rows, schema=SCHEMA):
    t = pa.Table.from_pylist(rows, schema=schema)
    with pa.ipc.new_file(str(path), t.schema) as w:
        w.write_table(t)
    return path


def test_foreign_file_restores(aq, tmp_path):
    """A model file written by pyarrow alone (not by us) restores as the format says."""
    f = _write(tmp_path / "ok.arrow", [_row(), _row(layer_name="k", scheme="raw", bit_width=32,
                                                   group_size=0, scales=[], zero_points=[],
                                                   shape=[3], quantized_data=np.float32(
                                                       [1, 2, 3]).tobytes())])
    aq("dequantize", f, "-o", tmp_path / "ok.safetensors")
    got = load_file(str(tmp_path / "ok.safetensors"))
    np.testing.assert_array_equal(got["w"], np.tile(np.float32([1, 2]), 8).reshape(2, 8))
    np.testing.assert_array_equal(got["k"], np.float32([1, 2, 3]))


@pytest.mark.parametrize("bad,expect", [
    (dict(quantized_data=bytes(7)), "7 packed bytes and 2 groups, expected 8 and 2"),
    (dict(scales=[1.0]), "1 scales and 2 zero points"),
    (dict(bit_width=3), "Invalid bit_width: 3"),
    (dict(scheme="magic"), "unknown scheme 'magic'"),
    (dict(shape=[2, -8]), "negative"),
    (dict(scales=[1.0, float("nan")]), "not finite"),
    (dict(scheme="raw", bit_width=32, group_size=0, scales=[], zero_points=[]),
     "must have bit_width 32, 64 bytes"),
])
def test_bad_rows(aq, tmp_path, bad, expect):
    f = _write(tmp_path / "bad.arrow", [_row(layer_name="ok"), _row(**bad)])
    out = tmp_path / "out"
    out.mkdir()
    aq.fails("dequantize", f, "-o", out / "x.safetensors", expect=expect, leaves_nothing_in=out)
    # The layer is named.
    p = aq("dequantize", f, "-o", out / "x.safetensors", check=False)
    assert "'w'" in p.stderr or "Layer 'w'" in p.stderr, p.stderr


def test_missing_column_and_version(aq, tmp_path):
    schema = SCHEMA.remove(SCHEMA.get_field_index("source_dtype"))
    rows = [{k: v for k, v in _row().items() if k != "source_dtype"}]
    f = _write(tmp_path / "nocol.arrow", rows, schema)
    aq.fails("inspect", f, expect="column 'source_dtype' is missing")
    meta = dict(META)
    meta[b"arrowquant.format_version"] = b"9"
    f = _write(tmp_path / "v9.arrow", [_row()], SCHEMA.with_metadata(meta))
    aq.fails("report", f, "-o", tmp_path / "r.html", expect="format_version '9'",
             leaves_nothing_in=None)
    assert not (tmp_path / "r.html").exists()


def test_compare_reports_differences(aq, tmp_path):
    rng = np.random.default_rng(1)
    a = {"x": rng.standard_normal((64, 256)).astype(np.float32),
         "y": rng.standard_normal((64, 256)).astype(np.float32)}
    save_file(a, str(tmp_path / "a.safetensors"))
    b = dict(a)
    b["x"] = a["x"] + 0.01
    del b["y"]
    save_file(b, str(tmp_path / "b.safetensors"))
    p = aq("compare", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--json",
           check=False)
    assert p.returncode == 3
    r = json.loads(p.stdout)
    assert r["missing"] == 1
    x = [t for t in r["tensors"] if t["name"] == "x"][0]
    want = 10 * np.log10((a["x"].astype(np.float64) ** 2).sum() / (64 * 256 * 0.01 ** 2))
    assert abs(x["sqnr_db"] - want) < 0.01
