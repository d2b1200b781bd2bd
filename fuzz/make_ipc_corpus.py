"""Writes the IPC fuzzer's seed corpus (fuzz/corpus/ipc/seed-*) with pyarrow: small files and
streams covering every supported type, nulls, several batches, lz4 and zstd bodies.
Run: .venv/bin/python fuzz/make_ipc_corpus.py"""
import pathlib

import pyarrow as pa
import pyarrow.ipc as ipc

OUT = pathlib.Path(__file__).resolve().parent / "corpus" / "ipc"


def tables():
    small = pa.table({
        "layer_name": ["a.weight", None, "c" * 20],
        "weights": pa.array([[1.0, 2.0], [], None], type=pa.list_(pa.float32())),
        "shape": pa.array([[2], None, [0]], type=pa.list_(pa.int64())),
    }, metadata={"k": "v"})
    wide = pa.table({
        "i8": pa.array([1, -2, None], pa.int8()), "u16": pa.array([1, 2, 3], pa.uint16()),
        "i32": pa.array([1, None, 3], pa.int32()), "u32": pa.array([7, 8, 9], pa.uint32()),
        "i64": pa.array([1, 2, None], pa.int64()), "u8": pa.array([0, 255, 1], pa.uint8()),
        "f16": pa.array([1, 2, 3], pa.float16()) if hasattr(pa, "float16") else pa.array([1, 2, 3], pa.float32()),
        "f64": pa.array([1.5, None, 3.0]),
        "bin": pa.array([b"x", b"", None], pa.binary()),
        "lbin": pa.array([b"xy", b"z", b""], pa.large_binary()),
        "lstr": pa.array(["p", None, "q"], pa.large_utf8()),
        "view": pa.array(["short", "a string longer than twelve", None], pa.string_view()),
        "fsl": pa.array([[1, 2], [3, 4], None], pa.list_(pa.float32(), 2)),
        "llist": pa.array([[1], [], [2, 3]], pa.large_list(pa.int32())),
        "st": pa.array([{"x": 1, "y": "a"}, None, {"x": 3, "y": None}],
                       pa.struct([("x", pa.int64()), ("y", pa.utf8())])),
        "nul": pa.array([None, None, None], pa.null()),
    })
    return {"small": small, "wide": wide}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, t in tables().items():
        for comp in (None, "lz4", "zstd"):
            opts = ipc.IpcWriteOptions(compression=comp)
            for fmt, new in (("stream", ipc.new_stream), ("file", ipc.new_file)):
                sink = pa.BufferOutputStream()
                with new(sink, t.schema, options=opts) as w:
                    w.write_table(t, max_chunksize=2)
                (OUT / f"seed-{name}-{fmt}-{comp or 'none'}").write_bytes(
                    sink.getvalue().to_pybytes())


if __name__ == "__main__":
    main()
