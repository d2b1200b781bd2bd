"""ctypes bindings of the diffusion section of arrowquant.h, for tests only (users go through
the Python module)."""
import ctypes

import numpy as np


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class Profile(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("bit_width", ctypes.c_uint),
                ("scheme", ctypes.c_int), ("group_size", ctypes.c_size_t),
                ("min_cosine", ctypes.c_double), ("target_bpw", ctypes.c_double)]


class LayerInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("channels", ctypes.c_size_t),
                ("groups", ctypes.c_size_t), ("scale_ratio", ctypes.c_double),
                ("shape_variation", ctypes.c_double)]


SCHEMES = {0: "affine", 1: "affine_search", 2: "kquant"}


def bind(lib):
    vp = ctypes.c_void_p
    lib.aq_profile_get.argtypes = [ctypes.c_char_p, ctypes.POINTER(Profile), ctypes.POINTER(Error)]
    lib.aq_rules_create.argtypes = [ctypes.c_int, ctypes.POINTER(Profile), vp, ctypes.c_size_t,
                                    ctypes.POINTER(vp), ctypes.POINTER(Error)]
    lib.aq_rules_free.argtypes = [vp]
    lib.aq_rules_add_override.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint,
                                          ctypes.POINTER(Error)]
    lib.aq_calib_create.argtypes = [ctypes.POINTER(vp), ctypes.POINTER(Error)]
    lib.aq_calib_free.argtypes = [vp]
    lib.aq_calib_add_batch.argtypes = [vp, vp, vp, ctypes.POINTER(Error)]
    lib.aq_calib_finish.argtypes = [vp, ctypes.c_int, ctypes.POINTER(Error)]
    lib.aq_calib_layer_count.argtypes = [vp]
    lib.aq_calib_layer_count.restype = ctypes.c_size_t
    lib.aq_calib_layer_get.argtypes = [vp, ctypes.c_size_t, ctypes.POINTER(LayerInfo),
                                       ctypes.POINTER(Error)]
    lib.aq_calib_check_model.argtypes = [vp, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                         ctypes.POINTER(Error)]
    lib.aq_calib_importance.argtypes = [vp, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64),
                                        ctypes.c_size_t, ctypes.POINTER(ctypes.c_float),
                                        ctypes.c_size_t, ctypes.POINTER(ctypes.c_int),
                                        ctypes.POINTER(Error)]
    return lib


def profile(lib, name):
    return profile_get(lib, name)


def profile_get(lib, name):
    p, e = Profile(), Error()
    st = lib.aq_profile_get(name.encode(), ctypes.byref(p), ctypes.byref(e))
    return st, p, e.message.decode()


def override_message(lib, pattern, first, second):
    """The C library's message for one pattern given two treatments (16 = keep)."""
    rules, e = ctypes.c_void_p(), Error()
    assert lib.aq_rules_create(2, None, None, 0, ctypes.byref(rules), ctypes.byref(e)) == 0
    try:
        assert lib.aq_rules_add_override(rules, pattern.encode(), first, ctypes.byref(e)) == 0
        assert lib.aq_rules_add_override(rules, pattern.encode(), second, ctypes.byref(e)) != 0
        return e.message.decode()
    finally:
        lib.aq_rules_free(rules)


