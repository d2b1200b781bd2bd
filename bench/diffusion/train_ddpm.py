#!/usr/bin/env python3
"""Trains the small DDPM of the diffusion benchmark and writes it as a diffusers folder.

A UNet2DModel (diffusers parameter names; 0.70 M parameters: two resolutions, 32 and 64
channels, self-attention at the lower one) learns to predict the noise of scikit-learn's
8x8 handwritten digits (1,797 images, shipped inside the scikit-learn package), scaled to
[-1, 1], under a 1000-step linear DDPM schedule. CPU only, one thread, deterministic seeds;
a few minutes.

    .venv/bin/python bench/diffusion/train_ddpm.py [--steps 4000] [--out tests/data/diffusion/ddpm_digits]

The weights are saved in float16 (1.4 MB) so that the folder can stay in the repository as
a test fixture; the benchmark's fp32 reference is this float16 model run in float32.
"""
import argparse
import pathlib
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def digits():
    """The digits as a float32 tensor [1797, 1, 8, 8] in [-1, 1]."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x.clamp(0, 1) * 2 - 1


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def main():
    from diffusers import DDPMScheduler

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "tests/data/diffusion/ddpm_digits"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = digits()
    model = make_unet()
    sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps,
                                             pct_start=0.05)
    gen = torch.Generator().manual_seed(1)
    start = time.time()
    loss_avg = None
    for step in range(args.steps):
        idx = torch.randint(0, data.shape[0], (args.batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(model(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss_avg:.4f}  {time.time() - start:6.1f} s",
                  flush=True)
    model = model.to(torch.float16)
    model.save_pretrained(args.out, safe_serialization=True)
    sched.save_pretrained(args.out)
    print(f"saved {args.out} ({sum(p.numel() for p in model.parameters())} parameters, "
          f"{time.time() - start:.0f} s)")


if __name__ == "__main__":
    np.random.seed(0)
    main()
