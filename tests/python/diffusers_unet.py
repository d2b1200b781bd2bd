"""A small diffusers UNet2DModel with random weights, for the tests that quantize a diffusers
model (tests/python/model, tests/python/pipeline). It sits beside the root conftest.py, whose
folder pytest puts on sys.path, so every test folder can import it."""


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
