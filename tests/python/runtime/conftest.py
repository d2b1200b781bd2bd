"""Fixtures of the torch runtime tests: the arrowquant command that writes the model files, and
helpers that quantize a torch module or a diffusers folder and load the reference model."""
import json
import pathlib
import re
import subprocess

import pytest


@pytest.fixture(scope="session")
def quantize(build_dir):
    """quantize(src, out, *args) runs `arrowquant quantize src -o out *args --json` and returns
    its summary."""
    exe = build_dir / "src" / "cli" / "arrowquant"
    if not exe.exists():
        pytest.fail(f"{exe} not found: build the project first (scripts/test does)")

    def run(src, out, *args):
        p = subprocess.run([str(exe), "quantize", str(src), "-o", str(out), *map(str, args),
                            "--json", "--quiet"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise AssertionError(f"arrowquant quantize failed: {p.stderr}")
        # The summary may print a figure that overflowed as C's "nan" / "-nan", which JSON
        # lacks; the runtime tests do not read the figures.
        return json.loads(re.sub(r'(?<=: )-?nan\b', "NaN", p.stdout))

    return run


@pytest.fixture(scope="session")
def dequantize(build_dir):
    """dequantize(model_file, out) runs `arrowquant dequantize model_file -o out` (a
    .safetensors file, or a folder for a pipeline's file)."""
    exe = build_dir / "src" / "cli" / "arrowquant"

    def run(src, out):
        p = subprocess.run([str(exe), "dequantize", str(src), "-o", str(out)],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise AssertionError(f"arrowquant dequantize failed: {p.stderr}")
        return pathlib.Path(out)

    return run
