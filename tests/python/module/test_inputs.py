"""Inputs other than the capsule methods of pyarrow objects, and the results' own interface."""
import os
import subprocess
import sys
import textwrap

import pytest

from aqmodule_util import EXPECTED_COLUMNS, make_batch, pa, weights


class LegacyBatch:
    """A producer with only pyarrow's older _export_to_c (no PyCapsule methods)."""

    def __init__(self, batch):
        self._batch = batch

    def _export_to_c(self, array_ptr, schema_ptr):
        self._batch._export_to_c(array_ptr, schema_ptr)


class LegacyTable:
    """Older pyarrow tables: to_reader(), whose reader has _export_to_c(stream_ptr)."""

    def __init__(self, table):
        self._table = table

    def to_reader(self):
        return LegacyReader(self._table.to_reader())


class LegacyReader:
    def __init__(self, reader):
        self._reader = reader

    def read_next_batch(self):
        return self._reader.read_next_batch()

    def _export_to_c(self, stream_ptr):
        self._reader._export_to_c(stream_ptr)


def test_export_to_c_fallback(quantizer):
    batch = make_batch([("a", weights(1000)), ("b", weights(500, seed=1))])
    expected = quantizer.quantize_arrow_batch(batch)
    assert quantizer.quantize_arrow_batch(LegacyBatch(batch)).equals(expected)
    assert quantizer.quantize_arrow(LegacyBatch(batch)).equals(pa.Table.from_batches([expected]))
    table = pa.Table.from_batches([batch, batch])
    result = quantizer.quantize_arrow(LegacyTable(table))
    assert result.num_rows == 4
    assert quantizer.quantize_arrow(LegacyReader(table.to_reader())).equals(result)


def test_nanoarrow_and_readers_as_producers(quantizer):
    na = pytest.importorskip("nanoarrow")
    batch = make_batch([("a", weights(1000)), ("b", weights(500, seed=1))])
    expected = quantizer.quantize_arrow_batch(batch)
    assert quantizer.quantize_arrow_batch(na.c_array(batch)).equals(expected)
    assert quantizer.quantize_arrow(na.c_array_stream(batch)).num_rows == 2
    reader = pa.RecordBatchReader.from_batches(batch.schema, iter([batch, batch]))
    assert quantizer.quantize_arrow(reader).num_rows == 4


def test_sliced_batch(quantizer):
    batch = make_batch([(f"l{i}", weights(300, seed=i)) for i in range(6)])
    sliced = batch.slice(2, 3)
    result = quantizer.quantize_arrow_batch(sliced)
    assert result.column("layer_name").to_pylist() == ["l2", "l3", "l4"]
    assert result.equals(quantizer.quantize_arrow_batch(make_batch(
        [(f"l{i}", weights(300, seed=i)) for i in range(2, 5)])))


def test_results_speak_the_capsule_interface(quantizer):
    pl = pytest.importorskip("polars")
    result = quantizer.quantize_arrow_batch(make_batch([("a", weights(1536, shape=(16, 96)))]))
    df = pl.DataFrame(result)
    assert df.columns == EXPECTED_COLUMNS
    assert df["bit_width"].to_list() == [4]


LIGHT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["pyarrow"] = None  # pyarrow cannot be imported in this process
    import numpy as np
    import arrow_quant_v2 as aq
    q = aq.ArrowQuantV2()
    w = np.random.default_rng(0).standard_normal(1536).astype(np.float32).reshape(16, 96)
    r = q.quantize_batch({"w": w})
    assert type(r) is aq.RecordBatch, type(r)
    assert r.num_rows == 1 and r.column("bit_width") == [4], r
    d = q.dequantize_arrow(r)
    assert type(d) is aq.RecordBatch and d.schema.names == ["layer_name", "weights", "shape"]
    assert np.abs(np.array(d.column("weights")[0]) - w.ravel()).max() < 0.5
    # the restored batch is a valid input: through the batch and the table API
    b = q.quantize_arrow_batch(d)
    t = q.quantize_arrow(d)
    assert type(t) is aq.Table and t.num_rows == 1
    assert t.column("quantized_data") == b.column("quantized_data")
    print("light ok")
    """
)


def test_light_objects_when_pyarrow_is_blocked():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", LIGHT_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "light ok" in out.stdout
