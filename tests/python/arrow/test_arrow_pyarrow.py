"""pyarrow (the reference C++ Arrow) as producer and consumer of the C Data and C Stream
interfaces: pyarrow exports into C structures, the library quantizes through ctypes, pyarrow
imports the result. Every row is checked byte for byte against the independent numpy
implementation of docs/format.md."""
import ctypes

import numpy as np
import pyarrow as pa
import pytest

from aqarrow import AqFailure, export_stream

RNG = np.random.default_rng(20261126)

RESULT_SCHEMA = pa.schema(
    [
        ("layer_name", pa.string()),
        ("quantized_data", pa.binary()),
        ("scales", pa.list_(pa.field("item", pa.float32(), nullable=True))),
        ("zero_points", pa.list_(pa.field("item", pa.float32(), nullable=True))),
        ("shape", pa.list_(pa.field("item", pa.int64(), nullable=True))),
        ("bit_width", pa.uint8()),
    ]
)

MISSING = ("Missing required column '{}'. Expected schema: {{layer_name: string, weights: "
           "list<float32>, shape: list<int64>}}")


def list_array(list_type, values, lengths):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if pa.types.is_fixed_size_list(list_type):
        return pa.FixedSizeListArray.from_arrays(values, list_type.list_size)
    if pa.types.is_large_list(list_type):
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def make_rows(n, per, dtype, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        v = rng.standard_normal(per).astype(np.float32) * np.float32(1 + i)
        rows.append((f"blocks.{i}.weight", v.astype(dtype)))
    return rows


def batch_of(rows, shapes=None, name_type=pa.string(), list_type=None, value_type=pa.float32(),
             shape_type=pa.list_(pa.int64())):
    names = pa.array([r[0] for r in rows], name_type)
    values = pa.array(np.concatenate([r[1] for r in rows]), value_type)
    lengths = [len(r[1]) for r in rows]
    list_type = list_type or pa.list_(value_type)
    cols, fields = [names, list_array(list_type, values, lengths)], ["layer_name", "weights"]
    if shapes is not None:
        flat = np.concatenate([np.asarray(s) for s in shapes]).astype(
            shape_type.value_type.to_pandas_dtype())
        cols.append(list_array(shape_type, pa.array(flat, shape_type.value_type),
                               [len(s) for s in shapes]))
        fields.append("shape")
    return pa.RecordBatch.from_arrays(cols, names=fields)


@pytest.mark.parametrize("name_type", [pa.string(), pa.large_string(), pa.string_view()],
                         ids=["utf8", "large_utf8", "string_view"])
@pytest.mark.parametrize(
    "value_type,list_kind",
    [(pa.float32(), "list"), (pa.float32(), "large_list"), (pa.float32(), "fixed"),
     (pa.float16(), "list"), (pa.float64(), "large_list"), (pa.float16(), "fixed")],
    ids=["f32-list", "f32-large", "f32-fixed", "f16-list", "f64-large", "f16-fixed"])
@pytest.mark.parametrize("shape_type", [pa.list_(pa.int64()), pa.large_list(pa.int32()), None],
                         ids=["shape-i64", "shape-large-i32", "no-shape"])
def test_accepted_types_match_numpy_reference(aql, check_rows, name_type, value_type, list_kind,
                                              shape_type):
    np_dtype = value_type.to_pandas_dtype()
    rows = make_rows(3, 96, np_dtype, seed=1)
    list_type = {"list": pa.list_(value_type), "large_list": pa.large_list(value_type),
                 "fixed": pa.list_(value_type, 96)}[list_kind]
    shapes = [[4, 24], [96], [2, 3, 16]] if shape_type is not None else None
    batch = batch_of(rows, shapes, name_type, list_type, value_type, shape_type or
                     pa.list_(pa.int64()))
    result = aql.quantize(batch, bits=4, group_size=32)
    result.validate(full=True)
    assert result.schema.equals(RESULT_SCHEMA, check_metadata=False)
    expected = [(n, v, s) for (n, v), s in zip(rows, shapes or [[96]] * 3)]
    check_rows(result, expected, 4, 32)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [8, 64, 128, 4294967295])
