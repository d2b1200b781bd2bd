"""ctypes access to the Arrow entry points of libarrowquant, for the interop tests.

Only the C ABI is used: Arrow C Data / C Stream structures are allocated here with ctypes,
filled by the producer under test (pyarrow's _export_to_c, or the pointers inside a PyCapsule)
and handed to the library; results go back to pyarrow through _import_from_c.
"""
import ctypes

import pyarrow as pa


class ArrowSchema(ctypes.Structure):
    pass


ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_void_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowSchema))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class ArrowArray(ctypes.Structure):
    pass


ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class ArrowArrayStream(ctypes.Structure):
    _fields_ = [
        ("get_schema", ctypes.c_void_p),
        ("get_next", ctypes.c_void_p),
        ("get_last_error", ctypes.c_void_p),
        ("release", ctypes.c_void_p),
        ("private_data", ctypes.c_void_p),
    ]


class AqError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


PROGRESS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)


class BatchOptions(ctypes.Structure):
    """aq_batch_options; its first field is its size (set by the constructor)."""
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("continue_on_error", ctypes.c_int),
        ("progress", PROGRESS),
        ("progress_user", ctypes.c_void_p),
        ("report", ctypes.c_void_p),
        ("min_cosine", ctypes.c_double),
        ("target_bpw", ctypes.c_double),
        ("budget_schemes", ctypes.c_void_p),
        ("n_budget_schemes", ctypes.c_size_t),
        ("rules", ctypes.c_void_p),
        ("calib", ctypes.c_void_p),
    ]

    def __init__(self):
        super().__init__(ctypes.sizeof(BatchOptions))


_RELEASE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
STATUS = {0: "AQ_OK", 1: "AQ_INVALID_ARGUMENT", 2: "AQ_INVALID_PARAMETER", 3: "AQ_NON_FINITE",
          4: "AQ_SHAPE_MISMATCH", 5: "AQ_OVERFLOW", 6: "AQ_NO_MEMORY", 7: "AQ_UNSUPPORTED",
          8: "AQ_INVALID_DATA"}


def release(struct):
    """Calls a C structure's release callback if it has not been released."""
    if struct.release:
        _RELEASE(struct.release)(ctypes.addressof(struct))


class AqFailure(Exception):
    def __init__(self, code, message):
        super().__init__(f"{STATUS.get(code, code)}: {message}")
        self.code = code
        self.message = message


class Report:
    def __init__(self, entries):
        self.entries = entries


