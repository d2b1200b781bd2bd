"""Without pyarrow the module returns its own light objects (num_rows, schema, column(name),
to_pylist(), PyCapsule export). scripts/test runs this file in .venv-nopyarrow, with polars as
the producer and nanoarrow as a consumer; where pyarrow is installed it is skipped."""
import importlib.util
import math

import pytest

if importlib.util.find_spec("pyarrow") is not None:
    pytest.skip("pyarrow is installed: this file runs in .venv-nopyarrow (scripts/test)",
                allow_module_level=True)

import nanoarrow as na  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import arrow_quant_v2 as aq  # noqa: E402

RESULT_COLUMNS = ["layer_name", "quantized_data", "scales", "zero_points", "shape", "bit_width"]
RESULT_TYPES = ["string", "binary", "list<float32>", "list<float32>", "list<int64>", "uint8"]


def weights(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def frame(layers, with_shape=True):
    cols = {
        "layer_name": pl.Series([n for n, _ in layers], dtype=pl.String),
        "weights": pl.Series([a.ravel().tolist() for _, a in layers], dtype=pl.List(pl.Float32)),
    }
    if with_shape:
        cols["shape"] = pl.Series([list(a.shape) for _, a in layers], dtype=pl.List(pl.Int64))
    return pl.DataFrame(cols)


@pytest.fixture
def q():
    return aq.ArrowQuantV2(mode="base")  # plain affine: the sizes below are affine's


def test_pyarrow_is_really_absent():
    with pytest.raises(ImportError):
        import pyarrow  # noqa: F401


def test_batch_result_is_a_light_record_batch(q):
    result = q.quantize_arrow_batch(frame([("layer.0.weight", weights(1000))]), bit_width=4)
    assert type(result) is aq.RecordBatch
    assert result.num_rows == 1 and len(result) == 1
    assert result.schema.names == RESULT_COLUMNS
    assert result.schema.types == RESULT_TYPES
    assert result.schema.metadata[b"arrowquant.scheme"] == b"affine"
    assert result.column("layer_name") == ["layer.0.weight"]
    assert result.column("bit_width") == [4]
    assert len(result.column("quantized_data")[0]) == 500
    assert len(result.column("scales")[0]) == math.ceil(1000 / 128)
    row = result.to_pylist()[0]
    assert list(row) == RESULT_COLUMNS and row["shape"] == [1000]


def test_table_result_is_a_light_table_with_the_same_bytes(q):
    layers = [(f"l{i}", weights(2000 + i, seed=i)) for i in range(5)]
    df = frame(layers)
    batch = q.quantize_arrow_batch(df)
    table = q.quantize_arrow(df)
    assert type(table) is aq.Table
    assert table.num_rows == 5
    assert table.schema == batch.schema
    assert table.column("quantized_data") == batch.column("quantized_data")
    assert table.to_pylist() == batch.to_pylist()
    assert [b.num_rows for b in table.to_batches()] == [5]


def test_errors_keep_their_text(q):
    with pytest.raises(ValueError, match=r"^Invalid bit_width: 3\. Must be 2, 4, or 8$"):
        q.quantize_arrow_batch(frame([("w", weights(10))]), bit_width=3)
    with pytest.raises(ValueError, match="Missing required column 'layer_name'"):
        q.quantize_arrow_batch(pl.DataFrame({"weights": [[1.0, 2.0]]}))
    bad = weights(1000)
    bad[500] = np.nan
    with pytest.raises(ValueError, match="Layer 'bad' contains NaN or Inf at index 500"):
        q.quantize_arrow(frame([("bad", bad)]))


def test_dequantize_light_results(q):
    w = weights(3000).reshape(10, 300)
    result = q.quantize_arrow_batch(frame([("w", w)]))
    restored = q.dequantize_arrow(result)
    assert type(restored) is aq.RecordBatch
    assert restored.schema.types == ["string", "list<float32>", "list<int64>"]
    got = np.array(restored.column("weights")[0], dtype=np.float32).reshape(10, 300)
    scales = np.array(result.column("scales")[0], dtype=np.float32).reshape(10, 3)
    bound = np.repeat(scales, 128, axis=1)[:, :300] / 2
    assert np.all(np.abs(got - w) <= bound * (1 + 1e-5) + 1e-6)
    as_table = q.dequantize_arrow(q.quantize_arrow(frame([("w", w)])))
    assert type(as_table) is aq.Table
    assert as_table.column("weights") == restored.column("weights")


def test_light_results_export_to_other_arrow_libraries(q):
    result = q.quantize_batch({"a": weights(1000), "b": weights(256, seed=1).reshape(2, 128)})
    assert type(result) is aq.RecordBatch
    df = pl.DataFrame(result)
    assert df.columns == RESULT_COLUMNS
    assert df["layer_name"].to_list() == ["a", "b"]
    assert df["shape"].to_list() == [[1000], [2, 128]]
    # exported twice, each export independent of the other and of the object
    first = na.Array(result)
    second = na.Array(result)
    assert len(first) == len(second) == 2
    del result
    assert list(first.child(0).to_pylist()) == ["a", "b"]
    assert list(second.child(5).to_pylist()) == [4, 4]
    table = q.quantize_arrow(df.select(["layer_name"]).with_columns(
        weights=pl.Series([weights(100).tolist(), weights(50).tolist()],
                          dtype=pl.List(pl.Float32))))
    stream = na.ArrayStream(table)
    assert [row[0] for row in stream.iter_tuples()] == ["a", "b"]


def test_dict_api_returns_light_objects(q):
    w = weights(4096).reshape(32, 128)
    result = q.quantize_batch({"w": w})
    assert type(result) is aq.RecordBatch
    assert result.column("shape") == [[32, 128]]
    assert q.quantize_arrow_batch(frame([("w", w)])).column("quantized_data") == \
        result.column("quantized_data")


def test_batch_api_joins_the_batches_of_a_stream(q):
    parts = [frame([(f"p{k}.l{i}", weights(300 + i, seed=k * 10 + i)) for i in range(2)])
             for k in range(3)]
    chunked = na.Array.from_chunks([na.Array(p).chunk(0) for p in parts])
    assert chunked.n_chunks == 3
    assert not hasattr(na.ArrayStream(chunked), "__arrow_c_array__")
    batch = q.quantize_arrow_batch(na.ArrayStream(chunked))  # a stream of three batches
    assert type(batch) is aq.RecordBatch
    table = q.quantize_arrow(na.ArrayStream(chunked))
    assert len(table.to_batches()) == 3
    assert batch.column("layer_name") == [f"p{k}.l{i}" for k in range(3) for i in range(2)]
    assert batch.to_pylist() == table.to_pylist()
    assert batch.schema == table.schema