def test_bit_widths_and_group_sizes(aql, check_rows, bits, group_size):
    rows = make_rows(4, 300, np.float32, seed=bits * 1000 + group_size % 997)
    shapes = [[3, 100], [300], [10, 30], [300]]
    result = aql.quantize(batch_of(rows, shapes), bits=bits, group_size=group_size)
    check_rows(result, [(n, v, s) for (n, v), s in zip(rows, shapes)], bits, group_size)
    md = result.schema.metadata
    assert md[b"arrowquant.format_version"] == b"2"
    assert md[b"arrowquant.scheme"] == b"affine"
    assert md[b"arrowquant.group_size"] == str(group_size).encode()
    assert md[b"arrowquant.packing"] == b"lsb-first"


def test_result_schema_exactly(aql):
    result = aql.quantize(batch_of(make_rows(1, 16, np.float32)))
    assert result.schema.equals(RESULT_SCHEMA, check_metadata=False)
    assert [f.name for f in result.schema] == ["layer_name", "quantized_data", "scales",
                                               "zero_points", "shape", "bit_width"]
    for col in ("scales", "zero_points", "shape"):
        assert result.schema.field(col).type.value_field.name == "item"
        assert result.schema.field(col).type.value_field.nullable


def test_sliced_batches_and_sliced_children(aql, check_rows):
    rows = make_rows(6, 40, np.float32, seed=3)
    shapes = [[4, 10], [40], [8, 5], [40], [2, 20], [40]]
    batch = batch_of(rows, shapes)
    expected = [(n, v, s) for (n, v), s in zip(rows, shapes)]
    check_rows(aql.quantize(batch.slice(2, 3), bits=4, group_size=8), expected[2:5], 4, 8)
    # Children sliced separately: every list carries its own offset into its values.
    names = batch.column(0).slice(1, 4)
    weights = batch.column(1).slice(1, 4)
    shape = batch.column(2).slice(1, 4)
    sliced = pa.RecordBatch.from_arrays([shape, weights, names],
                                        names=["shape", "weights", "layer_name"])
    check_rows(aql.quantize(sliced, bits=2, group_size=16), expected[1:5], 2, 16)
    # A struct array sliced at the struct level.
    struct = pa.StructArray.from_arrays(batch.columns, names=batch.schema.names).slice(3, 2)
    check_rows(aql.quantize(struct, bits=8, group_size=8), expected[3:5], 8, 8)


def test_empty_batches_with_null_types(aql):
    empty = pa.RecordBatch.from_pydict({"layer_name": [], "weights": [], "shape": []})
    assert empty.schema.field("weights").type == pa.null()
    result = aql.quantize(empty)
    assert result.num_rows == 0
    assert result.schema.equals(RESULT_SCHEMA, check_metadata=False)
    typed = batch_of(make_rows(2, 8, np.float32)).slice(0, 0)
    assert aql.quantize(typed).num_rows == 0


def test_null_shape_means_flat(aql, check_rows):
    rows = make_rows(2, 48, np.float32, seed=5)
    batch = pa.RecordBatch.from_pydict(
        {"layer_name": [r[0] for r in rows], "weights": [r[1].tolist() for r in rows],
         "shape": [None, [6, 8]]},
        schema=pa.schema([("layer_name", pa.string()), ("weights", pa.list_(pa.float32())),
                          ("shape", pa.list_(pa.int64()))]))
    check_rows(aql.quantize(batch, bits=4, group_size=16),
               [(rows[0][0], rows[0][1], [48]), (rows[1][0], rows[1][1], [6, 8])], 4, 16)


