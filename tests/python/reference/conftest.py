"""Fixtures for the reference tests: the independent numpy implementation (`affine`) and a
thin ctypes binding of the library's one-tensor calls (`aq`, see aq_ctypes.py)."""
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
sys.path.insert(0, str(HERE))

import affine_numpy  # noqa: E402
from aq_ctypes import Aq  # noqa: E402


@pytest.fixture(scope="session")
def aq(libaq):
    binding = Aq(libaq)
    yield binding
    binding.close()


@pytest.fixture(scope="session")
def affine():
    return affine_numpy
