"""A C Data Interface producer whose offsets point outside its buffers: the structures carry
no buffer sizes, so every span the offsets and lengths imply is asked of the kernel (mapped
or not) before it is read. Each case is an error naming the column, never a crash."""
import ctypes

import numpy as np
import pyarrow as pa
import pytest

import aqarrow

BIG = 1 << 40


def _batch(names=None):
    w = pa.array([np.ones(256, np.float32).tolist()] * 2, pa.list_(pa.float32()))
    return pa.RecordBatch.from_arrays([names if names is not None else pa.array(["a", "b"]), w],
                                      ["layer_name", "weights"])


def _run(aql, batch, tamper):
    s, a = aqarrow.export_batch(batch)
    try:
        tamper(a)
        with pytest.raises(aqarrow.AqFailure) as e:
            aql.quantize_c(s, a)
        return str(e.value)
    finally:
        aqarrow.release(a)
        aqarrow.release(s)


def _child(a, *path):
    for i in path:
        a = a.children[i].contents
    return a


@pytest.mark.parametrize("where,expect", [
    ((0,), "Column 'layer_name': the offsets buffer"),
    ((1,), "Column 'weights': the offsets buffer"),
    ((1, 0), "Column 'weights' (list child): the values buffer"),
])
def test_offset_far_outside_the_buffers(aql, where, expect):
    def tamper(a):
        _child(a, *where).offset = BIG
    msg = _run(aql, _batch(), tamper)
    assert expect in msg and "not mapped memory" in msg, msg


def test_struct_offset_beyond_its_children(aql):
    def tamper(a):
        a.offset = BIG
        for i in range(2):
            _child(a, i).length = BIG + 2
    msg = _run(aql, _batch(), tamper)
    assert "not mapped memory" in msg, msg


def test_utf8_offsets_past_their_data(aql):
    """A string whose last offset runs far past its data buffer (pyarrow would refuse to
    build it, so the exported offsets buffer is swapped for one of ours)."""
    offsets = (ctypes.c_int32 * 3)(0, 1, 0x7FFFFFFF)

    def tamper(a):
        _child(a, 0).buffers[1] = ctypes.addressof(offsets)
    msg = _run(aql, _batch(), tamper)
    assert "Column 'layer_name': the data buffer does not hold elements 0 to 2147483647" in msg, msg


def test_validity_bitmap_far_away(aql):
    names = pa.array(["a", None])
    def tamper(a):
        _child(a, 0).offset = BIG
        _child(a, 0).length = 2
    msg = _run(aql, _batch(names), tamper)
    assert "Column 'layer_name'" in msg and "not mapped memory" in msg, msg