class Calib:
    """aq_calib over a pyarrow table (each batch exported through the C Data Interface)."""

    def __init__(self, lib, table, combine=0):
        import pyarrow as pa
        from aqarrow import export_batch, release

        self.lib = lib
        self.ptr = ctypes.c_void_p()
        e = Error()
        assert lib.aq_calib_create(ctypes.byref(self.ptr), ctypes.byref(e)) == 0
        try:
            for batch in table.to_batches():
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=table.schema)
                s, a = export_batch(batch)
                st = lib.aq_calib_add_batch(self.ptr, ctypes.addressof(s), ctypes.addressof(a),
                                            ctypes.byref(e))
                release(a)
                release(s)
                if st != 0:
                    raise ValueError(e.message.decode())
            if lib.aq_calib_finish(self.ptr, combine, ctypes.byref(e)) != 0:
                raise ValueError(e.message.decode())
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.ptr:
            self.lib.aq_calib_free(self.ptr)
            self.ptr = ctypes.c_void_p()

    def layers(self):
        out = {}
        for i in range(self.lib.aq_calib_layer_count(self.ptr)):
            info, e = LayerInfo(), Error()
            assert self.lib.aq_calib_layer_get(self.ptr, i, ctypes.byref(info),
                                               ctypes.byref(e)) == 0
            out[info.name.decode()] = (info.channels, info.groups, info.scale_ratio,
                                       info.shape_variation)
        return out

    def check_model(self, names):
        arr = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        e = Error()
        if self.lib.aq_calib_check_model(self.ptr, arr, len(names), ctypes.byref(e)) != 0:
            raise ValueError(e.message.decode())

    def importance(self, name, shape):
        import numpy as np

        n = int(np.prod(shape))
        out = np.zeros(n, dtype=np.float32)
        sh = (ctypes.c_int64 * len(shape))(*shape)
        found, e = ctypes.c_int(), Error()
        st = self.lib.aq_calib_importance(
            self.ptr, name.encode(), sh, len(shape),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, ctypes.byref(found),
            ctypes.byref(e))
        if st != 0:
            raise ValueError(e.message.decode())
        return out.reshape(shape) if found.value else None


# ---- quantizing through the C ABI (the diffusion benchmark and the fixture test) ----

P_BIT_WIDTH, P_GROUP_SIZE, P_SCHEME = 0, 1, 2
SCHEME = {"affine": 0, "affine_search": 1, "kquant": 2}
F32 = 0


class Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("data", ctypes.c_void_p),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("ndim", ctypes.c_size_t)]


class Layout(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_size_t), ("cols", ctypes.c_size_t),
                ("elements", ctypes.c_size_t), ("bit_width", ctypes.c_uint),
                ("group_size", ctypes.c_size_t), ("groups_per_row", ctypes.c_size_t),
                ("groups", ctypes.c_size_t), ("packed_bytes", ctypes.c_size_t)]


class QBuffers(ctypes.Structure):
    _fields_ = [("packed", ctypes.c_void_p), ("packed_capacity", ctypes.c_size_t),
                ("scales", ctypes.c_void_p), ("zero_points", ctypes.c_void_p),
                ("groups_capacity", ctypes.c_size_t)]


class QOptions(ctypes.Structure):
    """aq_quantize_options; its first field is its size (set by the constructor)."""
    _fields_ = [("size", ctypes.c_size_t), ("importance", ctypes.c_void_p)]

    def __init__(self, importance=None):
        super().__init__(ctypes.sizeof(QOptions), importance)


class QTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("scheme", ctypes.c_int), ("bit_width", ctypes.c_uint),
                ("group_size", ctypes.c_size_t), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("ndim", ctypes.c_size_t), ("packed", ctypes.c_void_p),
                ("packed_size", ctypes.c_size_t), ("scales", ctypes.c_void_p),
                ("zero_points", ctypes.c_void_p), ("groups", ctypes.c_size_t)]


class Decision(ctypes.Structure):
    _fields_ = [("keep", ctypes.c_int), ("bit_width", ctypes.c_uint), ("scheme", ctypes.c_int),
                ("group_size", ctypes.c_size_t), ("family", ctypes.c_int), ("rule", ctypes.c_int),
                ("pattern", ctypes.c_char_p)]


