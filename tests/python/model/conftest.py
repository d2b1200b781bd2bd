"""Fixtures of the model-level API tests (quantize_diffusion_model, validate_quality and
arrowquant validate): the arrowquant command, the trained DDPM fixture, a diffusers pipeline
folder written by save_pretrained, and restoring a model file into diffusers."""
import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from aqmodel_helpers import small_unet  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
DDPM = ROOT / "tests" / "data" / "diffusion" / "ddpm_digits"


class Cli:
    def __init__(self, exe):
        self.exe = str(exe)

    def __call__(self, *args, check=True):
        p = subprocess.run([self.exe, *map(str, args)], capture_output=True, text=True,
                           timeout=600)
        if check and p.returncode != 0:
            raise AssertionError(f"arrowquant {' '.join(map(str, args))} failed "
                                 f"({p.returncode}): {p.stderr}")
        return p

    def json(self, *args, rc=0):
        p = self(*args, "--json", check=False)
        assert p.returncode == rc, (p.returncode, p.stderr)
        return json.loads(p.stdout)


@pytest.fixture(scope="session")
def cli(build_dir):
    path = build_dir / "src" / "cli" / "arrowquant"
    if not path.exists():
        pytest.fail(f"{path} not found: build the project first (scripts/test does)")
    return Cli(path)


@pytest.fixture(scope="session")
def ddpm():
    return DDPM


@pytest.fixture(scope="session")
def pipeline_folder(tmp_path_factory):
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/) saved by diffusers."""
    diffusers = pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("pipe") / "ddpm_pipe"
    diffusers.DDPMPipeline(unet=small_unet(), scheduler=diffusers.DDPMScheduler()
                           ).save_pretrained(root)
    assert (root / "model_index.json").exists()
    assert (root / "unet" / "diffusion_pytorch_model.safetensors").exists()
    return root


def pytest_configure(config):
    # scripts/test runs the leak check with -m "not torch": torch and its binding keep so much
    # memory until exit that LeakSanitizer's report cap would hide leaks from our code.
    config.addinivalue_line("markers", "torch: the test imports torch or diffusers")
