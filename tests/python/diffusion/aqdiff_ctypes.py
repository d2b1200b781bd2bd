"""ctypes bindings of the diffusion section of arrowquant.h, for tests only (users go through
the Python module)."""
import ctypes


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
