"""The IPC reader and writer against peers no one here wrote: pyarrow (Arrow C++), polars (Rust)
and nanoarrow (C), in both directions, uncompressed, lz4 and zstd, files and streams."""
import pathlib
import sys

import numpy as np
import nanoarrow as na
import nanoarrow.ipc as nipc
import polars as pl
import pyarrow as pa
import pyarrow.ipc as paipc
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ipc_ctypes import IpcError, result_table, weights_table  # noqa: E402

FORMATS = ["stream", "file"]
CODECS = [None, "lz4", "zstd"]


def wide_table(views=True) -> pa.Table:
    """Every supported type, nulls included, nested, in two batches (built separately, not
    sliced: nanoarrow's writer refuses sliced arrays)."""
    cols = {
        "i8": pa.array([1, -2, None, 4], pa.int8()),
        "u16": pa.array([1, 2, 3, 65535], pa.uint16()),
        "i32": pa.array([1, None, 3, -4], pa.int32()),
        "u32": pa.array([7, 8, 9, 2**32 - 1], pa.uint32()),
        "i64": pa.array([1, 2, None, -2**63], pa.int64()),
        "u64": pa.array([0, 1, 2, 2**64 - 1], pa.uint64()),
        "u8": pa.array([0, 255, 1, None], pa.uint8()),
        "f16": pa.array(np.array([1, 2.5, -3, 65504], dtype=np.float16), pa.float16()),
        "f32": pa.array([1.5, None, -0.0, 3.25], pa.float32()),
        "f64": pa.array([1.5, None, 3.0, float("inf")]),
        "bin": pa.array([b"x", b"", None, b"\x00\xff"], pa.binary()),
        "lbin": pa.array([b"xy", b"z", b"", None], pa.large_binary()),
        "str": pa.array(["p", None, "q", "\u00e9t\u00e9"], pa.utf8()),
        "lstr": pa.array(["p", None, "q", ""], pa.large_utf8()),
        "view": pa.array(["short", "a string longer than twelve", None, ""], pa.string_view()),
        "bview": pa.array([b"a" * 40, None, b"b", b"c" * 13], pa.binary_view()),
        "fsl": pa.array([[1, 2], [3, 4], None, [5, None]], pa.list_(pa.float32(), 2)),
        "llist": pa.array([[1], [], [2, 3], None], pa.large_list(pa.int32())),
        "nested": pa.array([[[1.0]], None, [[], [2.0, 3.0]], []],
                           pa.list_(pa.list_(pa.float64()))),
        "st": pa.array([{"x": 1, "y": "a"}, None, {"x": 3, "y": None}, {"x": None, "y": "d"}],
                       pa.struct([("x", pa.int64()), ("y", pa.utf8())])),
        "nul": pa.array([None] * 4, pa.null()),
    }
    if not views:  # nanoarrow 0.9 reads and writes no views
        del cols["view"], cols["bview"]
    batches = [pa.record_batch({k: pa.array(v.to_pylist()[lo:lo + 2], v.type)
                                for k, v in cols.items()}) for lo in (0, 2)]
    return pa.Table.from_batches(batches)


TABLES = {"weights": weights_table, "result": result_table, "wide": wide_table}


def pyarrow_write(path, table, fmt, codec):
    opts = paipc.IpcWriteOptions(compression=codec)
    new = paipc.new_file if fmt == "file" else paipc.new_stream
    with new(str(path), table.schema, options=opts) as w:
        for b in table.to_batches():
            w.write_batch(b)


def pyarrow_read(path, fmt):
    if fmt == "file":
        return paipc.open_file(str(path)).read_all()
    return paipc.open_stream(str(path)).read_all()


def assert_same(got: pa.Table, want: pa.Table):
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.equals(want)


@pytest.mark.parametrize("kind", TABLES)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_we_read_what_pyarrow_writes(ipc, tmp_path, fmt, codec, kind):
    table = TABLES[kind]()
    path = tmp_path / "in.arrow"
    pyarrow_write(path, table, fmt, codec)
    got = ipc.read(path)
    assert_same(got, table)
    assert got.num_rows == table.num_rows and len(got.to_batches()) == len(table.to_batches())


