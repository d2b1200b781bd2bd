"""Writes the golden vectors tests/data/golden_*.bin from the independent numpy implementation
of docs/format.md (tests/reference/affine_numpy.py). tests/core/test_golden.c checks the C
library against them, byte for byte.

    .venv/bin/python tests/data/golden.py           # (re)write the files
    .venv/bin/python tests/data/golden.py --check   # exit 1 if the files differ from a rerun

Inputs are deterministic: a splitmix64 generator (below, seeded per case from its name) feeds
uniform and Box-Muller normal values, so the files do not depend on numpy's random streams.
A rerun with the pinned numpy writes identical bytes.

File layout (all integers little-endian, floats IEEE 754 little-endian):

    file   := magic "AQGOLDEN" (8 bytes) | u32 version (1) | u32 case_count | case * case_count
              (nothing may follow the last case)
    case   := u32 name_len | name (UTF-8, name_len bytes, no NUL)
              | u8 dtype (aq_dtype: 0 f32, 1 f16, 2 bf16, 3 f64) | u8 bit_width | u8 ndim
              | u8 expect (0: quantizes; 1: must fail as non-finite)
              | u64 group_size | i64 shape[ndim] | u64 elements | input[elements * dtype size]
              then, if expect == 0:
                u64 packed_bytes | packed[packed_bytes]
                | u64 groups | f32 scales[groups] | f32 zero_points[groups]
                | f32 restored[elements]   (section 4 applied to the packed codes, scales and
                                            zero points above)
                | u16 restored_f16[elements] | u16 restored_bf16[elements]
                                           (the same, written as float16 and as bfloat16)
              or, if expect == 1:
                u64 bad_index             (flat index of the first NaN/Inf, section 2)
"""
import pathlib
import struct
import sys
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reference"))

import affine_numpy as ref  # noqa: E402

MAGIC, VERSION = b"AQGOLDEN", 1
DTYPES = {"f32": (0, np.float32), "f16": (1, np.float16), "bf16": (2, np.uint16),
          "f64": (3, np.float64)}
ROW = ref.GROUP_SIZE_ROW
GROUP_SIZES = (8, 32, 64, 128, 256, ROW)
F32 = np.float32
FLT_MAX = float(np.finfo(F32).max)
M64 = (1 << 64) - 1


# -- deterministic inputs ------------------------------------------------------------------

