"""scripts/bootstrap as a user who is not root and lacks Debian packages: one line naming the
missing packages and the command that installs them. `id` and `dpkg-query` are replaced by
stand-ins on PATH (a user without root, a machine where nothing is installed)."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BUILD = ["build-essential", "cmake", "pkg-config", "libzstd-dev", "liblz4-dev", "libjansson-dev"]
TEST_ONLY = ["chromium", "qemu-user", "gcc-aarch64-linux-gnu", "clang", "python3-venv"]


@pytest.fixture
def not_root(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"id": 'if [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi',
                       "dpkg-query": "exit 1"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _bootstrap(env, *args):
    return subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_build_only_names_the_build_packages(not_root):
    p = _bootstrap(not_root, "--build")
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert f"sudo apt-get install {' '.join(BUILD)}" in lines[0]
    assert not any(pkg in lines[0] for pkg in TEST_ONLY), lines[0]
    assert p.stdout == ""


def test_full_names_the_test_packages_too(not_root):
    p = _bootstrap(not_root)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert all(pkg in lines[0] for pkg in BUILD + TEST_ONLY), lines[0]


def test_unknown_option_is_refused(not_root):
    p = _bootstrap(not_root, "--everything")
    assert p.returncode == 2 and "usage: scripts/bootstrap [--build]" in p.stderr
