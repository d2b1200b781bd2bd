"""An independent numpy implementation of docs/format.md, sections 1 to 5 (affine scheme).

Written from the document alone, never from src/, so that the C library is checked against a
second reading of the specification rather than against itself. Each step names the section
and follows its exact operation order: float32 arithmetic on np.float32 arrays, "double" on
np.float64 arrays (IEEE binary64, round to nearest even), np.rint is round-half-to-even.

Public API (other tests import it by path; keep these names and signatures):
    quantize(x, shape, bits, group_size, *, dtype_name=None, name="tensor")
        -> (packed: bytes, scales: float32[groups], zero_points: float32[groups])
    dequantize(packed, scales, zero_points, shape, bits, group_size, *, out_dtype="f32")
        -> float32[elements] (or float16, or bfloat16 bits as uint16, per out_dtype)
    pack(codes, bits) -> bytes
    unpack(packed, n, bits) -> uint8[n]
"""
import numpy as np

__all__ = ["quantize", "dequantize", "pack", "unpack", "to_float32", "to_bf16", "layout"]

GROUP_SIZE_ROW = 4294967295
FLT_MIN = np.float32(2.0**-126)


def layout(shape, bits, group_size):
    """Section 1: (rows, cols, groups_per_row, groups, packed_bytes) for a shape."""
    if bits not in (2, 4, 8):
        raise ValueError(f"Invalid bit_width: {bits}. Must be 2, 4, or 8")
    if not 8 <= int(group_size) <= GROUP_SIZE_ROW:
        raise ValueError(f"invalid group size {group_size}: must be 8 .. {GROUP_SIZE_ROW}")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    if len(shape) == 0:
        rows, cols = 1, 1
    elif len(shape) == 1:
        rows, cols = 1, shape[0]
    else:
        rows, cols = shape[0], int(np.prod(shape[1:], dtype=object))
    if rows * cols == 0:
        raise ValueError(f"shape {shape} holds no element")
    groups_per_row = -(-cols // int(group_size))
    groups = rows * groups_per_row
    packed_bytes = -(-(rows * cols * bits) // 8)
    return rows, cols, groups_per_row, groups, packed_bytes


def to_float32(x, dtype_name=None, name="tensor"):
    """Section 2: every element to float32, flattened; ValueError naming the first bad index."""
    x = np.asarray(x)
    if dtype_name == "bf16":
        if x.dtype != np.uint16:
            raise ValueError("bfloat16 input must be given as a uint16 array")
        # bfloat16 is the upper half of a float32: exact.
        f = (x.reshape(-1).astype(np.uint32) << np.uint32(16)).view(np.float32)
    elif dtype_name not in (None, "f32", "f16", "f64"):
        raise ValueError(f"unknown dtype_name {dtype_name!r}")
    elif x.dtype in (np.float32, np.float16):
        f = x.reshape(-1).astype(np.float32)  # float16 -> float32 is exact
    elif x.dtype == np.float64:
        with np.errstate(over="ignore"):  # beyond the float32 range -> inf, reported below
            f = x.reshape(-1).astype(np.float32)  # round to nearest, ties to even
    else:
        raise ValueError(f"unsupported dtype {x.dtype}")
    bad = ~np.isfinite(f)
    if bad.any():
        raise ValueError(f"Layer '{name}' contains NaN or Inf at index {int(np.argmax(bad))}")
    return f


def pack(codes, bits):
    """Section 5: LSB-first over the flattened tensor, zero-padded last byte."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes
    padded = padded.reshape(-1, per_byte)
    out = np.zeros(padded.shape[0], dtype=np.uint8)
    for i in range(per_byte):
        out |= padded[:, i] << np.uint8(i * bits)
    return out.tobytes()


def unpack(packed, n, bits):
    """Section 5, read back: the first n codes of a packed buffer."""
    data = np.frombuffer(bytes(packed), dtype=np.uint8)
    per_byte = 8 // bits
    if data.size < -(-n // per_byte):
        raise ValueError(f"packed buffer of {data.size} bytes is too short for {n} codes")
    mask = np.uint8((1 << bits) - 1)
    codes = np.stack([(data >> np.uint8(i * bits)) & mask for i in range(per_byte)], axis=1)
    return codes.reshape(-1)[:n].copy()


def _groups(values, rows, cols, group_size):
    """Rows cut into groups (section 1) as a (rows, groups_per_row, g) float32 array and the
    number of real elements in the last group. The last group of each row is padded with the
    row's last value, which belongs to that group anyway, so min and max are unchanged; the
    padding codes are dropped afterwards."""
    g = min(int(group_size), cols)
    gpr = -(-cols // g)
    m = values.reshape(rows, cols)
    if gpr * g != cols:
        pad = np.repeat(m[:, -1:], gpr * g - cols, axis=1)
        m = np.concatenate([m, pad], axis=1)
    return m.reshape(rows, gpr, g), g


def quantize(x, shape, bits, group_size, *, dtype_name=None, name="tensor"):
    """Sections 2, 3 and 5. x: float32/float16/float64 values (or bfloat16 bits as uint16 with
    dtype_name="bf16") in row-major order; returns (packed bytes, scales, zero_points)."""
    rows, cols, gpr, groups, _ = layout(shape, bits, group_size)
    f = to_float32(x, dtype_name, name)
    if f.size != rows * cols:
        raise ValueError(f"{f.size} values do not match shape {tuple(shape)}")
    qmax = (1 << bits) - 1
    xg, g = _groups(f, rows, cols, group_size)

    # 3.1: min and max, then + 0.0f turns -0.0 into +0.0.
    lo = xg.min(axis=2, keepdims=True) + np.float32(0.0)
    hi = xg.max(axis=2, keepdims=True) + np.float32(0.0)
    constant = hi == lo

    # Computed for every group, then replaced in constant groups (3.2), whose values here may
    # overflow: hence the silenced warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        # 3.3: scale and zero point in double, each rounded once to float32.
        d = (hi.astype(np.float64) - lo.astype(np.float64)) / float(qmax)
        scale = d.astype(np.float32)
        scale = np.where(scale < FLT_MIN, FLT_MIN, scale).astype(np.float32)
        inv = (np.float32(1.0) / scale).astype(np.float32)
        zero_point = (-lo.astype(np.float64) / scale.astype(np.float64)).astype(np.float32)

        # Per element, float32: t = x - lo (may overflow to +inf), u = t * inv,
        # q = min(max(rne(u), 0), qmax).
        t = (xg - lo).astype(np.float32)
        u = (t * inv).astype(np.float32)
    q = np.clip(np.rint(u), 0, qmax)

    # 3.2: constant groups: scale 1, zero point -lo (exact), every code 0.
    scale = np.where(constant, np.float32(1.0), scale).astype(np.float32)
    zero_point = np.where(constant, -lo, zero_point).astype(np.float32)
    q = np.where(constant, 0, q).astype(np.uint8)

    codes = q.reshape(rows, gpr * g)[:, :cols]
    return pack(codes, bits), scale.reshape(groups), zero_point.reshape(groups)


def to_bf16(values):
    """float32 to bfloat16 bits (uint16), round to nearest, ties to even; values beyond the
    bfloat16 range become +-Inf. (Section 4; NaN never occurs there.)"""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))
    return (rounded >> np.uint64(16)).astype(np.uint16)


def dequantize(packed, scales, zero_points, shape, bits, group_size, *, out_dtype="f32"):
    """Section 4: x_hat = ((float)q - zero_point) * scale, two float32 operations, after the
    checks a reader must make on a quantized tensor from outside; then, for out_dtype "f16"
    or "bf16", rounded to nearest even (bfloat16 returned as uint16 bits)."""
    if out_dtype not in ("f32", "f16", "bf16"):
        raise ValueError(f"out_dtype must be f32, f16 or bf16, not {out_dtype!r}")
    rows, cols, gpr, groups, packed_bytes = layout(shape, bits, group_size)
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    zero_points = np.asarray(zero_points, dtype=np.float32).reshape(-1)
    if len(packed) != packed_bytes:
        raise ValueError(f"packed data holds {len(packed)} bytes, expected {packed_bytes}")
    if scales.size != groups or zero_points.size != groups:
        raise ValueError(
            f"{scales.size} scales and {zero_points.size} zero points, expected {groups} each")
    if not (np.isfinite(scales).all() and np.isfinite(zero_points).all()):
        raise ValueError("scales and zero points must be finite")
    q = unpack(packed, rows * cols, bits).astype(np.float32).reshape(rows, cols)
    group_of_col = np.arange(cols) // min(int(group_size), cols)
    s = scales.reshape(rows, gpr)[:, group_of_col]
    z = zero_points.reshape(rows, gpr)[:, group_of_col]
    with np.errstate(over="ignore"):
        out = ((q - z).astype(np.float32) * s).astype(np.float32).reshape(-1)
        if out_dtype == "f16":
            return out.astype(np.float16)  # IEEE 754 conversion: nearest even, overflow to Inf
    return to_bf16(out) if out_dtype == "bf16" else out