def rng_u64(seed, n):
    """splitmix64: outputs 1..n of the generator whose state starts at seed."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed & M64) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed, n):
    """Uniform in [0, 1), 53 bits."""
    return (rng_u64(seed, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def normal(seed, n):
    """Standard normal (Box-Muller) in float64."""
    u1 = 1.0 - uniform(seed, n)  # (0, 1]
    u2 = uniform(seed ^ 0x5DEECE66D, n)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def seed_of(name):
    return zlib.crc32(name.encode()) * 0x100000001


# -- cases ---------------------------------------------------------------------------------

class Case:
    def __init__(self, name, x, shape, bits, group_size, dtype="f32"):
        self.name, self.shape, self.bits, self.group_size, self.dtype = (
            name, tuple(shape), bits, group_size, dtype)
        self.x = np.ascontiguousarray(np.asarray(x, dtype=DTYPES[dtype][1]).reshape(-1))
        assert self.x.size == int(np.prod(self.shape, dtype=np.int64)), name

    def encode(self):
        code, _ = DTYPES[self.dtype]
        name = self.name.encode()
        out = [struct.pack("<I", len(name)), name]
        try:
            packed, scales, zps = ref.quantize(self.x, self.shape, self.bits, self.group_size,
                                               dtype_name=self.dtype, name=self.name)
            expect = 0
        except ValueError as e:
            if "NaN or Inf at index" not in str(e):
                raise
            expect, bad = 1, int(str(e).rsplit(" ", 1)[1])
        out.append(struct.pack("<BBBBQ", code, self.bits, len(self.shape), expect,
                               self.group_size))
        out.append(struct.pack(f"<{len(self.shape)}q", *self.shape))
        out.append(struct.pack("<Q", self.x.size) + self.x.astype(self.x.dtype.newbyteorder("<"))
                   .tobytes())
        if expect == 1:
            out.append(struct.pack("<Q", bad))
        else:
            restored = ref.dequantize(packed, scales, zps, self.shape, self.bits,
                                      self.group_size)
            out.append(struct.pack("<Q", len(packed)) + packed)
            out.append(struct.pack("<Q", scales.size) + scales.astype("<f4").tobytes()
                       + zps.astype("<f4").tobytes())
            out.append(restored.astype("<f4").tobytes())
            for out_dtype in ("f16", "bf16"):
                other = ref.dequantize(packed, scales, zps, self.shape, self.bits,
                                       self.group_size, out_dtype=out_dtype)
                out.append(other.view(np.uint16).astype("<u2").tobytes())
        return b"".join(out)


def grid_cases():
    """Every bit width with every group size, on N(0,1) data with per-row magnitudes from
    1e-3 to 1e3; 1-D, 2-D and 3-D shapes whose rows end in short tail groups (odd lengths)."""
    shapes = {8: [(300,), (3, 5, 7)], 32: [(1025,), (2, 3, 45)], 64: [(5, 129), (4, 2, 33)],
              128: [(2, 513), (7,)], 256: [(1025,), (3, 300)], ROW: [(3, 1, 100), (6, 65)]}
    cases = []
    for bits in (2, 4, 8):
        for g in GROUP_SIZES:
            for k, shape in enumerate(shapes[g]):
                name = f"grid_b{bits}_g{g}_{'x'.join(map(str, shape))}"
                n = int(np.prod(shape))
                rows = shape[0] if len(shape) > 1 else 1
                mag = 10.0 ** np.repeat(np.linspace(-3, 3, rows), n // rows)
                x = normal(seed_of(name), n) * mag + (k - 0.5) * mag
                cases.append(Case(name, x.astype(F32), shape, bits, g))
        cases.append(Case(f"grid_b{bits}_single", np.array([-1.25], F32), (1,), bits, 8))
    cases.append(Case("grid_b4_scalar", np.array([1.25], F32), (), 4, 128))
    return cases


def edge_cases():
    cases = []
    for bits in (2, 4, 8):
        qmax = (1 << bits) - 1

        # Constant groups (g = 8): zeros, -0.0, mixed zeros, negative, huge, denormal, next to
        # ordinary groups; the last group of each row is a short tail.
        groups = [[0.0] * 8, [-0.0] * 8, [0.0, -0.0] * 4, [-2.5] * 8, [FLT_MAX] * 8,
                  [-FLT_MAX] * 8, [1e-45] * 8, [3.0] * 8, list(range(8)), [7.0] * 8]
        x = np.array([v for grp in groups for v in grp] + [5.0] * 6, F32)
        cases.append(Case(f"edge_constant_b{bits}", x, (2, 43), bits, 8))

        # Exact .5 ties of u = t * inv: lo = 0, hi = qmax (scale 1), values k + 0.5; lo = -qmax
        # with values -(k + 0.5); scale 0.25 with values (k + 0.5) / 4.
        ks = np.arange(qmax) if qmax < 30 else np.arange(0, qmax, qmax // 29)[:30]
        ties = np.concatenate([[0.0, qmax], ks + 0.5])
        ties = np.resize(ties, 32)
        x = np.concatenate([ties, -ties, ties / 4])
        cases.append(Case(f"edge_ties_b{bits}", x.astype(F32), (3, 32), bits, 32))

        # Ties in scale = (float)d: d = 1 + 2^-24 (rounds down to 1) and d = 1 + 3 * 2^-24
        # (rounds up to 1 + 2^-22), from hi = qmax and lo = -qmax * 2^-24 or -3 qmax 2^-24.
        a = [qmax, -qmax * 2.0**-24, 0.0, 1.0, 0.5, 2.0**-30, qmax / 2, 0.75]
        b = [qmax, -3 * qmax * 2.0**-24, 1.5, 0.25, 0.0, qmax - 0.5, 1.0, 0.125]
        cases.append(Case(f"edge_scale_tie_b{bits}", np.array(a + b, F32), (16,), bits, 8))

        # +-FLT_MAX: t = x - lo overflows to +inf; the largest possible range per group.
        x = np.array([-FLT_MAX, FLT_MAX, 0.0, 1.0, -1.0, 1e38, -1e38, 3e38,
                      FLT_MAX, FLT_MAX, np.nextafter(F32(FLT_MAX), F32(0)), 0.0, 1e30, -1e30,
                      FLT_MAX, 2.0,
                      -FLT_MAX, -1e-45, -FLT_MAX, -3e38, -FLT_MAX, -FLT_MAX, -1.0, -2e38,
                      -FLT_MAX, FLT_MAX, -FLT_MAX, FLT_MAX], F32)
        cases.append(Case(f"edge_flt_max_b{bits}", x, (28,), bits, 8))

        # Denormals: all-denormal groups (scale below FLT_MIN, clamped), denormals with zeros
        # of both signs, the smallest denormal 2^-149, the boundary FLT_MIN.
        d = 2.0**-149
        x = np.array([d, 2 * d, 3 * d, 0.0, -d, 5e-40, 1e-39, -1e-38,
                      d, 0.0, -0.0, d, 0.0, d, d, 0.0,
                      2.0**-126, -(2.0**-126), 2.0**-127, 0.0, d, -d, 1e-40, 2.0**-125,
                      1e-42, 1e-42, 1e-42, 1e-42, 2e-42, 1e-42, 1e-42, 1e-42,
                      1.0, d, -d, 0.0, 2.0**-126, 3.0, -0.0, 0.5], F32)
        cases.append(Case(f"edge_denormal_b{bits}", x, (5, 8), bits, 8))

        # One outlier per group (100x the spread) at a pseudo-random position.
        for g, shape in ((8, (8, 37)), (32, (6, 100))):
            name = f"edge_outlier_b{bits}_g{g}"
            n = shape[0] * shape[1]
            x = normal(seed_of(name), n).reshape(shape)
            pos = uniform(seed_of(name) + 1, n)
            sign = np.where(uniform(seed_of(name) + 2, n) < 0.5, -100.0, 100.0)
            i = 0
            for r in range(shape[0]):
                for start in range(0, shape[1], g):
                    length = min(g, shape[1] - start)
                    x[r, start + int(pos[i] * length)] = sign[i]
                    i += 1
            cases.append(Case(name, x.astype(F32), shape, bits, g))

        # Groups far from zero (large negative zero points) and tiny spreads.
        x = np.concatenate([1e30 + normal(seed_of("far") + bits, 20) * 1e23,
                            -7.0 + normal(seed_of("near") + bits, 20) * 1e-6])
        cases.append(Case(f"edge_offset_b{bits}", x.astype(F32), (2, 20), bits, 8))
    return cases


def dtype_cases():
    cases = []
    for bits in (2, 4, 8):
        # float16: normals, subnormals, +-65504, zeros; exact conversion.
        name = f"dtype_f16_b{bits}"
        x = normal(seed_of(name), 3 * 77) * np.repeat([1e-6, 1.0, 3e4], 77)
        x = np.clip(x, -65504, 65504).astype(np.float16)
        x[[0, 5, 80, 160]] = [65504, -65504, 6e-8, -0.0]
        cases.append(Case(name, x, (3, 77), bits, 32, "f16"))

        # bfloat16 (as bits): upper halves of float32 values, bf16 denormals and +-max.
        name = f"dtype_bf16_b{bits}"
        f = (normal(seed_of(name), 2 * 70) * np.repeat([1e-38, 1e30], 70)).astype(F32)
        b = (f.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        b[[0, 1, 2, 71, 72]] = [0x0001, 0x8001, 0x8000, 0x7F7F, 0xFF7F]
        cases.append(Case(name, b, (2, 70), bits, 64, "bf16"))

        # float64: rounding to float32 (ties to even, underflow to +-0, the largest values
        # that still round to +-FLT_MAX), then quantized.
        name = f"dtype_f64_b{bits}"
        x = normal(seed_of(name), 150)
        x[:12] = [1 + 2.0**-24, 1 + 3 * 2.0**-24, -(1 + 2.0**-24), 2.0**-150, -(2.0**-150),
                  3 * 2.0**-150, 1e-300, -1e-300, FLT_MAX + 2.0**103 - 2.0**75,
                  -(FLT_MAX + 2.0**103 - 2.0**75), 0.1, 1 / 3]
        cases.append(Case(name, x, (150,), bits, ROW, "f64"))

    # Non-finite inputs: quantizing must fail, naming the first bad index (section 2).
    f = normal(seed_of("nonfinite"), 64)
    for dtype, value, idx in (("f32", np.nan, 37), ("f32", -np.inf, 0), ("f16", np.inf, 63),
                              ("f64", FLT_MAX + 2.0**103, 12), ("f64", -1e300, 40)):
        x = f.astype(DTYPES[dtype][1])
        x[idx] = value
        x[idx + 1:idx + 3] = np.nan  # later bad values are not the first
        cases.append(Case(f"nonfinite_{dtype}_{idx}", x, (8, 8), 4, 8, dtype))
    b = (f.astype(F32).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    b[9], b[20] = 0x7FC1, 0xFF80  # bfloat16 NaN, -Inf
    cases.append(Case("nonfinite_bf16_9", b, (64,), 2, 8, "bf16"))
    return cases


FILES = {"golden_grid.bin": grid_cases, "golden_edge.bin": edge_cases,
         "golden_dtypes.bin": dtype_cases}


def build(cases):
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return MAGIC + struct.pack("<II", VERSION, len(cases)) + b"".join(c.encode() for c in cases)


def main(argv):
    check = "--check" in argv
    stale = []
    for fname, make in FILES.items():
        data = build(make())
        path = HERE / fname
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(fname)
        else:
            path.write_bytes(data)
            print(f"{path}: {len(data)} bytes")
    if stale:
        print("stale golden files (rerun tests/data/golden.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