@pytest.mark.parametrize("kind", TABLES)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_pyarrow_reads_what_we_write(ipc, tmp_path, fmt, codec, kind):
    table = TABLES[kind]()
    path = tmp_path / "out.arrow"
    ipc.write(path, table, fmt, codec)
    got = pyarrow_read(path, fmt)
    assert_same(got, table)
    assert len(got.to_batches()) == len(table.to_batches())
    # pyarrow's own validation of every batch, full (offsets, UTF-8, views).
    for b in got.to_batches():
        b.validate(full=True)


def test_our_file_has_aligned_buffers_and_the_file_layout(ipc, tmp_path):
    path = tmp_path / "out.arrow"
    ipc.write(path, weights_table(), "file", None)
    data = path.read_bytes()
    assert data[:8] == b"ARROW1\0\0" and data[-6:] == b"ARROW1"
    reader = paipc.open_file(str(path))
    assert reader.num_record_batches == 3
    # Buffers of a memory-mapped read start 64-byte aligned within the file.
    with pa.memory_map(str(path)) as src:
        base = src.read_buffer(0).address
        batch = paipc.open_file(src).get_batch(0)
        for col in batch.columns:
            for buf in col.buffers():
                if buf is not None and buf.size > 0:
                    assert (buf.address - base) % 64 == 0


def test_field_metadata_and_sliced_input(ipc, tmp_path):
    schema = pa.schema([pa.field("layer_name", pa.utf8(), metadata={"role": "key"}),
                        pa.field("weights", pa.list_(pa.float32()), nullable=False,
                                 metadata={"dtype": "f32", "bin\x00ary": "v\x00"})],
                       metadata={"arrowquant.format_version": "1"})
    table = pa.table([pa.array([f"n{i}" if i % 3 else None for i in range(40)]),
                      pa.array([[float(i)] * (i % 5) for i in range(40)],
                               pa.list_(pa.float32()))], schema=schema)
    sliced = table.slice(7, 23)  # offsets not at 0, bitmaps not byte-aligned
    path = tmp_path / "sliced.arrows"
    ipc.write(path, sliced, "stream", "zstd")
    got = pyarrow_read(path, "stream")
    assert_same(got, sliced)
    assert got.schema.field("weights").metadata == {b"dtype": b"f32", b"bin\x00ary": b"v\x00"}
    back = ipc.read(path)
    assert_same(back, sliced)