class Lib:
    """Thin wrapper over the library's Arrow entry points."""

    def __init__(self, cdll):
        self.lib = cdll
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        L = cdll
        L.aq_ctx_create.argtypes = [ctypes.POINTER(vp), ctypes.POINTER(AqError)]
        L.aq_ctx_free.argtypes = [vp]
        L.aq_ctx_set_param.argtypes = [vp, ctypes.c_int, ctypes.c_int64, ctypes.POINTER(AqError)]
        for f in (L.aq_batch_quantize, L.aq_batch_dequantize):
            f.argtypes = [vp, vp, vp, ctypes.POINTER(BatchOptions), vp, vp,
                          ctypes.POINTER(AqError)]
        for f in (L.aq_stream_quantize, L.aq_stream_dequantize):
            f.argtypes = [vp, vp, ctypes.POINTER(BatchOptions), vp, ctypes.POINTER(AqError)]
        L.aq_report_create.argtypes = [ctypes.POINTER(vp), ctypes.POINTER(AqError)]
        L.aq_report_free.argtypes = [vp]
        L.aq_report_count.argtypes = [vp]
        L.aq_report_count.restype = sz
        L.aq_report_get.argtypes = [vp, sz, ctypes.POINTER(sz), ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p),
                                    ctypes.POINTER(AqError)]

    def _check(self, st, err):
        if st != 0:
            raise AqFailure(st, err.message.decode(errors="replace"))

    def ctx(self, bits=4, group_size=128):
        err = AqError()
        h = ctypes.c_void_p()
        self._check(self.lib.aq_ctx_create(ctypes.byref(h), ctypes.byref(err)), err)
        self._check(self.lib.aq_ctx_set_param(h, 0, bits, ctypes.byref(err)), err)
        self._check(self.lib.aq_ctx_set_param(h, 1, group_size, ctypes.byref(err)), err)
        return h

    def _opts(self, continue_on_error, progress, report):
        opts = BatchOptions()
        opts.continue_on_error = 1 if continue_on_error else 0
        cb = None
        if progress is not None:
            cb = PROGRESS(lambda _u, rows, elems: 1 if progress(rows, elems) else 0)
            opts.progress = cb
        opts.report = report
        return opts, cb

    def _report_entries(self, rep):
        out = []
        err = AqError()
        for i in range(self.lib.aq_report_count(rep)):
            row, name, code, msg = ctypes.c_size_t(), ctypes.c_char_p(), ctypes.c_int(), \
                ctypes.c_char_p()
            self._check(self.lib.aq_report_get(rep, i, ctypes.byref(row), ctypes.byref(name),
                                               ctypes.byref(code), ctypes.byref(msg),
                                               ctypes.byref(err)), err)
            out.append((row.value, name.value.decode(), code.value, msg.value.decode()))
        return out

    def _batch_call(self, fn, schema_addr, array_addr, bits, group_size, continue_on_error,
                    progress, report):
        ctx = self.ctx(bits, group_size)
        rep = ctypes.c_void_p()
        err = AqError()
        if report is not None:
            self._check(self.lib.aq_report_create(ctypes.byref(rep), ctypes.byref(err)), err)
        opts, _cb = self._opts(continue_on_error, progress, rep)
        out_s, out_a = ArrowSchema(), ArrowArray()
        try:
            st = fn(ctx, schema_addr, array_addr, ctypes.byref(opts), ctypes.addressof(out_s),
                    ctypes.addressof(out_a), ctypes.byref(err))
            self._check(st, err)
            result = pa.RecordBatch._import_from_c(ctypes.addressof(out_a),
                                                   ctypes.addressof(out_s))
            if report is not None:
                report.extend(self._report_entries(rep))
            return result
        finally:
            self.lib.aq_report_free(rep)
            self.lib.aq_ctx_free(ctx)

    def quantize_opts(self, batch, ctx, **fields):
        """Quantizes a pyarrow RecordBatch with a given context (from ctx()) and any
        aq_batch_options fields (rules, calib, min_cosine, ...)."""
        s, a = export_batch(batch)
        opts = BatchOptions()
        for k, v in fields.items():
            setattr(opts, k, v)
        err = AqError()
        out_s, out_a = ArrowSchema(), ArrowArray()
        try:
            self._check(self.lib.aq_batch_quantize(ctx, ctypes.addressof(s), ctypes.addressof(a),
                                                   ctypes.byref(opts), ctypes.addressof(out_s),
                                                   ctypes.addressof(out_a), ctypes.byref(err)),
                        err)
            return pa.RecordBatch._import_from_c(ctypes.addressof(out_a), ctypes.addressof(out_s))
        finally:
            release(a)
            release(s)

    def quantize_c(self, schema, array, bits=4, group_size=128, continue_on_error=False,
                   progress=None, report=None):
        """Quantizes C structures (ctypes ArrowSchema / ArrowArray); the caller releases them."""
        return self._batch_call(self.lib.aq_batch_quantize, ctypes.addressof(schema),
                                ctypes.addressof(array), bits, group_size, continue_on_error,
                                progress, report)

    def dequantize_c(self, schema, array, continue_on_error=False, report=None):
        return self._batch_call(self.lib.aq_batch_dequantize, ctypes.addressof(schema),
                                ctypes.addressof(array), 4, 128, continue_on_error, None, report)

    def quantize_ptr(self, schema_addr, array_addr, **kw):
        """Quantizes C structures given by address (from PyCapsules); borrowed."""
        return self._batch_call(self.lib.aq_batch_quantize, schema_addr, array_addr,
                                kw.pop("bits", 4), kw.pop("group_size", 128),
                                kw.pop("continue_on_error", False), kw.pop("progress", None),
                                kw.pop("report", None))

    def quantize(self, batch, **kw):
        """Quantizes a pyarrow RecordBatch (or StructArray) exported with _export_to_c."""
        s, a = export_batch(batch)
        try:
            return self.quantize_c(s, a, **kw)
        finally:
            release(a)
            release(s)

    def dequantize(self, batch, **kw):
        s, a = export_batch(batch)
        try:
            return self.dequantize_c(s, a, **kw)
        finally:
            release(a)
            release(s)

    def stream(self, in_stream, dequantize=False, bits=4, group_size=128,
               continue_on_error=False, progress=None, report=None):
        """Wraps a C input stream (a ctypes ArrowArrayStream, or the address of one, as found
        in an "arrow_array_stream" PyCapsule; moved either way) into the library's output
        stream, imported as a pyarrow RecordBatchReader. Returns (reader, keep): keep holds the
        context and options, which must outlive the reader."""
        ctx = self.ctx(bits, group_size)
        err = AqError()
        rep = ctypes.c_void_p()
        if report is not None:
            self._check(self.lib.aq_report_create(ctypes.byref(rep), ctypes.byref(err)), err)
        opts, cb = self._opts(continue_on_error, progress, rep)
        out = ArrowArrayStream()
        fn = self.lib.aq_stream_dequantize if dequantize else self.lib.aq_stream_quantize
        addr = in_stream if isinstance(in_stream, int) else ctypes.addressof(in_stream)
        st = fn(ctx, addr, ctypes.byref(opts), ctypes.addressof(out),
                ctypes.byref(err))
        if st != 0:
            self.lib.aq_report_free(rep)
            self.lib.aq_ctx_free(ctx)
            raise AqFailure(st, err.message.decode(errors="replace"))
        reader = pa.RecordBatchReader._import_from_c(ctypes.addressof(out))
        return reader, StreamKeep(self, ctx, rep, opts, cb, report)


