"""The committed quality golden files are exactly what the numpy reference writes today."""
import pathlib
import subprocess
import sys

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"


def test_quality_golden_files_are_current():
    run = subprocess.run([sys.executable, str(DATA / "quality_golden.py"), "--check"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "files match" in run.stdout
