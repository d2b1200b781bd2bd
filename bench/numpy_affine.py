"""The affine format (docs/format.md) in vectorised numpy, as a Python user would write it, timed
against the C library (through ctypes on build/libarrowquant.so) in the same run.

    .venv/bin/python bench/numpy_affine.py [--build build] [--rows 2048] [--cols 4096]
                                           [--reps 3] [--threads 1]

Prints one markdown row per (operation, dtype, bits, group size): numpy and C weights per
second, the ratio, and whether both produced the same bytes (they should: the numpy code
follows the same operation order, so it doubles as a check of the format).
"""
import argparse
import ctypes
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLT_MIN = np.float32(2.0**-126)
DTYPES = {"f32": (0, np.float32), "f16": (1, np.float16)}


# ---- numpy: the format, for tensors whose rows are a whole number of groups ----------------

def np_quantize(x, bits, g):
    """x: 2-D float array (rows, cols), cols % g == 0. Returns packed bytes, scales, zps."""
    qmax = (1 << bits) - 1
    rows, cols = x.shape
    xg = x.astype(np.float32, copy=False).reshape(rows, cols // g, g)
    lo = xg.min(axis=2) + np.float32(0.0)
    hi = xg.max(axis=2) + np.float32(0.0)
    const = hi == lo
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = ((hi.astype(np.float64) - lo.astype(np.float64)) / qmax).astype(np.float32)
        scale = np.where(scale >= FLT_MIN, scale, FLT_MIN)
        inv = np.float32(1.0) / scale
        zp = (-lo.astype(np.float64) / scale.astype(np.float64)).astype(np.float32)
    scale = np.where(const, np.float32(1.0), scale)
    inv = np.where(const, np.float32(0.0), inv)
    zp = np.where(const, -lo, zp)
    with np.errstate(over="ignore", invalid="ignore"):
        u = (xg - lo[:, :, None]) * inv[:, :, None]
    q = np.clip(np.rint(u), 0, qmax).astype(np.uint8).reshape(-1)
    per = 8 // bits
    q = q.reshape(-1, per)
    packed = np.zeros(q.shape[0], dtype=np.uint8)
    for j in range(per):
        packed |= q[:, j] << np.uint8(j * bits)
    return packed, scale.reshape(-1), zp.reshape(-1)


def np_dequantize(packed, scales, zps, rows, cols, bits, g):
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    q = np.empty((packed.size, per), dtype=np.uint8)
    for j in range(per):
        q[:, j] = (packed >> np.uint8(j * bits)) & mask
    q = q.reshape(rows, cols // g, g).astype(np.float32)
    return ((q - zps.reshape(rows, -1)[:, :, None]) * scales.reshape(rows, -1)[:, :, None]).reshape(
        rows, cols)


# ---- C through ctypes ----------------------------------------------------------------------

class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("data", ctypes.c_void_p),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("ndim", ctypes.c_size_t)]


class QBuffers(ctypes.Structure):
    _fields_ = [("packed", ctypes.c_void_p), ("packed_capacity", ctypes.c_size_t),
                ("scales", ctypes.c_void_p), ("zero_points", ctypes.c_void_p),
                ("groups_capacity", ctypes.c_size_t)]


class QTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("scheme", ctypes.c_int), ("bit_width", ctypes.c_uint),
                ("group_size", ctypes.c_size_t), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("ndim", ctypes.c_size_t), ("packed", ctypes.c_void_p),
                ("packed_size", ctypes.c_size_t), ("scales", ctypes.c_void_p),
                ("zero_points", ctypes.c_void_p), ("groups", ctypes.c_size_t)]


