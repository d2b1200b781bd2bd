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


def pytest_assertrepr_compare(op, left, right):
    """Unequal large byte strings (whole files compared) are explained by their lengths and the
    first differing offset: pytest's own diff of them is quadratic and can run for hours."""
    if op != "==" or not isinstance(left, (bytes, bytearray)) or \
            not isinstance(right, (bytes, bytearray)) or max(len(left), len(right)) < 4096:
        return None
    at = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    return [f"{len(left)} bytes == {len(right)} bytes",
            f"first difference at offset {at}: {bytes(left[at:at + 16])!r} != "
            f"{bytes(right[at:at + 16])!r}"]
