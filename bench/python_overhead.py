#!/usr/bin/env python3
"""What the Python layer costs: ArrowQuantV2 on 100 layers of 1M float32 values against the
same work through the C API (ctypes), measured in one run, alternating.

    .venv/bin/python bench/python_overhead.py [--layers 100] [--values 1000000] [--repeat 11]
        [--threads 1] [--lib module|PATH]

The C side calls the library inside the extension module's own binary by default (--lib
module: the module links the static library, whose aq_* symbols it exports), so both sides run
the very same machine code and the difference is the Python layer alone. --lib PATH drives
another copy instead (e.g. build/libarrowquant.so): with the first reference kernel, two
links of the same object files differed by up to ~15% here (identical instructions at
different code alignments), which is why the same binary is the default.

Two comparisons, each with the same numpy buffers and parameters (4 bits, groups of 128):
  dict:  q.quantize_batch({name: array})        vs  aq_tensors_quantize(ctx, views, n)
  arrow: q.quantize_arrow_batch(pa.RecordBatch)  vs  aq_batch_quantize(ctx, schema, array)
           (pyarrow exports the batch with _export_to_c for the C side)
The Python side includes everything a user pays: argument checks, buffer/capsule import, the
GIL release, and turning the result into a pyarrow.RecordBatch. Target: ratio <= 1.10.
Both sides should run the same build configuration (the module is installed by scripts/test
from the same tree and flags as build/).
"""
import argparse
import ctypes
import statistics
import time

from arrow_quant_v2 import ArrowQuantV2

try:
    import numpy as np
except ImportError:  # buffers from the array module instead (the same work for the library)
    np = None

class ArrowSchema(ctypes.Structure):
    _fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p),
                ("metadata", ctypes.c_void_p), ("flags", ctypes.c_int64),
                ("n_children", ctypes.c_int64), ("children", ctypes.c_void_p),
                ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
                ("private_data", ctypes.c_void_p)]


class ArrowArray(ctypes.Structure):
    _fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64),
                ("offset", ctypes.c_int64), ("n_buffers", ctypes.c_int64),
                ("n_children", ctypes.c_int64), ("buffers", ctypes.c_void_p),
                ("children", ctypes.c_void_p), ("dictionary", ctypes.c_void_p),
                ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


class AqTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("data", ctypes.c_void_p),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("ndim", ctypes.c_size_t)]


class AqError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


RELEASE_SCHEMA = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowSchema))
RELEASE_ARRAY = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArray))


def release(schema, array):
    if schema.release:
        RELEASE_SCHEMA(schema.release)(ctypes.byref(schema))
    if array.release:
        RELEASE_ARRAY(array.release)(ctypes.byref(array))


class CApi:
    def __init__(self, path, threads):
        lib = ctypes.CDLL(str(path))
        self.lib = lib
        err = AqError()
        ctx = ctypes.c_void_p()
        lib.aq_ctx_create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(AqError)]
        lib.aq_ctx_set_param.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                                         ctypes.POINTER(AqError)]
        lib.aq_ctx_free.argtypes = [ctypes.c_void_p]
        lib.aq_tensors_quantize.argtypes = [ctypes.c_void_p, ctypes.POINTER(AqTensor),
                                            ctypes.c_size_t, ctypes.c_void_p,
                                            ctypes.POINTER(ArrowSchema),
                                            ctypes.POINTER(ArrowArray), ctypes.POINTER(AqError)]
        lib.aq_batch_quantize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ArrowSchema),
                                          ctypes.POINTER(ArrowArray), ctypes.c_void_p,
                                          ctypes.POINTER(ArrowSchema),
                                          ctypes.POINTER(ArrowArray), ctypes.POINTER(AqError)]
        self.check(lib.aq_ctx_create(ctypes.byref(ctx), ctypes.byref(err)), err)
        for param, value in ((0, 4), (1, 128), (2, 0), (3, threads)):
            self.check(lib.aq_ctx_set_param(ctx, param, value, ctypes.byref(err)), err)
        self.ctx = ctx

    @staticmethod
    def check(status, err):
        if status != 0:
            raise RuntimeError(err.message.decode())

    def tensors_quantize(self, tensors, n):
        schema, array, err = ArrowSchema(), ArrowArray(), AqError()
        self.check(self.lib.aq_tensors_quantize(self.ctx, tensors, n, None, ctypes.byref(schema),
                                                ctypes.byref(array), ctypes.byref(err)), err)
        release(schema, array)

    def batch_quantize(self, schema, array):
        out_schema, out_array, err = ArrowSchema(), ArrowArray(), AqError()
        self.check(self.lib.aq_batch_quantize(self.ctx, ctypes.byref(schema), ctypes.byref(array),
                                              None, ctypes.byref(out_schema),
                                              ctypes.byref(out_array), ctypes.byref(err)), err)
        release(out_schema, out_array)


