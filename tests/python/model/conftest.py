"""Fixtures of the model-level API tests (quantize_diffusion_model, validate_quality and
arrowquant validate): the arrowquant command, the trained DDPM fixture, a diffusers pipeline
folder written by save_pretrained, and restoring a model file into diffusers."""
import json
import pathlib
import shutil
import subprocess

import pytest

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


def small_unet(seed=0):
    import diffusers
    import torch

    torch.manual_seed(seed)
    m = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3,
                              layers_per_block=1, block_out_channels=(32, 64),
                              down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                              norm_num_groups=8)
    with torch.no_grad():  # random weights everywhere (fresh output convs are zero)
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return m.eval()


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


def restore_unet(cli, model_file, config_dir, out):
    """arrowquant dequantize a single-model file next to its config; loaded by diffusers."""
    import diffusers

    out.mkdir()
    shutil.copy(config_dir / "config.json", out / "config.json")
    cli("dequantize", model_file, "-o", out / "diffusion_pytorch_model.safetensors")
    return diffusers.UNet2DModel.from_pretrained(out).float().eval()


def restore_pipeline(cli, model_file, folder, out):
    """arrowquant dequantize a pipeline's model file into a copy of its folder's configs."""
    import diffusers

    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors"))
    cli("dequantize", model_file, "-o", out)
    return diffusers.DDPMPipeline.from_pretrained(out)
