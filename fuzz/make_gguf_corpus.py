"""Writes the seed corpus of the GGUF reader fuzzer (fuzz/corpus/gguf/): small valid files
written by gguf-py (PyPI's gguf, the reference writer) with every type the library reads, and
hand-made broken ones (each kind of error the reader reports). Run with the project's .venv:
.venv/bin/python fuzz/make_gguf_corpus.py"""
import pathlib
import struct

import gguf
import numpy as np

out = pathlib.Path(__file__).parent / "corpus" / "gguf"
out.mkdir(parents=True, exist_ok=True)
GT = gguf.GGMLQuantizationType
rng = np.random.default_rng(0)


def written(name, tensors, arch="flux", extra=None):
    path = out / name
    w = gguf.GGUFWriter(str(path), arch)
    w.add_quantization_version(2)
    for k, v in (extra or {}).items():
        w.add_key_value(k, v[0], v[1])
    for tname, qtype, raw in tensors:
        w.add_tensor(tname, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


x = rng.standard_normal((2, 256)).astype(np.float32) * 0.02
tensors = [("f32", GT.F32, x[:, :8].copy()), ("f16", GT.F16, x[:, :8].astype(np.float16))]
for t in (GT.Q8_0, GT.Q4_0, GT.Q4_1, GT.Q5_0, GT.Q5_1, GT.BF16):
    tensors.append((t.name.lower(), t, gguf.quants.quantize(x, t)))
# Types gguf-py only decodes: random blocks with a finite binary16 scale where ggml keeps it.
for t, scale_at in ((GT.Q2_K, 80), (GT.Q3_K, 108), (GT.Q4_K, 0), (GT.Q5_K, 0), (GT.Q6_K, 208),
                    (GT.IQ4_NL, 0), (GT.IQ4_XS, 0)):
    block, size = gguf.GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, (2, 256 // block * size), dtype=np.uint8)
    for b in range(0, raw.shape[1], size):
        raw[:, b + scale_at:b + scale_at + 2] = np.frombuffer(
            np.float16(0.01).tobytes(), np.uint8)
    tensors.append((t.name.lower(), t, raw))
written("valid_all_types", tensors,
        extra={"general.name": ("seed", gguf.GGUFValueType.STRING),
               "list": ([1, 2, 3], gguf.GGUFValueType.ARRAY)})
written("valid_empty", [], arch="sd1")
good = (out / "valid_all_types").read_bytes()


def raw_file(name, data):
    (out / name).write_bytes(data)


def header(n_tensors, n_kv, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def tensor_info(name, dims, qtype, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(
        struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", qtype, offset)


def pad(b, a=32):
    return b + bytes((-len(b)) % a)


raw_file("truncated_header", good[:40])
raw_file("truncated_data", good[: len(good) - 100])
raw_file("bad_magic", b"GGUX" + good[4:])
raw_file("bad_version", b"GGUF" + struct.pack("<I", 7) + good[8:])
raw_file("huge_counts", header(1 << 60, 1 << 60))
raw_file("unknown_value_type", header(0, 1) + s("k") + struct.pack("<I", 99))
raw_file("string_past_end", header(0, 1) + s("k") + struct.pack("<IQ", 8, 1 << 40))
raw_file("array_past_end", header(0, 1) + s("k") + struct.pack("<IIQ", 9, 4, 1 << 50))
raw_file("nested_arrays", header(0, 1) + s("k") + struct.pack("<I", 9) +
         struct.pack("<IQ", 9, 1) * 12 + struct.pack("<IQ", 0, 0))
raw_file("unknown_tensor_type", pad(header(1, 0) + tensor_info("t", [32], 99, 0)) + bytes(64))
raw_file("data_past_end", pad(header(1, 0) + tensor_info("t", [256], 0, 0)) + bytes(64))
raw_file("misaligned", pad(header(1, 0) + tensor_info("t", [8], 0, 4)) + bytes(64))
raw_file("bad_alignment", pad(header(1, 1) + s("general.alignment") + struct.pack("<II", 4, 3)
                              + tensor_info("t", [8], 0, 0)) + bytes(64))
raw_file("partial_block", pad(header(1, 0) + tensor_info("t", [40], 8, 0)) + bytes(64))
raw_file("too_many_dims", pad(header(1, 0) + tensor_info("t", [1, 1, 1, 1, 1], 0, 0)) + bytes(64))
raw_file("overflow_dims", pad(header(1, 0) + tensor_info("t", [1 << 40, 1 << 40], 0, 0)))
raw_file("duplicate_names", pad(header(2, 0) + tensor_info("t", [8], 0, 0) +
                                tensor_info("t", [8], 0, 32)) + bytes(64))
raw_file("bad_orig_shape", pad(header(1, 1) + s("comfy.gguf.orig_shape.t") +
                               struct.pack("<IIQ", 9, 5, 2) + struct.pack("<ii", 3, 3) +
                               tensor_info("t", [8], 0, 0)) + bytes(64))
raw_file("orig_shape", pad(header(1, 1) + s("comfy.gguf.orig_shape.t") +
                           struct.pack("<IIQ", 9, 5, 5) + struct.pack("<iiiii", 1, 2, 2, 1, 2) +
                           tensor_info("t", [2, 2, 2], 0, 0)) + bytes(64))
