"""ggml block formats from numpy: encode floats into GGUF tensor bytes and decode them back
(docs/gguf.md). The bytes are ggml's block layouts, produced by the library's own searched
encoders; decode gives the floats of ggml's reference decoder, bit for bit.

    from arrow_quant_v2 import gguf
    data = gguf.encode(weights, "Q4_K")          # bytes; weights.shape[-1] % 256 == 0
    restored = gguf.decode(data, "Q4_K", weights.shape)

Whole files: arrow_quant_v2.quantize_gguf and dequantize_gguf.
"""
from __future__ import annotations

from typing import Any, Sequence

from . import arrow_quant_v2 as _ext

WRITABLE = ("F32", "F16", "BF16", "Q8_0", "Q5_0", "Q4_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")
READABLE = WRITABLE + ("Q4_1", "Q5_1", "IQ4_NL", "IQ4_XS")


def encode(array: Any, gguf_type: str, importance: Any = None, *, threads: int = 0,
           gguf_search: str = "full") -> bytes:
    """Encodes a C-contiguous float32/float16/float64 array (any shape; its element count a
    multiple of the type's block) into ggml blocks over its flattened elements. importance:
    None or one float32 weight per element (the encoders then minimise the weighted error).
    gguf_search: "full" (default) or "none": Q8_0, Q5_0 and Q4_0 then round as ggml's
    reference quantizer does (its bytes, at memory speed; importance unused). The setting
    gguf_search of the settings table (docs/gguf.md)."""
    return _ext._gguf_encode(gguf_type, array, importance, threads, gguf_search)


def decode(data: Any, gguf_type: str, shape: int | Sequence[int], *, threads: int = 0) -> Any:
    """Decodes ggml blocks into a float32 numpy array of the given shape."""
    import numpy as np

    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for d in dims:
        count *= int(d)
    raw = _ext._gguf_decode(gguf_type, data, count, threads)
    return np.frombuffer(raw, dtype=np.float32).reshape(dims)
