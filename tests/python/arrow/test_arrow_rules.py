"""Diffusion layer rules and calibration in the Arrow batch path (aq_batch_options.rules and
.calib), through ctypes with pyarrow as the producer and the consumer: kept rows are the
float16 (or float32) bytes numpy gives, pyarrow reads and round-trips the result, and the
calibration's importance reaches the quantized rows."""
import ctypes

import numpy as np
import pyarrow as pa
import pytest

from aqarrow import AqError, AqFailure, export_batch, release

UNET = [
    ("conv_in.weight", (16, 4, 3, 3), 8),
    ("conv_in.bias", (16,), 16),
    ("time_embedding.linear_1.weight", (64, 16), 8),
    ("down_blocks.0.resnets.0.norm1.weight", (16,), 16),
    ("down_blocks.0.resnets.0.conv1.weight", (16, 16, 3, 3), 4),
    ("conv_out.weight", (4, 16, 3, 3), 8),
]


def weights(seed=0):
    rng = np.random.default_rng(seed)
    out = [(rng.standard_normal(int(np.prod(shape))) * 0.05).astype(np.float32)
           for _, shape, _ in UNET]
    # Values float16 rounds, subnormal in float16, and exact ties of its grid.
    out[1][:4] = np.array([1e-6, -3.3e-5, 0.1, 1.0 + 2.0**-11], dtype=np.float32)
    return out


def batch_of(ws, names=None):
    names = names or [n for n, _, _ in UNET]
    return pa.RecordBatch.from_pydict({
        "layer_name": names,
        "weights": pa.array([w.tolist() for w in ws], pa.list_(pa.float32())),
        "shape": pa.array([list(s) for _, s, _ in UNET][:len(ws)], pa.list_(pa.int64())),
    })


@pytest.fixture
def lib(aql):
    L = aql.lib
    vp = ctypes.c_void_p
    L.aq_rules_create.argtypes = [ctypes.c_int, vp, ctypes.POINTER(ctypes.c_char_p),
                                  ctypes.c_size_t, ctypes.POINTER(vp), ctypes.POINTER(AqError)]
    L.aq_rules_free.argtypes = [vp]
    L.aq_rules_add_override_spec.argtypes = [vp, ctypes.c_char_p, ctypes.POINTER(AqError)]
    L.aq_calib_create.argtypes = [ctypes.POINTER(vp), ctypes.POINTER(AqError)]
    L.aq_calib_free.argtypes = [vp]
    L.aq_calib_add_batch.argtypes = [vp, vp, vp, ctypes.POINTER(AqError)]
    L.aq_calib_finish.argtypes = [vp, ctypes.c_int, ctypes.POINTER(AqError)]
    return L


@pytest.fixture
def rules(lib):
    names = (ctypes.c_char_p * len(UNET))(*[n.encode() for n, _, _ in UNET])
    r, e = ctypes.c_void_p(), AqError()
    # AQ_FAMILY_AUTO, the "local" profile (NULL).
    assert lib.aq_rules_create(0, None, names, len(UNET), ctypes.byref(r), ctypes.byref(e)) == 0
    yield r
    lib.aq_rules_free(r)


def make_calib(lib, layer, ms):
    table = pa.RecordBatch.from_pydict({
        "layer_name": [layer, layer],
        "timestep_group": pa.array([0, 1], pa.int64()),
        "mean_square": pa.array([ms.tolist(), (ms * 10).tolist()], pa.list_(pa.float32())),
    })
    c, e = ctypes.c_void_p(), AqError()
    assert lib.aq_calib_create(ctypes.byref(c), ctypes.byref(e)) == 0
    s, a = export_batch(table)
    st = lib.aq_calib_add_batch(c, ctypes.addressof(s), ctypes.addressof(a), ctypes.byref(e))
    release(a)
    release(s)
    assert st == 0, e.message
    assert lib.aq_calib_finish(c, 0, ctypes.byref(e)) == 0, e.message
    return c



def assert_restored(batch, ws, tol):
    """Dequantized UNET rows: kept (16-bit) rows are exactly their float16 values, the others
    within tol of the originals ws."""
    rw = batch.column("weights").to_pylist()
    for i, (_, _, bits) in enumerate(UNET):
        got = np.asarray(rw[i], dtype=np.float32)
        if bits == 16:
            want = ws[i].astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        else:
            assert np.max(np.abs(got - ws[i])) < tol

