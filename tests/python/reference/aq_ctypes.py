"""A thin ctypes binding of the library's one-tensor calls (aq_quantize, aq_dequantize) on
numpy arrays, for the reference tests."""
import ctypes

import numpy as np

AQ_DTYPES = {"f32": 0, "f16": 1, "bf16": 2, "f64": 3}
AQ_PARAM_BIT_WIDTH, AQ_PARAM_GROUP_SIZE = 0, 1
AQ_OK = 0


class AqError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class AqTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("data", ctypes.c_void_p),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("ndim", ctypes.c_size_t)]


class AqLayout(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_size_t), ("cols", ctypes.c_size_t),
                ("elements", ctypes.c_size_t), ("bit_width", ctypes.c_uint),
                ("group_size", ctypes.c_size_t), ("groups_per_row", ctypes.c_size_t),
                ("groups", ctypes.c_size_t), ("packed_bytes", ctypes.c_size_t)]


class AqQBuffers(ctypes.Structure):
    _fields_ = [("packed", ctypes.c_void_p), ("packed_capacity", ctypes.c_size_t),
                ("scales", ctypes.c_void_p), ("zero_points", ctypes.c_void_p),
                ("groups_capacity", ctypes.c_size_t)]


class AqQTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("scheme", ctypes.c_int), ("bit_width", ctypes.c_uint),
                ("group_size", ctypes.c_size_t), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("ndim", ctypes.c_size_t), ("packed", ctypes.c_void_p),
                ("packed_size", ctypes.c_size_t), ("scales", ctypes.c_void_p),
                ("zero_points", ctypes.c_void_p), ("groups", ctypes.c_size_t)]


class AqLibraryError(Exception):
    def __init__(self, code, message):
        super().__init__(f"status {code}: {message}")
        self.code, self.message = code, message


class Aq:
    """aq_quantize / aq_dequantize on numpy arrays, one context per (bits, group size)."""

    def __init__(self, lib):
        self.lib = lib
        for fn in ("aq_ctx_create", "aq_ctx_set_param", "aq_quantize_bound", "aq_quantize",
                   "aq_dequantize"):
            getattr(lib, fn).restype = ctypes.c_int
        lib.aq_ctx_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(AqError)]
        lib.aq_ctx_set_param.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                                         ctypes.POINTER(AqError)]
        lib.aq_quantize_bound.argtypes = [ctypes.c_void_p, ctypes.POINTER(AqTensor),
                                          ctypes.POINTER(AqLayout), ctypes.POINTER(AqError)]
        lib.aq_quantize.argtypes = [ctypes.c_void_p, ctypes.POINTER(AqTensor),
                                    ctypes.POINTER(AqQBuffers), ctypes.POINTER(AqError)]
        lib.aq_dequantize.argtypes = [ctypes.c_void_p, ctypes.POINTER(AqQTensor), ctypes.c_int,
                                      ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(AqError)]
        lib.aq_ctx_free.argtypes = [ctypes.c_void_p]
        lib.aq_ctx_free.restype = None
        self.ctxs = {}

    def _check(self, status, err):
        if status != AQ_OK:
            raise AqLibraryError(status, err.message.decode())

    def ctx(self, bits, group_size):
        key = (bits, group_size)
        if key not in self.ctxs:
            ctx, err = ctypes.c_void_p(), AqError()
            self._check(self.lib.aq_ctx_create(ctypes.byref(ctx), ctypes.byref(err)), err)
            self.ctxs[key] = ctx
            self._check(self.lib.aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits,
                                                  ctypes.byref(err)), err)
            self._check(self.lib.aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, group_size,
                                                  ctypes.byref(err)), err)
        return self.ctxs[key]

    def quantize(self, x, shape, bits, group_size, dtype_name=None):
        """-> (packed bytes, scales float32, zero points float32), or AqLibraryError."""
        x = np.ascontiguousarray(x)
        dtype_name = dtype_name or {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16",
                                    np.dtype(np.float64): "f64"}[x.dtype]
        ctx, err = self.ctx(bits, group_size), AqError()
        shp = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        t = AqTensor(b"tensor", AQ_DTYPES[dtype_name], x.ctypes.data, shp, len(shape))
        lay = AqLayout()
        self._check(self.lib.aq_quantize_bound(ctx, ctypes.byref(t), ctypes.byref(lay),
                                               ctypes.byref(err)), err)
        packed = np.zeros(lay.packed_bytes, np.uint8)
        scales = np.zeros(lay.groups, np.float32)
        zps = np.zeros(lay.groups, np.float32)
        buf = AqQBuffers(packed.ctypes.data, packed.size, scales.ctypes.data, zps.ctypes.data,
                         lay.groups)
        self._check(self.lib.aq_quantize(ctx, ctypes.byref(t), ctypes.byref(buf),
                                         ctypes.byref(err)), err)
        return packed.tobytes(), scales, zps

    def dequantize(self, packed, scales, zero_points, shape, bits, group_size, out_dtype="f32"):
        """-> float32 values, float16 values, or bfloat16 bits as uint16."""
        ctx, err = self.ctx(bits, group_size), AqError()
        shp = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        pk = np.frombuffer(bytes(packed), np.uint8).copy()
        scales = np.ascontiguousarray(scales, np.float32)
        zero_points = np.ascontiguousarray(zero_points, np.float32)
        n = int(np.prod(shape, dtype=np.int64))
        out = np.zeros(n, {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[out_dtype])
        q = AqQTensor(b"tensor", 0, bits, group_size, shp, len(shape), pk.ctypes.data, pk.size,
                      scales.ctypes.data, zero_points.ctypes.data, scales.size)
        self._check(self.lib.aq_dequantize(ctx, ctypes.byref(q), AQ_DTYPES[out_dtype],
                                           out.ctypes.data, n, ctypes.byref(err)), err)
        return out

    def close(self):
        for ctx in self.ctxs.values():
            self.lib.aq_ctx_free(ctx)
        self.ctxs.clear()
