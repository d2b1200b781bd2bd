"""Our IPC metadata decoded by an independent FlatBuffers implementation: Debian's flatc, with
the Arrow format files (tests/data/arrow-format/*.fbs, as published by Apache Arrow)."""
import json
import pathlib
import shutil
import struct
import subprocess
import sys

import pyarrow as pa
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ipc_ctypes import result_table  # noqa: E402

FBS = pathlib.Path(__file__).resolve().parents[2] / "data" / "arrow-format"
FLATC = shutil.which("flatc")
pytestmark = pytest.mark.skipif(FLATC is None, reason="flatc (flatbuffers-compiler) missing")


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fbs")
    for name in ("Schema.fbs", "Message.fbs", "File.fbs"):
        shutil.copy(FBS / name, d / name)
    # Message.fbs includes the tensor formats, which Arrow IPC files never use: empty tables of
    # the same names keep the MessageHeader union numbering intact.
    for name in ("Tensor", "SparseTensor"):
        (d / f"{name}.fbs").write_text(f"namespace org.apache.arrow.flatbuf;\ntable {name} {{}}\n")
    return d


def decode(schema_dir, fbs, blob: bytes, name: str) -> dict:
    src = schema_dir / f"{name}.bin"
    src.write_bytes(blob)
    subprocess.run([FLATC, "--json", "--strict-json", "--raw-binary", "--defaults-json",
                    "-o", str(schema_dir), str(schema_dir / fbs), "--", str(src)],
                   check=True, capture_output=True)
    return json.loads((schema_dir / f"{name}.json").read_text())


@pytest.mark.parametrize("codec", ["zstd", None])
def test_flatc_decodes_our_file(ipc, tmp_path, schema_dir, codec):
    table = result_table(n_batches=2)
    table = table.append_column("kind", pa.array(["a" * 20, "b"] * 3, pa.string_view()))
    path = tmp_path / "ours.arrow"
    ipc.write(path, table, "file", codec)
    data = path.read_bytes()
    assert data[:8] == b"ARROW1\0\0"

    found = []
    pos = 8
    while True:
        marker, length = struct.unpack_from("<Ii", data, pos)
        assert marker == 0xFFFFFFFF
        if length == 0:
            break
        msg = decode(schema_dir, "Message.fbs", data[pos + 8:pos + 8 + length],
                     f"m{len(found)}")
        assert msg["version"] == "V5"
        body_start = pos + 8 + length
        assert body_start % 64 == 0  # bodies start 64-byte aligned in the file
        found.append((pos, 8 + length, msg))
        pos = body_start + int(msg["bodyLength"])

    schema_msg = found[0][2]
    assert schema_msg["header_type"] == "Schema"
    fields = schema_msg["header"]["fields"]
    assert [f["name"] for f in fields] == table.column_names
    assert [f["type_type"] for f in fields] == ["Utf8", "Binary", "List", "List", "List", "Int",
                                                 "Utf8View"]
    assert fields[2]["children"][0]["type"] == {"precision": "SINGLE"}
    assert fields[5]["type"] == {"bitWidth": 8, "is_signed": False}
    meta = {kv["key"]: kv["value"] for kv in schema_msg["header"]["custom_metadata"]}
    assert meta["arrowquant.scheme"] == "affine" and meta["arrowquant.group_size"] == "128"

    batches = [m for m in found[1:]]
    assert len(batches) == 2
    for (pos, meta_len, msg), rb in zip(batches, table.to_batches()):
        assert msg["header_type"] == "RecordBatch"
        h = msg["header"]
        assert int(h["length"]) == rb.num_rows
        # one node per field: 7 columns + 3 list children
        assert len(h["nodes"]) == 10
        assert [int(n["length"]) for n in h["nodes"]][:2] == [rb.num_rows, rb.num_rows]
        body = int(msg["bodyLength"])
        for b in h["buffers"]:
            assert int(b["offset"]) % 64 == 0
            assert int(b["offset"]) + int(b["length"]) <= body
        assert [int(c) for c in h["variadicBufferCounts"]] == [1]
        if codec:
            assert h["compression"]["codec"] == "ZSTD"
        else:
            assert "compression" not in h

    flen = struct.unpack_from("<i", data, len(data) - 10)[0]
    assert data[-6:] == b"ARROW1"
    footer = decode(schema_dir, "File.fbs", data[len(data) - 10 - flen:len(data) - 10], "footer")
    assert footer["version"] == "V5"
    assert [f["name"] for f in footer["schema"]["fields"]] == table.column_names
    blocks = footer["recordBatches"]
    assert [(int(b["offset"]), int(b["metaDataLength"]), int(b["bodyLength"])) for b in blocks] \
        == [(p, ml, int(m["bodyLength"])) for p, ml, m in batches]