def test_kept_rows_are_numpy_float16_and_pyarrow_reads_the_result(aql, rules):
    ws = weights(1)
    ctx = aql.ctx(2, 64)  # not used: the rules' profile decides
    try:
        res = aql.quantize_opts(batch_of(ws), ctx, rules=rules)
        res.validate(full=True)
        assert res.schema.metadata[b"arrowquant.scheme"] == b"kquant"
        assert res.schema.metadata[b"arrowquant.group_size"] == b"512"
        assert b"arrowquant.row_schemes" not in res.schema.metadata
        assert res.column("bit_width").to_pylist() == [b for _, _, b in UNET]
        packed = res.column("quantized_data").to_pylist()
        for i, (_, _, bits) in enumerate(UNET):
            if bits == 16:
                assert packed[i] == ws[i].astype(np.float16).tobytes()
                assert res.column("scales")[i].as_py() == []
                assert res.column("zero_points")[i].as_py() == []
        # pyarrow writes and reads the result back unchanged.
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, res.schema) as w:
            w.write_batch(res)
        back = pa.ipc.open_file(sink.getvalue()).read_all().to_batches()[0]
        assert back.equals(res) and back.schema.metadata == res.schema.metadata
        # Dequantized, a kept row is exactly its float16 values.
        restored = aql.dequantize(back)
        assert_restored(restored, ws, 0.05)
    finally:
        aql.lib.aq_ctx_free(ctx)


def test_values_beyond_float16_keep_the_row_in_float32(aql, rules):
    ws = weights(2)
    ws[1][5] = 1.0e5
    ctx = aql.ctx()
    try:
        res = aql.quantize_opts(batch_of(ws), ctx, rules=rules)
        assert res.column("bit_width")[1].as_py() == 32
        assert res.column("quantized_data")[1].as_py() == ws[1].tobytes()
        restored = aql.dequantize(res).column("weights")[1].values.to_numpy()
        np.testing.assert_array_equal(restored, ws[1])
    finally:
        aql.lib.aq_ctx_free(ctx)


def test_contradictory_overrides_name_the_tensor(aql, lib, rules):
    e = AqError()
    assert lib.aq_rules_add_override_spec(rules, b"down_blocks.*=2", ctypes.byref(e)) == 0
    assert lib.aq_rules_add_override_spec(rules, b"*.conv1.weight=8", ctypes.byref(e)) == 0
    ctx = aql.ctx()
    try:
        with pytest.raises(AqFailure, match="Contradictory overrides for tensor "
                                            "'down_blocks.0.resnets.0.conv1.weight'"):
            aql.quantize_opts(batch_of(weights(3)), ctx, rules=rules)
    finally:
        aql.lib.aq_ctx_free(ctx)


def test_calibration_reaches_the_rows_that_have_statistics(aql, lib, rules):
    ws = weights(4)
    ms = np.where(np.arange(16) % 4 == 0, 50.0, 0.5).astype(np.float32)
    calib = make_calib(lib, "down_blocks.0.resnets.0.conv1", ms)
    ctx = aql.ctx()
    try:
        plain = aql.quantize_opts(batch_of(ws), ctx, rules=rules)
        cal = aql.quantize_opts(batch_of(ws), ctx, rules=rules, calib=calib)
        p, c = plain.column("quantized_data").to_pylist(), cal.column("quantized_data").to_pylist()
        conv1 = 4
        assert p[conv1] != c[conv1]
        assert [p[i] for i in range(len(UNET)) if i != conv1] == \
            [c[i] for i in range(len(UNET)) if i != conv1]
        # The importance-weighted error of conv1 goes down: input channel i of a
        # [out, in, kh, kw] weight has importance ms[i] / mean(ms) (both groups agree).
        imp = np.broadcast_to((ms / ms.mean())[None, :, None, None], (16, 16, 3, 3)).ravel()
        errs = []
        for res in (plain, cal):
            got = np.asarray(aql.dequantize(res).column("weights")[conv1].as_py(), np.float32)
            errs.append(float(np.sum(imp * (got.astype(np.float64) - ws[conv1]) ** 2)))
        assert errs[1] < errs[0]
    finally:
        aql.lib.aq_ctx_free(ctx)
        lib.aq_calib_free(calib)


def test_the_module_dequantizes_kept_rows_and_raw_row_schemes(aql, rules):
    """The Python module's dequantize_arrow shares the C restore path: kept rows come back
    exactly, also beside arrowquant.row_schemes (a budget over two schemes)."""
    arrow_quant_v2 = pytest.importorskip("arrow_quant_v2")
    ws = weights(5)
    schemes = (ctypes.c_int * 2)(0, 2)  # affine, kquant
    ctx = aql.ctx(4, 256)  # affine's group size: one group per row of conv1
    try:
        # Within 2.6 bits per weight over conv1 and proj_in, conv1 takes affine at 2 bits
        # (2.44 bpw against kquant's 2.64).
        res = aql.quantize_opts(batch_of(ws), ctx, rules=rules, target_bpw=2.6,
                                budget_schemes=ctypes.cast(schemes, ctypes.c_void_p),
                                n_budget_schemes=2)
    finally:
        aql.lib.aq_ctx_free(ctx)
    rs = res.schema.metadata[b"arrowquant.row_schemes"].decode()
    assert rs.count('{"scheme":"raw","group_size":0}') == 2
    assert '{"scheme":"affine","group_size":256}' in rs
    back = arrow_quant_v2.ArrowQuantV2(mode="base").dequantize_arrow(res)
    assert_restored(back, ws, 0.1)