class StreamKeep:
    """What an output stream borrows: freed by close() after the reader is exhausted."""

    def __init__(self, lib, ctx, rep, opts, cb, report):
        self.lib, self.ctx, self.rep, self.opts, self.cb, self.report = \
            lib, ctx, rep, opts, cb, report

    def close(self):
        if self.report is not None:
            self.report.extend(self.lib._report_entries(self.rep))
        self.lib.lib.aq_report_free(self.rep)
        self.lib.lib.aq_ctx_free(self.ctx)
        self.ctx = None


def export_batch(batch):
    """pyarrow RecordBatch or StructArray -> new ctypes (ArrowSchema, ArrowArray)."""
    s, a = ArrowSchema(), ArrowArray()
    batch._export_to_c(ctypes.addressof(a), ctypes.addressof(s))
    return s, a


def export_stream(reader):
    st = ArrowArrayStream()
    reader._export_to_c(ctypes.addressof(st))
    return st


_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype = ctypes.c_void_p
_capsule_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]


def capsule_pointer(capsule, name):
    """The pointer inside an Arrow PyCapsule ("arrow_schema", "arrow_array",
    "arrow_array_stream")."""
    return _capsule_ptr(capsule, name)


_GET_SCHEMA = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_GET_NEXT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def pull_batches(stream_addr):
    """Drains a C stream at stream_addr (not released here) into a list of (ArrowSchema,
    ArrowArray) ctypes pairs, each schema a fresh get_schema copy; release them after use."""
    st = ArrowArrayStream.from_address(stream_addr)
    out = []
    while True:
        s, a = ArrowSchema(), ArrowArray()
        if _GET_SCHEMA(st.get_schema)(stream_addr, ctypes.addressof(s)) != 0:
            raise RuntimeError("get_schema failed")
        if _GET_NEXT(st.get_next)(stream_addr, ctypes.addressof(a)) != 0:
            release(s)
            raise RuntimeError("get_next failed")
        if not a.release:
            release(s)
            return out
        out.append((s, a))
