"""Shared pytest fixtures. Each area keeps its tests (and any further fixtures) in its own
subfolder: tests/python/<area>/."""
import ctypes
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir() -> pathlib.Path:
    """The CMake build folder scripts/test built (AQ_BUILD_DIR), default ./build."""
    return pathlib.Path(os.environ.get("AQ_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def libaq(build_dir) -> ctypes.CDLL:
    """The shared library, for C-level tests through ctypes."""
    path = build_dir / "libarrowquant.so"
    if not path.exists():
        pytest.fail(f"{path} not found: build the project first (scripts/test does)")
    return ctypes.CDLL(str(path))
