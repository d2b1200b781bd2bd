"""Fixtures of the diffusion-mode tests: the C library's diffusion API through ctypes."""
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "arrow"))  # aqarrow: Arrow C structures in ctypes

import aqdiff_ctypes  # noqa: E402


@pytest.fixture(scope="session")
def aqd(libaq):
    return aqdiff_ctypes.bind(libaq)
