"""Writes the seed corpus of the safetensors header fuzzer (fuzz/corpus/safetensors/): small
valid files written by Hugging Face's safetensors, and hand-made broken ones (each kind of
error the parser reports). Run with the project's .venv: .venv/bin/python fuzz/make_safetensors_corpus.py"""
import json
import pathlib
import struct

import numpy as np
from safetensors.numpy import save

out = pathlib.Path(__file__).parent / "corpus" / "safetensors"
out.mkdir(parents=True, exist_ok=True)


def raw(name, header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    (out / name).write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)


rng = np.random.default_rng(0)
(out / "valid_mixed").write_bytes(save({
    "w": rng.standard_normal((4, 8)).astype(np.float32),
    "h": rng.standard_normal(3).astype(np.float16),
    "i": np.arange(5, dtype=np.int64), "b": np.array([True, False]),
    "e": np.zeros((0, 3), np.float32)}, metadata={"format": "pt"}))
(out / "valid_empty").write_bytes(save({}))
e = {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}
raw("overlap", {"a": e, "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, bytes(3))
raw("gap", {"a": e, "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, bytes(6))
raw("past_end", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(4))
raw("size_mismatch", {"a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 2]}}, bytes(2))
raw("unknown_dtype", {"a": {"dtype": "Q7", "shape": [3], "data_offsets": [0, 5]}}, bytes(5))
raw("huge_dims", {"a": {"dtype": "U8", "shape": [2**32, 2**32, 2**32],
                        "data_offsets": [0, 2]}}, bytes(2))
raw("dup", b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
           b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2))
raw("bad_meta", {"__metadata__": {"k": 1}})
raw("header_too_long", {"a": 1}, length=1 << 40)
raw("not_object", b"[1, 2, 3]")
raw("negative", {"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}})
(out / "short").write_bytes(b"\x01\x02")
