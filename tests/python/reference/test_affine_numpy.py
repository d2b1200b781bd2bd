"""The independent numpy implementation of docs/format.md (tests/reference/affine_numpy.py)
against the C library through ctypes: identical packed bytes, scales and zero points (bitwise),
identical restored float32/float16/bfloat16 values, and the same first bad index for
non-finite input."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aq_ctypes import AqLibraryError

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROW = 4294967295
AQ_NON_FINITE = 3

bits_st = st.sampled_from([2, 4, 8])
group_st = st.one_of(st.sampled_from([8, 32, 64, 128, 256, ROW]), st.integers(8, 700))
dims_st = st.lists(st.integers(1, 70), min_size=0, max_size=3).filter(
    lambda s: int(np.prod(s, dtype=np.int64)) <= 4000)
dtype_st = st.sampled_from(["f32", "f16", "f64", "bf16"])


def as_dtype(values, dtype):
    """float64 values to the input dtype (bfloat16 as uint16 bits, truncating)."""
    if dtype == "bf16":
        with np.errstate(over="ignore", invalid="ignore"):
            f = values.astype(np.float32)
        return (f.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype({"f32": np.float32, "f16": np.float16, "f64": np.float64}[dtype])


def assert_same(affine, aq, x, shape, bits, g, dtype):
    dtype_name = "bf16" if dtype == "bf16" else None
    try:
        ref = affine.quantize(x, shape, bits, g, dtype_name=dtype_name)
    except ValueError as e:
        assert "NaN or Inf at index" in str(e)
        with pytest.raises(AqLibraryError) as lib_err:
            aq.quantize(x, shape, bits, g, dtype_name=dtype)
        assert lib_err.value.code == AQ_NON_FINITE
        assert lib_err.value.message.endswith(str(e).split("contains")[1])
        return
    lib = aq.quantize(x, shape, bits, g, dtype_name=dtype)
    assert lib[0] == ref[0], "packed bytes differ"
    assert lib[1].tobytes() == ref[1].tobytes(), "scales differ"
    assert lib[2].tobytes() == ref[2].tobytes(), "zero points differ"
    for out_dtype in ("f32", "f16", "bf16"):
        restored_ref = affine.dequantize(*ref, shape, bits, g, out_dtype=out_dtype)
        restored_lib = aq.dequantize(*ref, shape, bits, g, out_dtype=out_dtype)
        assert restored_lib.tobytes() == restored_ref.tobytes(), f"restored {out_dtype} differ"


@st.composite
def structured_values(draw, n):
    """n float64 values of a drawn kind: scaled normals, coarse grids (constant groups, exact
    .5 ties), denormals, extremes near +-FLT_MAX, outliers."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "grid", "denormal", "extreme", "outlier", "mixed"]))
    exp = draw(st.integers(-40, 38))
    if kind == "normal":
        v = rng.standard_normal(n) * 10.0**exp + draw(st.sampled_from([0.0, 1.0, -1e3]))
    elif kind == "grid":  # few distinct values: constant groups and ties
        v = rng.integers(0, draw(st.integers(1, 40)), n) * 0.5 * draw(st.sampled_from([1, 0.25]))
    elif kind == "denormal":
        v = rng.integers(-50, 50, n) * 2.0**-149
    elif kind == "extreme":
        v = rng.choice([-3.4028234663852886e38, 3.4028234663852886e38, 0.0, 1.0, -1e38], n)
    elif kind == "outlier":
        v = rng.standard_normal(n)
        v[rng.integers(0, n, max(1, n // 16))] *= 1e4
    else:
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-45, 39, n)
    if draw(st.booleans()):  # signed zeros
        v[rng.random(n) < 0.1] = -0.0
    return v


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=bits_st, g=group_st, shape=dims_st, dtype=dtype_st, data=st.data())
def test_structured_inputs_match_library(affine, aq, bits, g, shape, dtype, data):
    n = int(np.prod(shape, dtype=np.int64))
    x = as_dtype(data.draw(structured_values(n)), dtype)
    assert_same(affine, aq, x, tuple(shape), bits, g, dtype)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bits=bits_st, g=group_st, dtype=st.sampled_from(["f32", "f16", "f64"]), data=st.data())
def test_arbitrary_floats_match_library(affine, aq, bits, g, dtype, data):
    """Any finite (and, for float64, out-of-range or non-finite) values hypothesis finds."""
    np_dtype = {"f32": np.float32, "f16": np.float16, "f64": np.float64}[dtype]
    shape = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=2))
    finite = dtype != "f64" or data.draw(st.booleans())
    x = data.draw(hnp.arrays(np_dtype, tuple(shape), elements=st.floats(
        width=np.dtype(np_dtype).itemsize * 8, allow_nan=not finite, allow_infinity=not finite)))
    assert_same(affine, aq, x.reshape(-1), tuple(shape), bits, g, dtype)


@pytest.mark.parametrize("dtype", ["f32", "f16", "f64", "bf16"])
def test_first_bad_index_matches_library(affine, aq, dtype):
    values = np.linspace(-2, 2, 96)
    for idx, bad in ((0, np.nan), (50, np.inf), (95, -np.inf)):
        v = values.copy()
        v[idx] = bad
        v[idx + 1:] = np.nan
        x = as_dtype(v, dtype)
        with pytest.raises(ValueError, match=f"at index {idx}$"):
            affine.quantize(x, (96,), 4, 8, dtype_name="bf16" if dtype == "bf16" else None)
        assert_same(affine, aq, x, (96,), 4, 8, dtype)


def test_float64_beyond_float32_range(affine, aq):
    flt_max = float(np.finfo(np.float32).max)
    ok = np.array([flt_max + 2.0**103 - 2.0**75, -flt_max, 0.0, 1.0] * 4)  # rounds to FLT_MAX
    assert_same(affine, aq, ok, (16,), 8, 8, "f64")
    bad = ok.copy()
    bad[9] = flt_max + 2.0**103  # the tie rounds to even: infinity
    with pytest.raises(ValueError, match="at index 9$"):
        affine.quantize(bad, (16,), 8, 8)
    assert_same(affine, aq, bad, (16,), 8, 8, "f64")


def test_packing_examples_of_the_spec(affine):
    assert affine.pack([1, 2, 3], 4) == bytes([0x21, 0x03])
    assert affine.pack([3, 0, 1, 2, 1], 2) == bytes([0x93, 0x01])
    assert list(affine.unpack(bytes([0x93, 0x01]), 5, 2)) == [3, 0, 1, 2, 1]


@given(bits=bits_st, codes=st.lists(st.integers(0, 255), min_size=1, max_size=300))
def test_pack_unpack_roundtrip(affine, bits, codes):
    codes = np.array(codes, dtype=np.uint8) & np.uint8((1 << bits) - 1)
    packed = affine.pack(codes, bits)
    assert len(packed) == -(-codes.size * bits // 8)
    assert np.array_equal(affine.unpack(packed, codes.size, bits), codes)


def test_golden_files_are_current():
    """tests/data/golden_*.bin are what tests/data/golden.py writes today."""
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "data" / "golden.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