@pytest.mark.parametrize("codec", ["uncompressed", "lz4", "zstd"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_polars_both_ways(ipc, tmp_path, fmt, codec):
    rng = np.random.default_rng(3)
    df = pl.DataFrame({
        "layer_name": [f"transformer.blocks.{i}.attn.to_q.weight" for i in range(6)],
        "weights": [rng.standard_normal(i * 7 + 1).astype(np.float32).tolist()
                    for i in range(6)],
        "shape": [[1, i * 7 + 1] for i in range(6)],
    }, schema={"layer_name": pl.String, "weights": pl.List(pl.Float32),
               "shape": pl.List(pl.Int64)})
    df = pl.concat([df, df.reverse()], rechunk=False)  # two record batches
    path = tmp_path / "polars.arrow"
    if fmt == "file":
        df.write_ipc(path, compression=codec)
    else:
        df.write_ipc_stream(path, compression=codec)
    got = ipc.read(path)
    # polars writes string views and large lists
    assert got.schema.field("layer_name").type == pa.string_view()
    assert got.schema.field("weights").type == pa.large_list(pa.float32())
    assert got.equals(df.to_arrow(compat_level=pl.CompatLevel.newest()))
    # and reads back what we write, views and large lists included
    ours = tmp_path / "ours.arrow"
    ipc.write(ours, got, fmt, None if codec == "uncompressed" else codec)
    back = pl.read_ipc(ours) if fmt == "file" else pl.read_ipc_stream(ours)
    assert back.equals(df)


@pytest.mark.parametrize("kind", ["weights", "result"])
@pytest.mark.parametrize("codec", CODECS)
def test_polars_reads_what_we_write(ipc, tmp_path, codec, kind):
    table = TABLES[kind]()
    path = tmp_path / "out.arrow"
    ipc.write(path, table, "file", codec)
    assert pl.read_ipc(path).equals(pl.from_arrow(table))


@pytest.mark.parametrize("kind", ["weights", "result", "wide"])
def test_nanoarrow_writes_we_read(ipc, tmp_path, kind):
    table = wide_table(views=False) if kind == "wide" else TABLES[kind]()
    path = tmp_path / "na.arrows"
    with nipc.StreamWriter.from_path(str(path)) as w:
        w.write_stream(table)
    assert_same(ipc.read(path), table)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", ["weights", "result", "wide"])
def test_nanoarrow_reads_what_we_write(ipc, tmp_path, kind, codec):
    table = wide_table(views=False) if kind == "wide" else TABLES[kind]()
    path = tmp_path / "ours.arrows"
    ipc.write(path, table, "stream", codec)
    got = pa.table(na.ArrayStream.from_path(str(path)).read_all())
    assert got.equals(table)


def test_read_from_memory(ipc):
    sink = pa.BufferOutputStream()
    table = result_table()
    with paipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert_same(ipc.read_memory(sink.getvalue().to_pybytes()), table)


def test_unsupported_types_name_the_field(ipc, tmp_path):
    for col, typename in [(pa.array([1, 2], pa.timestamp("s")), "Timestamp"),
                          (pa.array([True, False]), "Bool"),
                          (pa.array([1, 2], pa.decimal128(5, 2)), "Decimal")]:
        path = tmp_path / "t.arrow"
        pyarrow_write(path, pa.table({"ok": [1, 2], "when": col}), "file", None)
        with pytest.raises(IpcError) as e:
            ipc.read(path)
        assert "field 'when'" in e.value.message and typename in e.value.message


def test_dictionaries_are_refused(ipc, tmp_path):
    path = tmp_path / "d.arrows"
    pyarrow_write(path, pa.table({"names": pa.array(["a", "b", "a"]).dictionary_encode()}),
                  "stream", None)
    with pytest.raises(IpcError) as e:
        ipc.read(path)
    assert "field 'names'" in e.value.message and "dictionar" in e.value.message


def test_writer_refuses_unsupported_input_and_leaves_nothing(ipc, tmp_path):
    path = tmp_path / "never.arrow"
    with pytest.raises(IpcError) as e:
        ipc.write(path, pa.table({"flag": [True, False]}), "file", None)
    assert "field 'flag'" in e.value.message
    assert list(tmp_path.iterdir()) == []


def test_failing_input_stream_leaves_no_file(ipc, tmp_path):
    path = tmp_path / "model.arrow"
    path.write_bytes(b"previous content")
    table = weights_table()

    def batches():
        yield table.to_batches()[0]
        raise RuntimeError("source went away")

    reader = pa.RecordBatchReader.from_batches(table.schema, batches())
    with pytest.raises(IpcError) as e:
        ipc.write(path, reader, "file", "zstd")
    assert "source went away" in e.value.message
    # the old file is untouched and no temporary is left behind
    assert path.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.arrow"]


@pytest.mark.parametrize("codec", CODECS)
def test_sliced_arrays_of_every_type(ipc, tmp_path, codec):
    table = wide_table().combine_chunks()
    for start, length in [(1, 3), (3, 1), (0, 0), (2, 2)]:
        sliced = table.slice(start, length)
        path = tmp_path / f"s{start}.arrow"
        ipc.write(path, sliced, "file", codec)
        got = pyarrow_read(path, "file")
        assert got.equals(sliced), (start, length)
        for b in got.to_batches():
            b.validate(full=True)
        assert ipc.read(path).equals(sliced)


@pytest.mark.parametrize("codec", [None, "zstd"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_pyarrow_files_are_clear_errors(ipc, fmt, codec):
    """Every prefix of a file pyarrow wrote (so: every message boundary too) is an error that
    says where, never a crash or a silently shorter table."""
    table = result_table(n_batches=3, rows=2)
    sink = pa.BufferOutputStream()
    new = paipc.new_file if fmt == "file" else paipc.new_stream
    with new(sink, table.schema, options=paipc.IpcWriteOptions(compression=codec)) as w:
        for b in table.to_batches():
            w.write_batch(b)
    data = sink.getvalue().to_pybytes()
    assert_same(ipc.read_memory(data), table)
    for cut in range(len(data)):
        # at open (IpcError), or from the ArrowArrayStream's get_next, which pyarrow raises
        # with our get_last_error text
        with pytest.raises((IpcError, pa.ArrowInvalid)) as e:
            ipc.read_memory(data[:cut])
        assert "<memory>: " in str(e.value)
