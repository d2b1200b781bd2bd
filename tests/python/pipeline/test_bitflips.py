"""Single-bit flips over every byte of a small model file (zstd): each one is a clean error
(one line, exit 1, no crash, no output), or restores the very same weights, or lands in the
IPC metadata, which docs/format.md (6.2) lists as not covered by a checksum. A flip in a
body buffer never changes the restored weights without an error: every buffer is a zstd
frame with its content checksum. The same over an uncompressed file, where the rows'
checksum column is what catches them: no flip anywhere changes the restored weights."""
import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.ipc
from safetensors.numpy import load_file, save_file


def _regions(data):
    """(start, end, kind) of each part of an Arrow IPC file: the magic, each message's
    metadata (flatbuffers) and body, the footer."""
    out = [(0, 8, "magic")]
    pos = 8
    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data[8:]))
    while True:
        try:
            m = reader.read_next_message()
        except StopIteration:
            break
        if m is None:
            break
        cont, mlen = struct.unpack_from("<Ii", data, pos)
        assert cont == 0xFFFFFFFF
        out.append((pos, pos + 8 + mlen, "metadata"))
        pos += 8 + mlen
        body = m.body.size if m.body is not None else 0
        if body:
            out.append((pos, pos + body, "body"))
        pos += body
    out.append((pos, len(data), "footer"))
    return out


def _dequantize_flipped(cli, good, i, d):
    """Writes `good` with bit i % 8 of byte i flipped into the new folder d and dequantizes it.
    Returns (None, the error line) on a clean error (exit 1, one "error:" line, nothing left
    but the input), or (the output's path, None) on success."""
    d.mkdir()
    bad = bytearray(good)
    bad[i] ^= 1 << (i % 8)
    (d / "m.arrow").write_bytes(bytes(bad))
    # Bytes, not text: a message may quote a flipped (no longer UTF-8) name.
    p = subprocess.run([str(cli), "dequantize", str(d / "m.arrow"), "-o",
                        str(d / "out.safetensors")], capture_output=True, timeout=120)
    lines = [l for l in p.stderr.splitlines() if l]
    if p.returncode != 0:
        assert p.returncode == 1 and len(lines) == 1 and b"error:" in lines[0], (i, p)
        assert sorted(os.listdir(d)) == ["m.arrow"], (i, os.listdir(d))
        return None, lines[0]
    return d / "out.safetensors", None


def test_every_bit_flip_is_caught_or_documented(aq, cli, tmp_path):
    rng = np.random.default_rng(21)
    src = tmp_path / "m.safetensors"
    save_file({"blocks.0.weight": rng.standard_normal((16, 128)).astype(np.float32),
               "blocks.0.bias": rng.standard_normal(16).astype(np.float32)}, str(src))
    q = tmp_path / "m.arrow"
    aq("quantize", src, "-o", q, "--quiet", "--compression", "zstd", "--min-elements", "1")
    good = q.read_bytes()
    aq("dequantize", q, "-o", tmp_path / "ref.safetensors")
    ref = (tmp_path / "ref.safetensors").read_bytes()
    regions = _regions(good)
    assert regions[-1][0] < len(good) and any(k == "body" for _, _, k in regions)

    def kind_at(i):
        return next(k for a, b, k in regions if a <= i < b)

    def flip(i):
        out, _ = _dequantize_flipped(cli, good, i, tmp_path / f"f{i}")
        if out is None:
            return "error"
        return "same" if out.read_bytes() == ref else "changed"

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(flip, range(len(good))))
    changed = [(i, kind_at(i)) for i, r in enumerate(results) if r == "changed"]
    # Body buffers are checksummed: no flip there changes the weights unnoticed.
    assert [c for c in changed if c[1] == "body"] == [], changed
    # What remains is in the flatbuffers metadata (docs/format.md 6.2): report how much.
    assert all(k in ("metadata", "footer") for _, k in changed), changed
    tally = {}
    for i, r in enumerate(results):
        tally[(kind_at(i), r)] = tally.get((kind_at(i), r), 0) + 1
    print(f"{len(good)} flips:", dict(sorted(tally.items())))
    errors = results.count("error")
    assert errors > len(good) // 2, (errors, len(good))


