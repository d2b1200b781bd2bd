"""ctypes bindings of the IPC reader and writer (aq_ipc_*), and the tables the tests use.
Imported by this folder's conftest.py and tests (a module name of its own, not "conftest")."""
import ctypes

import numpy as np
import pyarrow as pa

AQ_IPC_FORMAT = {"stream": 0, "file": 1}
AQ_IPC_COMPRESSION = {None: 0, "lz4": 1, "zstd": 2}


class ArrowArrayStream(ctypes.Structure):
    _fields_ = [("get_schema", ctypes.c_void_p), ("get_next", ctypes.c_void_p),
                ("get_last_error", ctypes.c_void_p), ("release", ctypes.c_void_p),
                ("private_data", ctypes.c_void_p)]


class AqError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class WriteOptions(ctypes.Structure):
    """aq_ipc_write_options; its first field is its size (set by the constructor)."""
    _fields_ = [("size", ctypes.c_size_t), ("format", ctypes.c_int),
                ("compression", ctypes.c_int), ("compression_level", ctypes.c_int)]

    def __init__(self, fmt=0, compression=0, level=0):
        super().__init__(ctypes.sizeof(WriteOptions), fmt, compression, level)


class IpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Ipc:
    """The library's IPC reader and writer, driven through its C ABI."""

    def __init__(self, lib):
        self.lib = lib
        vp = ctypes.c_void_p
        lib.aq_ipc_reader_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(vp),
                                           ctypes.POINTER(AqError)]
        lib.aq_ipc_reader_open_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                                  ctypes.POINTER(vp), ctypes.POINTER(AqError)]
        lib.aq_ipc_reader_stream.argtypes = [vp, ctypes.POINTER(ArrowArrayStream),
                                             ctypes.POINTER(AqError)]
        lib.aq_ipc_reader_free.argtypes = [vp]
        lib.aq_ipc_reader_format.argtypes = [vp]
        lib.aq_ipc_reader_num_batches.argtypes = [vp]
        lib.aq_ipc_reader_num_batches.restype = ctypes.c_size_t
        lib.aq_ipc_write_stream.argtypes = [ctypes.c_char_p, vp, ctypes.POINTER(WriteOptions),
                                            ctypes.POINTER(AqError)]

    def _check(self, rc, err):
        if rc != 0:
            raise IpcError(rc, err.message.decode())

    def open(self, path):
        r, err = ctypes.c_void_p(), AqError()
        self._check(self.lib.aq_ipc_reader_open(str(path).encode(), ctypes.byref(r),
                                                ctypes.byref(err)), err)
        return r

    def read(self, path) -> pa.Table:
        """Reads a file or stream with our reader, handed to pyarrow as an ArrowArrayStream."""
        r, err = self.open(path), AqError()
        stream = ArrowArrayStream()
        self._check(self.lib.aq_ipc_reader_stream(r, ctypes.byref(stream), ctypes.byref(err)),
                    err)
        reader = pa.RecordBatchReader._import_from_c(ctypes.addressof(stream))
        return reader.read_all()

    def read_memory(self, data: bytes) -> pa.Table:
        r, err = ctypes.c_void_p(), AqError()
        self._check(self.lib.aq_ipc_reader_open_memory(data, len(data), ctypes.byref(r),
                                                       ctypes.byref(err)), err)
        stream = ArrowArrayStream()
        self._check(self.lib.aq_ipc_reader_stream(r, ctypes.byref(stream), ctypes.byref(err)),
                    err)
        return pa.RecordBatchReader._import_from_c(ctypes.addressof(stream)).read_all()

    def write(self, path, data, fmt="stream", compression=None, level=0):
        """Writes a pyarrow Table / RecordBatchReader (or any Arrow stream source) with our
        writer."""
        if isinstance(data, pa.Table):
            data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
        stream = ArrowArrayStream()
        data._export_to_c(ctypes.addressof(stream))
        opts = WriteOptions(AQ_IPC_FORMAT[fmt], AQ_IPC_COMPRESSION[compression], level)
        err = AqError()
        try:
            rc = self.lib.aq_ipc_write_stream(str(path).encode(), ctypes.addressof(stream),
                                              ctypes.byref(opts), ctypes.byref(err))
        finally:
            if stream.release:
                ctypes.CFUNCTYPE(None, ctypes.c_void_p)(stream.release)(
                    ctypes.addressof(stream))
        self._check(rc, err)


def weights_table(n_batches=3, rows=4, seed=0) -> pa.Table:
    """layer_name / weights / shape, several record batches, with a null shape."""
    rng = np.random.default_rng(seed)
    batches = []
    schema = pa.schema([("layer_name", pa.utf8()), ("weights", pa.list_(pa.float32())),
                        ("shape", pa.list_(pa.int64()))],
                       metadata={"source": "unit test", "model": "tiny"})
    for b in range(n_batches):
        names, weights, shapes = [], [], []
        for r in range(rows):
            d0, d1 = int(rng.integers(1, 5)), int(rng.integers(1, 40))
            names.append(f"down_blocks.{b}.layer{r}.weight")
            weights.append(rng.standard_normal(d0 * d1).astype(np.float32))
            shapes.append(None if r == 1 else [d0, d1])
        batches.append(pa.record_batch([pa.array(names), pa.array(weights,
                                        type=pa.list_(pa.float32())),
                                        pa.array(shapes, type=pa.list_(pa.int64()))],
                                       schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


def result_table(n_batches=2, rows=3, seed=1) -> pa.Table:
    """The six-column result schema of DESIGN.md 2.2, with the arrowquant.* metadata."""
    rng = np.random.default_rng(seed)
    item_f32 = pa.list_(pa.field("item", pa.float32(), nullable=True))
    schema = pa.schema([
        ("layer_name", pa.utf8()), ("quantized_data", pa.binary()), ("scales", item_f32),
        ("zero_points", item_f32),
        ("shape", pa.list_(pa.field("item", pa.int64(), nullable=True))),
        ("bit_width", pa.uint8())],
        metadata={"arrowquant.format_version": "1", "arrowquant.scheme": "affine",
                  "arrowquant.group_size": "128", "arrowquant.packing": "lsb-first"})
    batches = []
    for b in range(n_batches):
        cols = [[], [], [], [], [], []]
        for r in range(rows):
            groups = int(rng.integers(1, 9))
            cols[0].append(f"unet.block{b}.{r}.weight")
            cols[1].append(rng.integers(0, 256, size=groups * 64, dtype=np.uint8).tobytes())
            cols[2].append(rng.random(groups, dtype=np.float32))
            cols[3].append(rng.random(groups, dtype=np.float32))
            cols[4].append([groups, 128])
            cols[5].append([2, 4, 8][r % 3])
        batches.append(pa.record_batch([pa.array(c, type=f.type) for c, f in zip(cols, schema)],
                                       schema=schema))
    return pa.Table.from_batches(batches, schema=schema)