def test_stream_of_a_chunked_table_equals_one_batch(aql, check_rows):
    rows = make_rows(10, 130, np.float32, seed=6)
    shapes = [[130], [10, 13]] * 5
    table = pa.Table.from_batches([batch_of(rows, shapes)])
    whole = aql.quantize(table.to_batches()[0], bits=4, group_size=64)
    for chunk in (1, 3, 7, 10):
        reader, keep = aql.stream(export_stream(table.to_reader(max_chunksize=chunk)), bits=4,
                                  group_size=64)
        batches = list(reader)
        keep.close()
        assert len(batches) == -(-10 // chunk)
        streamed = pa.Table.from_batches(batches).combine_chunks()
        assert streamed.equals(pa.Table.from_batches([whole]))
        assert streamed.schema.metadata[b"arrowquant.group_size"] == b"64"
    check_rows(whole, [(n, v, s) for (n, v), s in zip(rows, shapes)], 4, 64)


def test_dequantize_batch_and_stream_match_numpy(aql, affine):
    rows = make_rows(3, 200, np.float32, seed=7)
    shapes = [[200], [20, 10], [4, 5, 10]]
    result = aql.quantize(batch_of(rows, shapes), bits=4, group_size=16)
    restored = aql.dequantize(result)
    restored.validate(full=True)
    assert restored.schema.equals(pa.schema([("layer_name", pa.string()),
                                             ("weights", pa.list_(pa.float32())),
                                             ("shape", pa.list_(pa.int64()))]))
    assert restored.column("layer_name").to_pylist() == [r[0] for r in rows]
    assert restored.column("shape").to_pylist() == shapes
    for i, ((_, _), shape) in enumerate(zip(rows, shapes)):
        want = affine.dequantize(result.column("quantized_data")[i].as_py(),
                                 result.column("scales")[i].values.to_numpy(),
                                 result.column("zero_points")[i].values.to_numpy(), shape, 4, 16)
        got = restored.column("weights")[i].values.to_numpy()
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    reader, keep = aql.stream(export_stream(pa.Table.from_batches([result, result])
                                            .to_reader()), dequantize=True)
    streamed = reader.read_all()
    keep.close()
    assert streamed.num_rows == 6
    assert streamed.slice(3).combine_chunks().equals(
        pa.Table.from_batches([restored]).combine_chunks())


# ---- bad input: each with its own message ----

def test_missing_columns_verbatim(aql):
    only_weights = pa.RecordBatch.from_pydict({"weights": [[1.0, 2.0]]})
    with pytest.raises(AqFailure) as e:
        aql.quantize(only_weights)
    assert e.value.message == MISSING.format("layer_name")
    only_names = pa.RecordBatch.from_pydict({"layer_name": ["a"]})
    with pytest.raises(AqFailure) as e:
        aql.quantize(only_names)
    assert e.value.message == MISSING.format("weights")


def test_wrong_types_name_column_and_formats(aql):
    b = pa.RecordBatch.from_pydict({"layer_name": ["a"], "weights": [[1, 2, 3]]})
    with pytest.raises(AqFailure) as e:
        aql.quantize(b)
    assert "Column 'weights' must be list<float32>" in e.value.message
    assert "got Arrow format '+l' with child format 'l'" in e.value.message
    b = pa.RecordBatch.from_pydict({"layer_name": [1], "weights": [[1.0]]})
    with pytest.raises(AqFailure) as e:
        aql.quantize(b)
    assert e.value.message == ("Column 'layer_name' must be string (utf8, large_utf8 or "
                               "string_view), got Arrow format 'l'")
    b = pa.RecordBatch.from_pydict({"layer_name": ["a"], "weights": [[1.0]],
                                    "shape": [["1"]]})
    with pytest.raises(AqFailure) as e:
        aql.quantize(b)
    assert "Column 'shape' must be list<int64>" in e.value.message
    assert "child format 'u'" in e.value.message


def test_nulls_shapes_and_non_finite_values(aql):
    schema = pa.schema([("layer_name", pa.string()), ("weights", pa.list_(pa.float32())),
                        ("shape", pa.list_(pa.int64()))])
    cases = [
        ({"layer_name": ["a", None], "weights": [[1.0] * 8] * 2, "shape": [None, None]},
         "Row 1: layer_name is null"),
        ({"layer_name": ["a", "b"], "weights": [[1.0] * 8, None], "shape": [None, None]},
         "Layer 'b' (row 1): weights is null"),
        ({"layer_name": ["mlp"], "weights": [[1.0] * 10], "shape": [[3, 4]]},
         "Layer 'mlp' (row 0): shape [3, 4] has 12 elements but weights has 10 values"),
        ({"layer_name": ["x"], "weights": [[1.0, 2.0, float("nan"), 3.0] * 4],
          "shape": [[4, 4]]},
         "Layer 'x' contains NaN or Inf at index 2"),
        ({"layer_name": ["y"], "weights": [[0.5] * 9 + [float("-inf")]], "shape": [None]},
         "Layer 'y' contains NaN or Inf at index 9"),
    ]
    for data, message in cases:
        with pytest.raises(AqFailure) as e:
            aql.quantize(pa.RecordBatch.from_pydict(data, schema=schema))
        assert e.value.message == message


def test_continue_on_error_and_progress(aql, check_rows):
    schema = pa.schema([("layer_name", pa.string()), ("weights", pa.list_(pa.float32()))])
    good = np.linspace(-1, 1, 16, dtype=np.float32)
    batch = pa.RecordBatch.from_pydict(
        {"layer_name": ["g0", None, "nan", "g3"],
         "weights": [good.tolist(), good.tolist(), [float("nan")] * 16, good.tolist()]},
        schema=schema)
    report, progress = [], []
    result = aql.quantize(batch, bits=4, group_size=8, continue_on_error=True, report=report,
                          progress=lambda r, e: progress.append((r, e)))
    check_rows(result, [("g0", good, [16]), ("g3", good, [16])], 4, 8)
    assert [(r[0], r[1]) for r in report] == [(1, ""), (2, "nan")]
    assert report[0][3] == "Row 1: layer_name is null"
    assert report[1][3] == "Layer 'nan' contains NaN or Inf at index 0"
    assert progress == [(1, 16), (2, 32), (3, 48), (4, 64)]


def test_stream_errors_are_passed_on(aql):
    schema = pa.schema([("layer_name", pa.string()), ("weights", pa.list_(pa.float32()))])
    good = pa.RecordBatch.from_pydict({"layer_name": ["a"], "weights": [[1.0] * 8]},
                                      schema=schema)

    def batches():
        yield good
        raise ValueError("the producer broke at batch 2")

    reader, keep = aql.stream(export_stream(pa.RecordBatchReader.from_batches(schema,
                                                                              batches())))
    first = reader.read_next_batch()
    assert first.num_rows == 1
    with pytest.raises(Exception) as e:
        reader.read_next_batch()
    assert "the producer broke at batch 2" in str(e.value)
    assert "input stream: get_next failed" in str(e.value)
    reader.close()
    keep.close()
    # Our own errors travel the same way.
    bad = pa.RecordBatch.from_pydict({"layer_name": ["z"], "weights": [[float("inf")] * 8]},
                                     schema=schema)
    reader, keep = aql.stream(export_stream(pa.RecordBatchReader.from_batches(schema, [bad])))
    with pytest.raises(Exception) as e:
        reader.read_all()
    assert "Layer 'z' contains NaN or Inf at index 0" in str(e.value)
    reader.close()
    keep.close()


def test_stream_open_refuses_a_schema_without_weights(aql):
    schema = pa.schema([("layer_name", pa.string())])
    st = export_stream(pa.RecordBatchReader.from_batches(schema, []))
    with pytest.raises(AqFailure) as e:
        aql.stream(st)
    assert e.value.message == MISSING.format("weights")
    assert not st.release  # moved into the library, which released it


def test_dequantize_refuses_foreign_batches(aql):
    result = aql.quantize(batch_of(make_rows(1, 16, np.float32)), bits=4, group_size=8)
    stripped = result.replace_schema_metadata({})
    with pytest.raises(AqFailure) as e:
        aql.dequantize(stripped)
    assert "has no 'arrowquant" in e.value.message
    md = dict(result.schema.metadata)
    md[b"arrowquant.format_version"] = b"9"
    with pytest.raises(AqFailure) as e:
        aql.dequantize(result.replace_schema_metadata(md))
    assert "arrowquant.format_version '9' is not supported" in e.value.message
    renamed = result.rename_columns(["layer_name", "quantized_data", "scales", "zero_points",
                                     "shape", "bits"])
    with pytest.raises(AqFailure) as e:
        aql.dequantize(renamed)
    assert "Missing required column 'bit_width' in a quantized batch" in e.value.message


def test_pycapsule_array_export(aql, check_rows):
    """pyarrow's __arrow_c_array__ capsules: the pointers go straight to aq_batch_quantize."""
    from aqarrow import capsule_pointer
    rows = make_rows(2, 64, np.float32, seed=9)
    batch = batch_of(rows, [[8, 8], [64]])
    schema_capsule, array_capsule = batch.__arrow_c_array__()
    result = aql.quantize_ptr(capsule_pointer(schema_capsule, b"arrow_schema"),
                              capsule_pointer(array_capsule, b"arrow_array"), bits=4,
                              group_size=16)
    check_rows(result, [(rows[0][0], rows[0][1], [8, 8]), (rows[1][0], rows[1][1], [64])], 4,
               16)


def test_dequantize_row_schemes_from_pyarrow(aql, affine):
    """Rows quantized with different group sizes, concatenated by pyarrow, described by
    arrowquant.row_schemes: each row is restored with its own group size."""
    rows = make_rows(2, 96, np.float32, seed=11)
    a = aql.quantize(batch_of(rows[:1], [[3, 32]]), bits=4, group_size=8)
    b = aql.quantize(batch_of(rows[1:], [[96]]), bits=8, group_size=32)
    both = pa.Table.from_batches([a, b.replace_schema_metadata(a.schema.metadata)])
    md = {b"arrowquant.format_version": b"1", b"arrowquant.packing": b"lsb-first",
          b"arrowquant.row_schemes": b'[{"scheme": "affine", "group_size": 8}, '
                                     b'{"scheme": "affine", "group_size": 32}]'}
    batch = both.combine_chunks().to_batches()[0].replace_schema_metadata(md)
    restored = aql.dequantize(batch)
    for i, (shape, bits, g) in enumerate([([3, 32], 4, 8), ([96], 8, 32)]):
        want = affine.dequantize(batch.column("quantized_data")[i].as_py(),
                                 batch.column("scales")[i].values.to_numpy(),
                                 batch.column("zero_points")[i].values.to_numpy(), shape, bits, g)
        got = restored.column("weights")[i].values.to_numpy()
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_dequantize_reads_view_and_large_types(aql):
    """A result batch rewritten by a consumer with string_view, binary_view, large_list and
    int32 shapes (and sliced) still restores the same floats."""
    rows = make_rows(4, 64, np.float32, seed=12)
    result = aql.quantize(batch_of(rows, [[8, 8], [64], [4, 16], [64]]), bits=4, group_size=16)
    target = pa.schema(
        [("layer_name", pa.string_view()), ("quantized_data", pa.binary_view()),
         ("scales", pa.large_list(pa.float32())), ("zero_points", pa.large_list(pa.float32())),
         ("shape", pa.list_(pa.int32())), ("bit_width", pa.uint8())],
        metadata=result.schema.metadata)
    rewritten = result.cast(target)
    plain = aql.dequantize(result)
    assert aql.dequantize(rewritten).equals(plain)
    assert aql.dequantize(rewritten.slice(1, 2)).equals(plain.slice(1, 2))


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=6),
       bits=st.sampled_from([2, 4, 8]), group_size=st.integers(8, 70),
       start=st.integers(0, 5), seed=st.integers(0, 2**32 - 1),
       list_type=st.sampled_from(["list", "large_list"]))
def test_random_batches_match_numpy(aql, check_rows, lengths, bits, group_size, start, seed,
                                    list_type):
    rng = np.random.default_rng(seed)
    rows = [(f"r{i}", (rng.standard_normal(n) * rng.uniform(0.01, 10)).astype(np.float32))
            for i, n in enumerate(lengths)]
    shapes = [[n] if n % 3 else [3, n // 3] for n in lengths]
    lt = pa.list_(pa.float32()) if list_type == "list" else pa.large_list(pa.float32())
    batch = batch_of(rows, shapes, list_type=lt)
    start = min(start, len(rows) - 1)
    result = aql.quantize(batch.slice(start), bits=bits, group_size=group_size)
    check_rows(result, [(n, v, s) for (n, v), s in zip(rows, shapes)][start:], bits, group_size)
