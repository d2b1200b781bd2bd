"""Helpers of the model-level API tests (a unique module name: every test folder has its own
conftest.py, so tests import these from here, not from conftest)."""
import shutil

from diffusers_unet import small_unet  # noqa: F401  (re-exported for the model tests)


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
