"""Single-bit flips over every byte of a small model file (zstd): each one is a clean error
(one line, exit 1, no crash, no output), or restores the very same weights, or lands in the
IPC metadata, which docs/format.md (6.2) lists as not covered by a checksum. A flip in a
body buffer never changes the restored weights without an error: every buffer is a zstd
frame with its content checksum."""
import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.ipc
from safetensors.numpy import save_file


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
        d = tmp_path / f"f{i}"
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
            return "error"
        same = (d / "out.safetensors").read_bytes() == ref
        return "same" if same else "changed"

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
