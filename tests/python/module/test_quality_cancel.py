"""Cancellation (a raising progress callback, Ctrl-C), the quality keywords (min_accuracy,
target_bpw, scheme) and the schemes of the modes."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from aqmodule_util import make_batch, pa, weights

from arrow_quant_v2 import ArrowQuantV2, QuantizationError
from arrow_quant_v2.arrow_quant_v2 import _setting_check


class Stop(Exception):
    pass


def _stopper():
    calls = []

    def callback(done, total):
        calls.append(done)
        if done == 2:
            raise Stop("stop at row 2")

    return calls, callback


@pytest.mark.parametrize("mode", ["diffusion", "base"])
@pytest.mark.parametrize("quality", [{}, {"min_accuracy": 0.9}, {"target_bpw": 5.0}])
def test_a_raising_callback_stops_a_batch_of_100_at_row_2(mode, quality):
    q = ArrowQuantV2(mode=mode)
    layers = [(f"l{i}", weights(600, seed=i)) for i in range(100)]
    batch = make_batch(layers)
    calls, cb = _stopper()
    with pytest.raises(Stop, match="stop at row 2"):
        q.quantize_arrow_batch(batch, progress_callback=cb, **quality)
    assert calls == [1, 2]
    calls, cb = _stopper()
    table = pa.Table.from_batches([make_batch(layers[i:i + 10]) for i in range(0, 100, 10)])
    with pytest.raises(Stop):
        q.quantize_arrow(table, progress_callback=cb, **quality)
    assert calls == [1, 2]
    calls, cb = _stopper()
    with pytest.raises(Stop):
        q.quantize_batch(dict(layers), progress_callback=cb, **quality)
    assert calls == [1, 2]
    # Still usable afterwards.
    assert q.quantize_arrow_batch(batch, **quality).num_rows == 100


_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np, pyarrow as pa
    from arrow_quant_v2 import ArrowQuantV2

    # Python's own SIGINT handler, whatever was inherited: a shell starts a background job with
    # SIGINT ignored, and Python then installs no handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    w = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    batch = pa.record_batch({"layer_name": ["w"], "weights": pa.array([w])})
    pulled = 0

    def batches():
        global pulled
        for _ in range(100_000):
            pulled += 1
            if pulled == 3:
                print("running", flush=True)
            yield batch

    reader = pa.RecordBatchReader.from_batches(batch.schema, batches())
    t0 = time.perf_counter()
    try:
        ArrowQuantV2(mode="base").quantize_arrow(reader, bit_width=8, scheme="affine_search")
    except KeyboardInterrupt:
        print(f"interrupted after {pulled} batches", flush=True)
        os._exit(3)  # no exit handlers: under LeakSanitizer, CPython's own leaks would fail it
    print("finished", flush=True)
""")


def test_ctrl_c_interrupts_a_long_quantize_arrow_promptly():
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(0.3)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, (out, err)
    pulled = int(out.split("interrupted after ")[1].split()[0])
    assert pulled < 100_000
    # One 1M-value layer is well under a second; a generous bound for a shared machine.
    assert took < 10, took


def _hard_and_easy():
    easy = (0.5 * (np.arange(4096) % 4)).astype(np.float32).reshape(64, 64)
    hard = weights(4096, seed=7, shape=(64, 64))
    return make_batch([("easy", easy), ("hard", hard)])


@pytest.mark.parametrize("mode", ["base", "diffusion"])
def test_min_accuracy_moves_the_hard_layer_to_more_bits(mode):
    q = ArrowQuantV2(mode=mode)
    batch = _hard_and_easy()
    plain = q.quantize_arrow_batch(batch, bit_width=2)
    assert plain.column("bit_width").to_pylist() == [2, 2]
    floor = q.quantize_arrow_batch(batch, bit_width=2, min_accuracy=0.99)
    bits = floor.column("bit_width").to_pylist()
    assert bits[0] == 2 and bits[1] in (4, 8)
    data_plain = plain.column("quantized_data").to_pylist()
    data_floor = floor.column("quantized_data").to_pylist()
    assert data_floor[0] == data_plain[0]
    assert data_floor[1] != data_plain[1] and len(data_floor[1]) > len(data_plain[1])
    # Same scheme for every row: no row_schemes; the restored layer meets the floor.
    assert b"arrowquant.row_schemes" not in floor.schema.metadata
    restored = np.array(q.dequantize_arrow(floor).column("weights")[1].as_py())
    original = batch.column("weights")[1].values.to_numpy()
    cos = restored @ original / np.linalg.norm(restored) / np.linalg.norm(original)
    assert cos >= 0.99
    # The table path and the dict path agree byte for byte.
    table = q.quantize_arrow(pa.Table.from_batches([batch]), bit_width=2, min_accuracy=0.99)
    assert table.column("quantized_data").to_pylist() == data_floor
    easy = batch.column("weights")[0].values.to_numpy().reshape(64, 64)
    as_dict = q.quantize_batch({"easy": easy, "hard": original.reshape(64, 64)}, bit_width=2,
                               min_accuracy=0.99)
    assert as_dict.column("bit_width").to_pylist() == bits


