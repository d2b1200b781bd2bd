"""Fixtures for the Arrow interop tests: the library's Arrow entry points through ctypes
(`aql`, see aqarrow.py) and the independent numpy implementation of docs/format.md
(`affine`), against which every packed byte, scale and zero point is checked."""
import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
sys.path.insert(0, str(HERE))

import affine_numpy  # noqa: E402
import aqarrow  # noqa: E402


@pytest.fixture(scope="session")
def aql(libaq):
    return aqarrow.Lib(libaq)


@pytest.fixture(scope="session")
def affine():
    return affine_numpy


@pytest.fixture(scope="session")
def check_rows(affine):
    """check_rows(result, expected, bits, group_size): expected is a list of
    (name, values as a numpy array, shape); the result must hold exactly these rows, each
    equal to the numpy implementation byte for byte."""

    def check(result, expected, bits, group_size):
        assert result.num_rows == len(expected)
        cols = result.to_pydict() if hasattr(result, "to_pydict") else None
        names = result.column("layer_name").to_pylist()
        packed = result.column("quantized_data").to_pylist()
        scales = result.column("scales")
        zps = result.column("zero_points")
        shapes = result.column("shape").to_pylist()
        bws = result.column("bit_width").to_pylist()
        del cols
        for i, (name, values, shape) in enumerate(expected):
            want_p, want_s, want_z = affine.quantize(values, shape, bits, group_size)
            assert names[i] == name
            assert shapes[i] == list(shape)
            assert bws[i] == bits
            assert packed[i] == want_p, f"row {i} ({name}): packed bytes differ"
            got_s = np.asarray(scales[i].values, dtype=np.float32)
            got_z = np.asarray(zps[i].values, dtype=np.float32)
            np.testing.assert_array_equal(got_s.view(np.uint32), want_s.view(np.uint32))
            np.testing.assert_array_equal(got_z.view(np.uint32), want_z.view(np.uint32))

    return check
