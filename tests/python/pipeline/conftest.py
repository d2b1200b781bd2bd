"""Fixtures of the model pipeline tests: the arrowquant command, and a runner that checks the
error contract (one line on stderr, non-zero exit, nothing left behind)."""
import os
import pathlib
import subprocess

import pytest


@pytest.fixture(scope="session")
def cli(build_dir) -> pathlib.Path:
    path = build_dir / "src" / "cli" / "arrowquant"
    if not path.exists():
        pytest.fail(f"{path} not found: build the project first (scripts/test does)")
    return path


class Runner:
    def __init__(self, exe):
        self.exe = str(exe)

    def __call__(self, *args, check=True, **kw):
        p = subprocess.run([self.exe, *map(str, args)], capture_output=True, text=True,
                           timeout=600, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"arrowquant {' '.join(map(str, args))} failed "
                                 f"({p.returncode}): {p.stderr}")
        return p

    def fails(self, *args, expect, leaves_nothing_in=None, **kw):
        """Runs a command that must fail: non-zero exit, exactly one line on stderr that
        contains `expect`, and no file left in `leaves_nothing_in` that was not there."""
        before = set(os.listdir(leaves_nothing_in)) if leaves_nothing_in else set()
        p = self(*args, check=False, **kw)
        assert p.returncode != 0, p
        lines = [l for l in p.stderr.strip().splitlines() if not l.startswith("progress:")]
        assert len(lines) == 1, p.stderr
        assert expect in lines[0], lines[0]
        assert "Traceback" not in p.stderr
        if leaves_nothing_in:
            assert set(os.listdir(leaves_nothing_in)) == before
        return p


@pytest.fixture(scope="session")
def aq(cli) -> Runner:
    return Runner(cli)
