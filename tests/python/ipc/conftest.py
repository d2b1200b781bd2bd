"""Fixtures of the IPC tests: `ipc`, the library's reader and writer through ctypes."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ipc_ctypes import Ipc  # noqa: E402


@pytest.fixture(scope="session")
def ipc(libaq):
    return Ipc(libaq)