def _true_bpw(result):
    rows = result.to_pylist()
    size = sum(len(r["quantized_data"]) + 4 * len(r["scales"]) + 4 * len(r["zero_points"])
               for r in rows)
    elements = sum(int(np.prod(r["shape"])) for r in rows)
    return size * 8 / elements


@pytest.mark.parametrize("mode", ["base", "diffusion"])
@pytest.mark.parametrize("target", [3.5, 5.0, 7.0])
def test_target_bpw_stays_within_the_budget(mode, target):
    q = ArrowQuantV2(mode=mode)
    layers = [(f"l{i}", weights(8192, seed=i, shape=(16, 512)) * (i + 1)) for i in range(6)]
    outliers = weights(8192, seed=99)
    outliers[::97] *= 40
    layers.append(("outliers", outliers.reshape(16, 512)))
    batch = make_batch(layers)
    result = q.quantize_arrow_batch(batch, target_bpw=target)
    bpw = _true_bpw(result)
    assert bpw <= target
    assert bpw > target - 2.5
    table = q.quantize_arrow(pa.Table.from_batches([batch]), target_bpw=target)
    assert _true_bpw(table) <= target
    as_dict = q.quantize_batch(dict(layers), target_bpw=target)
    assert as_dict.column("quantized_data").to_pylist() == \
        result.column("quantized_data").to_pylist()


def test_quality_keywords_are_checked():
    q = ArrowQuantV2()
    batch = make_batch([("w", weights(1000, shape=(8, 125)))])
    # The bounds are the settings table's (min_accuracy is its min_cosine), as the command's
    # --min-accuracy / --target-bpw and DiffusionQuantConfig's: the message is the table's.
    for kw, setting, bad in (("min_accuracy", "min_cosine", 1.5),
                             ("min_accuracy", "min_cosine", 1.0),
                             ("target_bpw", "target_bpw", -1), ("target_bpw", "target_bpw", 40.0)):
        with pytest.raises(QuantizationError) as lib:
            _setting_check(setting, f"{bad:g}")
        with pytest.raises(QuantizationError) as e:
            q.quantize_arrow_batch(batch, **{kw: bad})
        assert str(e.value) == str(lib.value).replace(f"Invalid {setting}", f"Invalid {kw}")
        assert str(e.value).startswith(f"Invalid {kw}: ")
    with pytest.raises(QuantizationError, match="Invalid target_bpw: 1"):
        q.quantize_arrow_batch(batch, target_bpw=1.0)  # below the smallest allocation
    with pytest.raises(TypeError, match="min_accuracy must be a float"):
        q.quantize_batch({"w": weights(10)}, min_accuracy="high")
    with pytest.raises(TypeError):
        q.quantize_arrow_batch(batch, 4, 128, "affine", False, None, 0.9)  # keyword-only
    assert q.quantize_arrow_batch(batch, min_accuracy=np.float32(0.5)).num_rows == 1


def test_modes_and_schemes():
    batch = make_batch([("w", weights(2048, shape=(4, 512)))])

    def meta(result):
        md = result.schema.metadata
        return md[b"arrowquant.scheme"].decode(), int(md[b"arrowquant.group_size"])

    diffusion, base = ArrowQuantV2(mode="diffusion"), ArrowQuantV2(mode="base")
    assert meta(diffusion.quantize_arrow_batch(batch)) == ("kquant", 512)
    with pytest.raises(QuantizationError, match="needs calibration="):
        ArrowQuantV2(mode="time_aware").quantize_arrow_batch(batch)
    assert meta(base.quantize_arrow_batch(batch)) == ("affine", 128)
    assert meta(diffusion.quantize_arrow(batch)) == ("kquant", 512)
    assert meta(diffusion.quantize_batch({"w": weights(1000)})) == ("kquant", 512)
    # An explicit scheme overrides the mode.
    assert meta(diffusion.quantize_arrow_batch(batch, scheme="affine")) == ("affine", 128)
    assert meta(base.quantize_arrow_batch(batch, scheme="kquant")) == ("kquant", 512)
    assert meta(base.quantize_arrow_batch(batch, scheme="affine_search", group_size=64)) == \
        ("affine_search", 64)
    assert meta(base.quantize_batch({"w": weights(1000)}, scheme="kquant")) == ("kquant", 512)
    # kquant has no group size: the mode picks affine_search for one; explicit kquant refuses.
    assert meta(diffusion.quantize_arrow_batch(batch, group_size=64)) == ("affine_search", 64)
    assert meta(diffusion.quantize_arrow_batch(batch, scheme="kquant", group_size=512)) == \
        ("kquant", 512)
    with pytest.raises(QuantizationError, match="scheme 'kquant' always uses super-blocks"):
        diffusion.quantize_arrow_batch(batch, scheme="kquant", group_size=64)
    # Every scheme comes back through dequantize_arrow.
    for scheme in ("affine", "affine_search", "kquant"):
        result = base.quantize_arrow_batch(batch, scheme=scheme, bit_width=8)
        restored = np.array(base.dequantize_arrow(result).column("weights")[0].as_py())
        original = batch.column("weights")[0].values.to_numpy()
        assert np.max(np.abs(restored - original)) < 0.05, scheme