def test_uncompressed_flips_never_change_the_weights(aq, cli, tmp_path):
    """Every byte of the body buffers, and every third byte elsewhere (the IPC metadata, which
    the zstd test above covers in full), of an uncompressed file: each flip is a clean error
    or restores the same tensors (names, dtypes, values). Weights that changed with exit 0
    would be silent corruption."""
    rng = np.random.default_rng(22)
    src = tmp_path / "m.safetensors"
    save_file({"blocks.0.weight": rng.standard_normal((16, 128)).astype(np.float32),
               "blocks.0.bias": rng.standard_normal(16).astype(np.float32)}, str(src))
    q = tmp_path / "m.arrow"
    aq("quantize", src, "-o", q, "--quiet", "--compression", "none", "--min-elements", "1")
    good = q.read_bytes()
    assert "checksum" in pa.ipc.open_file(str(q)).schema.names
    aq("dequantize", q, "-o", tmp_path / "ref.safetensors")
    ref = load_file(str(tmp_path / "ref.safetensors"))
    regions = _regions(good)
    body = [(a, b) for a, b, k in regions if k == "body"]
    assert body
    positions = [i for i in range(len(good))
                 if any(a <= i < b for a, b in body) or i % 3 == 0]

    def flip(i):
        path, message = _dequantize_flipped(cli, good, i, tmp_path / f"u{i}")
        if path is None:
            return "error", message
        out = load_file(str(path))
        same = out.keys() == ref.keys() and all(
            out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape and
            out[k].tobytes() == ref[k].tobytes() for k in ref)
        return ("same" if same else "changed"), None

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(flip, positions))
    changed = [i for i, (r, _) in zip(positions, results) if r == "changed"]
    assert changed == [], changed
    # Flips in the rows' bytes are named as damaged rows.
    damaged = sum(1 for r, m in results if r == "error" and b"checksum mismatch" in m)
    errors = sum(1 for r, _ in results if r == "error")
    print(f"{len(positions)} of {len(good)} bytes flipped: {errors} errors, "
          f"{damaged} of them checksum mismatches")
    assert damaged > 0


def test_damaged_row_is_named_and_files_without_checksums_read(aq, tmp_path):
    """validate, inspect, compare and dequantize name the damaged row; a file without the
    checksum column (as written before it existed) reads as before."""
    rng = np.random.default_rng(23)
    src = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((8, 64)).astype(np.float32),
               "b.weight": rng.standard_normal((8, 64)).astype(np.float32)}, str(src))
    q = tmp_path / "m.arrow"
    aq("quantize", src, "-o", q, "--quiet", "--compression", "none", "--min-elements", "1")
    t = pa.ipc.open_file(str(q)).read_all()
    row = t.column("layer_name").to_pylist().index("b.weight")
    codes = t.column("quantized_data")[row].as_py()
    good = q.read_bytes()
    at = good.index(codes)
    bad = bytearray(good)
    bad[at + 3] ^= 0x10
    b = tmp_path / "bad.arrow"
    b.write_bytes(bytes(bad))
    expect = f"row {row} (layer 'b.weight'): checksum mismatch"
    aq.fails("validate", src, b, expect=expect)
    aq.fails("compare", src, b, expect=expect)
    aq.fails("dequantize", b, "-o", tmp_path / "x.safetensors", expect=expect,
             leaves_nothing_in=tmp_path)
    p = aq("inspect", b, check=False)
    assert p.returncode != 0 and expect in p.stderr
    # Without the column: the same weights, no check.
    old = tmp_path / "old.arrow"
    plain = t.drop_columns(["checksum"])
    with pa.ipc.new_file(str(old), plain.schema) as w:
        w.write_table(plain)
    aq("dequantize", q, "-o", tmp_path / "new.safetensors")
    aq("dequantize", old, "-o", tmp_path / "old.safetensors")
    new_w = load_file(str(tmp_path / "new.safetensors"))
    old_w = load_file(str(tmp_path / "old.safetensors"))
    assert new_w.keys() == old_w.keys()
    assert all(np.array_equal(new_w[k], old_w[k]) for k in new_w)
