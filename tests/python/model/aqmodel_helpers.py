"""Helpers of the model-level API tests (a unique module name: every test folder has its own
conftest.py, so tests import these from here, not from conftest)."""
import shutil


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
