#!/usr/bin/env python3
"""Why calibration importance does not help the small DDPM end to end: two probes.

    .venv/bin/python bench/diffusion/calibration_probe.py

1. Layer level: for five layers, the output error |dW x|^2 summed over held-out inputs
   (64 digits noised to t = 900, 500, 100), kquant at 2 and 4 bits, with the calibration
   importance over without it (a ratio below 1: the importance does what it should).
2. End to end: SQNR of the predicted noise (dB, t = 999, 500, 100, 10) with the layer rules and
   kquant, for importance on no layer, every layer (groups combined by max, or mean), the
   square root of the max-combined importance, convolutions only, Linear layers only.
The calibration is bench_diffusion.py's (16 DDIM trajectories of 20 steps, 4 groups, seed 123).
"""
import math
import pathlib
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/python/diffusion"))
sys.path.insert(0, str(ROOT / "tests/python/arrow"))
import aqdiff_ctypes  # noqa: E402

LAYERS = ["down_blocks.1.attentions.0.to_q", "up_blocks.0.resnets.0.conv1",
          "mid_block.resnets.1.conv2", "down_blocks.0.resnets.0.conv1",
          "up_blocks.1.resnets.1.conv2"]


def main():
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    from sklearn.datasets import load_digits

    from arrow_quant_v2 import calibrate

    torch.set_num_threads(1)
    path = ROOT / "tests/data/diffusion/ddpm_digits"
    model = UNet2DModel.from_pretrained(path).float().eval()
    ddpm = DDPMScheduler.from_pretrained(path)
    lib = aqdiff_ctypes.Lib(ROOT / "build/libarrowquant.so")
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    names = list(state)
    res = calibrate(model, 16, scheduler=DDIMScheduler.from_config(ddpm.config), num_steps=20,
                    groups=4, generator=torch.Generator().manual_seed(123))
    imps = {}
    for combine in (0, 1):  # AQ_CALIB_COMBINE_MAX, AQ_CALIB_COMBINE_MEAN
        c = aqdiff_ctypes.Calib(lib.lib, res.table, combine=combine)
        imps[combine] = {n: c.importance(n, state[n].shape) for n in names
                         if state[n].ndim >= 2}
        c.close()

    digits = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1

    print("1. layer output error, calibrated / plain")
    x0 = digits[-64:]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    mods = dict(model.named_modules())
    inputs = {name: [] for name in LAYERS}
    hooks = [mods[name].register_forward_pre_hook(
        lambda m, a, name=name: inputs[name].append(a[0].detach())) for name in LAYERS]
    with torch.no_grad():
        for t in (900, 500, 100):
            model(ddpm.add_noise(x0, eps, torch.full((64,), t)), t)
    for h in hooks:
        h.remove()
    for name in LAYERS:
        m = mods[name]
        w = m.weight.detach().numpy()
        for bits in (2, 4):
            errs = []
            for imp in (None, imps[0][name + ".weight"]):
                dw = torch.from_numpy(lib.qdq(name, w, bits, "kquant", 512, imp)[0] - w)
                e = 0.0
                for x in inputs[name]:
                    y = (x @ dw.T if isinstance(m, torch.nn.Linear) else
                         torch.nn.functional.conv2d(x, dw, padding=m.padding, stride=m.stride))
                    e += float((y ** 2).sum())
                errs.append(e)
            print(f"  {name} {bits} bits: {errs[1] / errs[0]:.3f}")

    print("2. end to end, SQNR dB at t = 999, 500, 100, 10 (layer rules, kquant)")
    x0 = digits[-256:]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    ts = (999, 500, 100, 10)
    noised = {t: ddpm.add_noise(x0, eps, torch.full((256,), t)) for t in ts}
    with torch.no_grad():
        ref = {t: model(noised[t], t).sample for t in ts}
    q = UNet2DModel.from_pretrained(path).float().eval()
    variants = (
        ("no importance", lambda n: None),
        ("max", lambda n: imps[0].get(n)),
        ("mean", lambda n: imps[1].get(n)),
        ("sqrt(max)", lambda n: None if n not in imps[0] else np.sqrt(imps[0][n])),
        ("max, convolutions only", lambda n: imps[0].get(n) if state[n].ndim == 4 else None),
        ("max, Linear only", lambda n: imps[0].get(n) if state[n].ndim == 2 else None),
    )
    for profile in ("edge", "local"):
        dec = lib.decisions(profile, names, [state[n].shape for n in names])
        for label, get in variants:
            new = {}
            for n in names:
                keep, bits, _ = dec[n]
                new[n] = torch.from_numpy(
                    state[n].astype(np.float16).astype(np.float32) if keep else
                    lib.qdq(n, state[n], bits, "kquant", 512, get(n))[0])
            q.load_state_dict(new)
            with torch.no_grad():
                out = {t: q(noised[t], t).sample for t in ts}
            figures = [10 * math.log10(float((ref[t] ** 2).sum()) /
                                       float(((out[t] - ref[t]) ** 2).sum())) for t in ts]
            print(f"  {profile:5s} {label:24s} " + " ".join(f"{v:6.2f}" for v in figures))


if __name__ == "__main__":
    main()