class Lib:
    def __init__(self, path):
        self.lib = bind(ctypes.CDLL(str(path)))
        bind_extra(self.lib)
        self.lib.aq_rule_name.restype = ctypes.c_char_p
        self.ctx = ctypes.c_void_p()
        self._ok(self.lib.aq_ctx_create(ctypes.byref(self.ctx), ctypes.byref(self.err)))

    err = Error()

    def _ok(self, st):
        if st != 0:
            raise RuntimeError(self.err.message.decode())

    def qdq(self, name, w, bits, scheme, group, importance=None):
        """Quantizes and restores one float32 array; returns (restored, bytes)."""
        L = self.lib
        for p, v in ((P_BIT_WIDTH, bits), (P_SCHEME, SCHEME[scheme]), (P_GROUP_SIZE, group)):
            self._ok(L.aq_ctx_set_param(self.ctx, p, ctypes.c_int64(v), ctypes.byref(self.err)))
        w = np.ascontiguousarray(w, dtype=np.float32)
        shape = (ctypes.c_int64 * w.ndim)(*w.shape)
        t = Tensor(name.encode(), F32, w.ctypes.data, shape, w.ndim)
        lay = Layout()
        self._ok(L.aq_quantize_bound(self.ctx, ctypes.byref(t), ctypes.byref(lay),
                                     ctypes.byref(self.err)))
        packed = np.zeros(lay.packed_bytes, np.uint8)
        scales = np.zeros(lay.groups, np.float32)
        zeros = np.zeros(lay.groups, np.float32)
        buf = QBuffers(packed.ctypes.data, lay.packed_bytes, scales.ctypes.data,
                       zeros.ctypes.data, lay.groups)
        imp = None if importance is None else np.ascontiguousarray(importance, np.float32)
        opts = QOptions(None if imp is None else imp.ctypes.data)
        self._ok(L.aq_quantize_ex(self.ctx, ctypes.byref(t), ctypes.byref(opts),
                                  ctypes.byref(buf), None, ctypes.byref(self.err)))
        q = QTensor(name.encode(), SCHEME[scheme], bits, lay.group_size, shape, w.ndim,
                    packed.ctypes.data, lay.packed_bytes, scales.ctypes.data, zeros.ctypes.data,
                    lay.groups)
        out = np.zeros(w.shape, np.float32)
        self._ok(L.aq_dequantize(self.ctx, ctypes.byref(q), F32, out.ctypes.data, out.size,
                                 ctypes.byref(self.err)))
        return out, lay.packed_bytes + 8 * lay.groups

    def decisions(self, profile_name, names, shapes):
        L = self.lib
        st, prof, msg = profile_get(L, profile_name)
        if st != 0:
            raise RuntimeError(msg)
        arr = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
        rules = ctypes.c_void_p()
        self._ok(L.aq_rules_create(0, ctypes.byref(prof), ctypes.cast(arr, ctypes.c_void_p),
                                   len(names), ctypes.byref(rules), ctypes.byref(self.err)))
        out = {}
        try:
            for n, s in zip(names, shapes):
                d = Decision()
                sh = (ctypes.c_int64 * max(1, len(s)))(*s)
                self._ok(L.aq_rules_decide(rules, n.encode(), sh, len(s), F32, ctypes.byref(d),
                                           ctypes.byref(self.err)))
                out[n] = (bool(d.keep), d.bit_width, L.aq_rule_name(d.rule).decode())
        finally:
            L.aq_rules_free(rules)
        return out


def bind_extra(L):
    vp = ctypes.c_void_p
    L.aq_ctx_create.argtypes = [ctypes.POINTER(vp), vp]
    L.aq_ctx_set_param.argtypes = [vp, ctypes.c_int, ctypes.c_int64, vp]
    L.aq_quantize_bound.argtypes = [vp, vp, vp, vp]
    L.aq_quantize_ex.argtypes = [vp, vp, vp, vp, vp, vp]
    L.aq_dequantize.argtypes = [vp, vp, ctypes.c_int, vp, ctypes.c_size_t, vp]
    L.aq_rules_decide.argtypes = [vp, ctypes.c_char_p, vp, ctypes.c_size_t, ctypes.c_int, vp, vp]
    L.aq_rule_name.argtypes = [ctypes.c_int]
