"""polars (Rust Arrow) and duckdb (C++) as producers through their Arrow PyCapsule exports,
and duckdb as the consumer of our output stream (SQL over the quantized result). The C
structures travel by pointer, straight out of the capsules, into the library; results are
checked byte for byte against the independent numpy implementation of docs/format.md."""
import numpy as np
import pyarrow as pa
import pytest

from aqarrow import AqFailure, capsule_pointer, pull_batches, release

pl = pytest.importorskip("polars")
duckdb = pytest.importorskip("duckdb")

MISSING = ("Missing required column '{}'. Expected schema: {{layer_name: string, weights: "
           "list<float32>, shape: list<int64>}}")


def polars_frame(n=5, per=120, dtype=pl.Float32, seed=0):
    rng = np.random.default_rng(seed)
    np_dtype = {pl.Float32: np.float32, pl.Float64: np.float64, pl.Float16: np.float16}[dtype]
    values = [(rng.standard_normal(per) * (i + 1)).astype(np_dtype) for i in range(n)]
    shapes = [[per] if i % 2 else [per // 10, 10] for i in range(n)]
    df = pl.DataFrame(
        {"layer_name": [f"unet.down.{i}.weight" for i in range(n)],
         "weights": [v.tolist() for v in values], "shape": shapes},
        schema={"layer_name": pl.String, "weights": pl.List(dtype), "shape": pl.List(pl.Int64)})
    expected = [(f"unet.down.{i}.weight", values[i], shapes[i]) for i in range(n)]
    return df, expected


def quantize_capsule_stream(aql, obj, **kw):
    """obj.__arrow_c_stream__() into aq_stream_quantize; returns the result as a pyarrow
    Table. The capsule stays alive for the call; the library moves its stream out."""
    capsule = obj.__arrow_c_stream__()
    reader, keep = aql.stream(capsule_pointer(capsule, b"arrow_array_stream"), **kw)
    try:
        return reader.read_all()
    finally:
        reader.close()
        keep.close()


@pytest.mark.parametrize("dtype", ["Float32", "Float64", "Float16"])
def test_polars_stream(aql, check_rows, dtype):
    df, expected = polars_frame(dtype=getattr(pl, dtype), seed=1)
    result = quantize_capsule_stream(aql, df, bits=4, group_size=32)
    check_rows(result.combine_chunks().to_batches()[0], expected, 4, 32)


def test_polars_uses_view_and_large_types(aql, check_rows):
    df, expected = polars_frame(seed=2)
    capsule = df.__arrow_c_stream__()
    batches = pull_batches(capsule_pointer(capsule, b"arrow_array_stream"))
    try:
        schema, array = batches[0]
        formats = [schema.children[i].contents.format for i in range(schema.n_children)]
        assert formats == [b"vu", b"+L", b"+L"]  # string_view and large_list, as polars writes
        # The batch API over polars' own arrays, without pyarrow in between.
        result = aql.quantize_c(schema, array, bits=8, group_size=16)
        check_rows(result, expected, 8, 16)
    finally:
        for s, a in batches:
            release(a)
            release(s)


def test_polars_slices_chunks_and_empty_frames(aql, check_rows):
    df, expected = polars_frame(n=8, seed=3)
    check_rows(quantize_capsule_stream(aql, df.slice(2, 4), bits=2, group_size=8)
               .combine_chunks().to_batches()[0], expected[2:6], 2, 8)
    chunked = pl.concat([df.slice(0, 3), df.slice(3, 5)], rechunk=False)
    assert chunked.n_chunks() == 2
    result = quantize_capsule_stream(aql, chunked, bits=4, group_size=32)
    check_rows(result.combine_chunks().to_batches()[0], expected, 4, 32)
    empty = df.clear()
    assert quantize_capsule_stream(aql, empty).num_rows == 0


def test_polars_bad_input(aql):
    df = pl.DataFrame({"name": ["a"], "weights": [[1.0, 2.0]]})
    with pytest.raises(AqFailure) as e:
        quantize_capsule_stream(aql, df)
    assert e.value.message == MISSING.format("layer_name")
    df = pl.DataFrame({"layer_name": ["a"], "weights": [[1, 2]]})
    capsule = df.__arrow_c_stream__()
    batches = pull_batches(capsule_pointer(capsule, b"arrow_array_stream"))
    try:
        with pytest.raises(AqFailure) as e:
            aql.quantize_c(*batches[0])
    finally:
        for s, a in batches:
            release(a)
            release(s)
    assert "Column 'weights' must be list<float32>" in e.value.message
    assert "got Arrow format '+L' with child format 'l'" in e.value.message
    df = pl.DataFrame({"layer_name": ["a", "b"], "weights": [[1.0] * 8, [1.0] * 7 + [None]]},
                      schema={"layer_name": pl.String, "weights": pl.List(pl.Float32)})
    with pytest.raises(Exception) as e:
        quantize_capsule_stream(aql, df)
    assert "Layer 'b' (row 1): weights has a null value at index 7" in str(e.value)


DUCK_SQL = """
SELECT 'text_encoder.layer.' || i::VARCHAR AS layer_name,
       list_transform(range(256), lambda x: (sin(x * 0.37 + i) * (i + 1))::FLOAT) AS weights,
       [16, 16]::BIGINT[] AS shape
FROM range(6) t(i) ORDER BY i
"""


def test_duckdb_stream_producer(aql, check_rows):
    con = duckdb.connect()
    rel = con.sql(DUCK_SQL)
    table = rel.arrow() if hasattr(rel, "arrow") else rel.fetch_arrow_table()
    table = pa.table(table) if not isinstance(table, pa.Table) else table
    expected = [(n, np.asarray(w, dtype=np.float32), s) for n, w, s in
                zip(*(table.column(c).to_pylist() for c in ("layer_name", "weights", "shape")))]
    result = quantize_capsule_stream(aql, con.sql(DUCK_SQL), bits=4, group_size=64)
    check_rows(result.combine_chunks().to_batches()[0], expected, 4, 64)


def test_duckdb_reads_our_stream_with_sql(aql, affine):
    # One connection produces the weights, another runs SQL over our quantized stream (a
    # duckdb connection serves one open result at a time).
    producer, con = duckdb.connect(), duckdb.connect()
    capsule = producer.sql(DUCK_SQL).__arrow_c_stream__()
    reader, keep = aql.stream(capsule_pointer(capsule, b"arrow_array_stream"), bits=2,
                              group_size=32)
    try:
        quantized = reader  # duckdb scans the Python variable: our C stream, batch by batch
        rows = con.sql(
            "SELECT layer_name, bit_width, octet_length(quantized_data) AS bytes, "
            "len(scales) AS groups, shape FROM quantized ORDER BY layer_name").fetchall()
    finally:
        keep.close()
    assert len(rows) == 6
    for name, bits, nbytes, groups, shape in rows:
        assert name.startswith("text_encoder.layer.")
        assert (bits, nbytes, groups, shape) == (2, 64, 16 * 1, [16, 16])
    # And the values: SQL over the quantized columns of a second pass, joined on the name.
    capsule = producer.sql(DUCK_SQL).__arrow_c_stream__()
    reader, keep = aql.stream(capsule_pointer(capsule, b"arrow_array_stream"), bits=8,
                              group_size=16)
    try:
        quantized = reader  # noqa: F841 (read by the SQL below)
        got = con.sql("SELECT layer_name, quantized_data, scales, zero_points FROM quantized "
                      "WHERE layer_name = 'text_encoder.layer.3'").fetchall()
    finally:
        keep.close()
    src = producer.sql(DUCK_SQL).fetchall()[3]
    want_p, want_s, want_z = affine.quantize(np.asarray(src[1], dtype=np.float32), [16, 16], 8,
                                             16)
    name, packed, scales, zps = got[0]
    assert name == "text_encoder.layer.3"
    assert bytes(packed) == want_p
    np.testing.assert_array_equal(np.asarray(scales, dtype=np.float32), want_s)
    np.testing.assert_array_equal(np.asarray(zps, dtype=np.float32), want_z)