def timed(fn):
    """(wall seconds, CPU seconds of this thread). With threads=1 the library works on the
    calling thread, so the CPU time is the work itself, unaffected by other processes taking
    the CPU away (these machines are shared)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def compare(label, python_call, c_call, repeat):
    python_call()  # warm both paths (page faults of first use, lazy imports)
    c_call()
    py, c = [], []
    for _ in range(repeat):
        py.append(timed(python_call))
        c.append(timed(c_call))
    out = {}
    for k, what in ((0, "wall"), (1, "cpu")):
        mp = statistics.median(t[k] for t in py)
        mc = statistics.median(t[k] for t in c)
        lp, lc = min(t[k] for t in py), min(t[k] for t in c)
        out[what] = (mp / mc, lp / lc)
        print(f"{label:6s} {what:4s}  python {mp:8.4f} s   C API {mc:8.4f} s   ratio {mp / mc:6.3f}"
              f"   (best {lp:.4f} / {lc:.4f} = {lp / lc:.3f}; {repeat} alternating runs)")
    return out


def make_layers(n, values):
    """n float32 layers of N(0, 1) values, [1000, values / 1000] when that divides."""
    shape = (1000, values // 1000) if values % 1000 == 0 else (values,)
    if np is not None:
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(values, dtype=np.float32).reshape(shape) for _ in range(n)]
        addresses = [a.ctypes.data for a in arrays]
    else:
        import array
        import random

        rnd = random.Random(0)
        base = array.array("f", (rnd.gauss(0.0, 1.0) for _ in range(values)))
        arrays = [array.array("f", base) for _ in range(n)]  # the same values in every layer
        addresses = [a.buffer_info()[0] for a in arrays]
        shape = (values,)  # a 1-D buffer; the C side is given the same shape
    layers = {f"layer.{i}.weight": a for i, a in enumerate(arrays)}
    return layers, addresses, [shape] * n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--values", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lib", default="module",
                    help="'module' (the extension's own binary) or a path to libarrowquant.so")
    args = ap.parse_args()
    if args.lib == "module":
        from arrow_quant_v2 import arrow_quant_v2 as native

        args.lib = native.__file__

    # Plain affine, as the C side: the mode diffusion would quantize with kquant.
    q = ArrowQuantV2(mode="base", threads=args.threads)
    capi = CApi(args.lib, args.threads)
    layers, addresses, shapes = make_layers(args.layers, args.values)
    names = [n.encode() for n in layers]
    c_shapes = [(ctypes.c_int64 * len(s))(*s) for s in shapes]
    tensors = (AqTensor * len(layers))(*[
        AqTensor(names[i], 0, addresses[i], c_shapes[i], len(shapes[i]))
        for i in range(len(layers))])
    print(f"{args.layers} layers x {args.values} float32 values, 4 bits, groups of 128, "
          f"{args.threads} thread(s), C library {args.lib}")
    ratios = [compare("dict", lambda: q.quantize_batch(layers, bit_width=4),
                      lambda: capi.tensors_quantize(tensors, len(layers)), args.repeat)]

    try:
        import pyarrow as pa
    except ImportError:
        pa = None
    if pa is not None and np is not None:
        batch = pa.record_batch({
            "layer_name": list(layers),
            "weights": pa.ListArray.from_arrays(
                pa.array(np.arange(0, args.layers + 1, dtype=np.int32) * args.values),
                pa.array(np.concatenate([a.ravel() for a in layers.values()]))),
            "shape": pa.array([list(a.shape) for a in layers.values()],
                              type=pa.list_(pa.int64())),
        })
        schema, array = ArrowSchema(), ArrowArray()
        batch._export_to_c(ctypes.addressof(array), ctypes.addressof(schema))
        try:
            ratios.append(compare("arrow", lambda: q.quantize_arrow_batch(batch, bit_width=4),
                                  lambda: capi.batch_quantize(schema, array), args.repeat))
        finally:
            release(schema, array)
    if args.threads == 1:
        worst = max(r["cpu"][0] for r in ratios)
        basis = "median CPU-time ratio"
    else:
        worst = max(r["wall"][0] for r in ratios)
        basis = "median wall-time ratio"
    print(f"worst {basis} {worst:.3f} (target <= 1.10): {'ok' if worst <= 1.10 else 'OVER'}")


if __name__ == "__main__":
    main()