class Lib:
    PARAM_BIT_WIDTH, PARAM_GROUP_SIZE, PARAM_THREADS = 0, 1, 3

    def __init__(self, path, threads):
        self.lib = ctypes.CDLL(str(path))
        L, vp, sz = self.lib, ctypes.c_void_p, ctypes.c_size_t
        L.aq_ctx_kernels.restype = ctypes.c_char_p
        L.aq_ctx_kernels.argtypes = [vp]
        L.aq_ctx_create.argtypes = [ctypes.POINTER(vp), vp]
        L.aq_ctx_set_param.argtypes = [vp, ctypes.c_int, ctypes.c_int64, vp]
        L.aq_quantize.argtypes = [vp, vp, vp, vp]
        L.aq_dequantize.argtypes = [vp, vp, ctypes.c_int, vp, sz, vp]
        L.aq_ctx_free.argtypes = [vp]
        self.err = Error()
        self.ctx = ctypes.c_void_p()
        self.check(self.lib.aq_ctx_create(ctypes.byref(self.ctx), ctypes.byref(self.err)))
        self.set(self.PARAM_THREADS, threads)
        self.kernels = self.lib.aq_ctx_kernels(self.ctx).decode()

    def check(self, status):
        if status != 0:
            raise RuntimeError(self.err.message.decode())

    def set(self, param, value):
        self.check(self.lib.aq_ctx_set_param(self.ctx, param, value, ctypes.byref(self.err)))

    def quantize(self, x, dtype_code, shape, bits, g, packed, scales, zps):
        t = Tensor(b"bench", dtype_code, x.ctypes.data, shape, 2)
        b = QBuffers(packed.ctypes.data, packed.size, scales.ctypes.data, zps.ctypes.data,
                     scales.size)
        self.check(self.lib.aq_quantize(self.ctx, ctypes.byref(t), ctypes.byref(b),
                                        ctypes.byref(self.err)))

    def dequantize(self, packed, scales, zps, shape, bits, g, out):
        q = QTensor(b"bench", 0, bits, g, shape, 2, packed.ctypes.data, packed.size,
                    scales.ctypes.data, zps.ctypes.data, scales.size)
        self.check(self.lib.aq_dequantize(self.ctx, ctypes.byref(q), 0, out.ctypes.data,
                                          out.size, ctypes.byref(self.err)))


def best_of(reps, fn):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lib = Lib(pathlib.Path(args.build) / "libarrowquant.so", args.threads)
    rows, cols = args.rows, args.cols
    n = rows * cols
    shape = (ctypes.c_int64 * 2)(rows, cols)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((rows, cols), dtype=np.float32)
    print(f"# numpy {np.__version__} vs C ({lib.kernels}, {args.threads} thread(s)): "
          f"[{rows}, {cols}] = {n} weights, best of {args.reps}")
    print("| op | dtype | bits | group | numpy G weights/s | C G weights/s | C / numpy | same bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for dname, (dcode, npdt) in DTYPES.items():
        x = np.ascontiguousarray(base.astype(npdt))
        for bits in (2, 4, 8):
            lib.set(Lib.PARAM_BIT_WIDTH, bits)
            for g in (64, 128):
                lib.set(Lib.PARAM_GROUP_SIZE, g)
                packed = np.empty(n * bits // 8, dtype=np.uint8)
                scales = np.empty(n // g, dtype=np.float32)
                zps = np.empty(n // g, dtype=np.float32)
                res = {}
                t_np = best_of(args.reps, lambda: res.update(r=np_quantize(x, bits, g)))
                t_c = best_of(args.reps,
                              lambda: lib.quantize(x, dcode, shape, bits, g, packed, scales, zps))
                p_np, s_np, z_np = res["r"]
                same = (np.array_equal(p_np, packed) and np.array_equal(s_np.view(np.uint32),
                        scales.view(np.uint32)) and np.array_equal(z_np.view(np.uint32),
                                                                   zps.view(np.uint32)))
                print(f"| quantize | {dname} | {bits} | {g} | {n / t_np / 1e9:.3f} | "
                      f"{n / t_c / 1e9:.3f} | {t_np / t_c:.0f}x | {'yes' if same else 'NO'} |",
                      flush=True)
                if dname != "f32":
                    continue
                out = np.empty(n, dtype=np.float32)
                t_np = best_of(args.reps, lambda: res.update(
                    d=np_dequantize(packed, scales, zps, rows, cols, bits, g)))
                t_c = best_of(args.reps,
                              lambda: lib.dequantize(packed, scales, zps, shape, bits, g, out))
                same = np.array_equal(res["d"].reshape(-1).view(np.uint32), out.view(np.uint32))
                print(f"| dequantize | f32 | {bits} | {g} | {n / t_np / 1e9:.3f} | "
                      f"{n / t_c / 1e9:.3f} | {t_np / t_c:.0f}x | {'yes' if same else 'NO'} |",
                      flush=True)


if __name__ == "__main__":
    main()
