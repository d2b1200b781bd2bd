"""pip install . puts the arrowquant command in the environment's scripts folder (beside
python), and every part reports the one version written in include/arrowquant.h."""
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sysconfig

import arrow_quant_v2

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _plain_env():
    # The sanitizer stages preload their runtimes into python; the command is an ordinary build.
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        env.pop(name, None)
    return env


def test_pip_installs_the_command():
    exe = pathlib.Path(sysconfig.get_path("scripts")) / "arrowquant"
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe}: not installed by pip install ."
    p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=_plain_env(),
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "arrowquant quantize SRC -o OUT.arrow" in p.stderr
    v = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                       env=_plain_env(), timeout=60)
    assert v.returncode == 0
    assert v.stdout.splitlines()[0] == f"arrowquant {arrow_quant_v2.__version__}"


def test_one_version():
    header = (ROOT / "include" / "arrowquant.h").read_text()
    parts = [re.search(rf"^#define AQ_VERSION_{p} (\d+)$", header, re.M).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    version = ".".join(parts)
    assert arrow_quant_v2.__version__ == version
    assert importlib.metadata.version("arrow_quant_v2") == version
    for path in ("pyproject.toml", "CMakeLists.txt", "python/arrow_quant_v2/__init__.py"):
        text = (ROOT / path).read_text()
        assert not re.search(r"^\s*(project\(.*VERSION\s+\d|version\s*=\s*\")", text, re.M), (
            f"{path} writes a version of its own: the header's is the one")
