#!/usr/bin/env python3
"""The default modes of ArrowQuantV2 on the project's DDPM, at 2, 4 and 8 bits.

    cmake --build build -j2 && .venv/bin/pip install --no-deps . &&
    .venv/bin/python bench/diffusion/bench_default_mode.py

Model: tests/data/diffusion/ddpm_digits (bench/diffusion/train_ddpm.py), reference: that model
in float32. Every configuration is one call of the seed API on a batch of all the model's
tensors (layer_name, weights, shape), dequantized with dequantize_arrow and loaded back:

  diffusion    ArrowQuantV2(mode="diffusion").quantize_arrow_batch(batch, bit_width=N): the
               default, the layer rules, floor and budget of N's profile (edge, local, cloud)
  time_aware   the same with mode="time_aware" and calibration= a CalibrationResult of
               arrow_quant_v2.calibrate (16 samples, 20 DDIM steps, 4 groups, seed 123)
  time_aware(model)  the same with calibration= the torch model itself (the library runs
               calibrate on it: diffusers' default DDIM schedule, 20 steps, 8 samples, seed 0)
  kquant       scheme="kquant": every tensor at N bits, no rules (super-blocks over the
               flattened tensor)
  kquant_rows  scheme="kquant_rows": the same in format version 1's row-by-row layout (what
               the diffusion mode did before it applied the rules)
  base         mode="base": plain affine, groups of 128

With --demo-unet PATH (the demo's checkpoint: build/examples/gen_unet PATH --width 80 --seed
2024, as scripts/demo makes it; ~57 M parameters, no sampler), a second table on it: the same
configurations but time_aware (no model to run), bpw, relative RMSE of all the weights against
float32, and the call's wall time and rate.

The budget's choices can depend on the order of the rows where options tie closely: --order
file gives the rows in the safetensors file's order, as the command and quantize_diffusion_model
read them (the default is the torch model's state_dict order).

Columns: bpw over every parameter (codes, scales, zero points, sub-block parameters, kept
tensors as stored), bpw over the quantized tensors only, tensors kept in float, tensors at 8
bits, (DDPM table) tensors below the N bits asked for, SQNR (dB) of the predicted noise at
t = 999 / 500 / 10 on 256 held-out digits noised with fixed noise, PSNR (dB) of 64 samples
(50 DDIM steps, eta 0, fixed noise) against the float32 model's, and the call's wall time.
"""
import argparse
import math
import pathlib
import time

import numpy as np
import pyarrow as pa
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
SQNR_T = (999, 500, 10)


def weights_batch(state, names):
    """The seed API's input: one row per tensor (name, float32 weights, shape)."""
    return pa.record_batch({
        "layer_name": names,
        "weights": pa.array([state[n].astype(np.float32).ravel() for n in names],
                            pa.list_(pa.float32())),
        "shape": pa.array([list(state[n].shape) for n in names], pa.list_(pa.int64()))})


def timed_quantize(q, batch, bits, extra):
    """The result of quantize_arrow_batch and the seconds it took."""
    t0 = time.perf_counter()
    res = q.quantize_arrow_batch(batch, bit_width=bits, **extra)
    return res, time.perf_counter() - t0


def sqnr(ref, q):
    e = float(((q - ref) ** 2).sum())
    return math.inf if e == 0 else 10 * math.log10(float((ref ** 2).sum()) / e)


def psnr(ref, q):
    a = ((ref + 1) / 2).clamp(0, 1)
    b = ((q + 1) / 2).clamp(0, 1)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main():
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
    from sklearn.datasets import load_digits

    import arrow_quant_v2 as aq

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "tests/data/diffusion/ddpm_digits"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--demo-unet", default=None, help="the demo UNet's safetensors file")
    ap.add_argument("--order", choices=("model", "file"), default="model",
                    help="the batch's rows in the torch model's state_dict order, or in the "
                         "safetensors file's (the order the command and "
                         "quantize_diffusion_model see)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = UNet2DModel.from_pretrained(args.model).float().eval()
    ddpm = DDPMScheduler.from_pretrained(args.model)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    names = list(state)
    if args.order == "file":
        from safetensors import safe_open
        with safe_open(str(pathlib.Path(args.model) / "diffusion_pytorch_model.safetensors"),
                       "np") as f:
            names = list(f.keys())
    total = sum(v.size for v in state.values())
    batch = weights_batch(state, names)

    x0 = torch.tensor(load_digits().images[-256:], dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    noised = {t: ddpm.add_noise(x0, eps, torch.full((x0.shape[0],), t)) for t in SQNR_T}
    start_noise = torch.randn((args.samples, 1, 8, 8), generator=torch.Generator().manual_seed(11))

    def evaluate(m):
        with torch.no_grad():
            outs = {t: m(noised[t], t).sample for t in SQNR_T}
            sched = DDIMScheduler.from_config(ddpm.config)
            sched.set_timesteps(50)
            x = start_noise.clone()
            for t in sched.timesteps:
                x = sched.step(m(x, t).sample, t, x, eta=0.0).prev_sample
        return outs, x

    ref_outs, ref_samples = evaluate(model)
    calib = aq.calibrate(model, 16, scheduler=DDIMScheduler.from_config(ddpm.config),
                         num_steps=20, groups=4, generator=torch.Generator().manual_seed(123))
    qmodel = UNet2DModel.from_pretrained(args.model).float().eval()

    configs = [
        ("diffusion", "diffusion", {}),
        ("time_aware", "time_aware", {"calibration": calib}),
        ("time_aware(model)", "time_aware", {"calibration": model}),
        ("kquant", "diffusion", {"scheme": "kquant"}),
        ("kquant_rows", "diffusion", {"scheme": "kquant_rows"}),
        ("base", "base", {}),
    ]
    print(f"# DDPM {pathlib.Path(args.model).name}: {total} parameters, {len(names)} tensors; "
          f"{args.samples} samples, 50 DDIM steps")
    print("| bits | configuration | bpw (all) | bpw (quantized) | kept | 8-bit | below N | "
          "SQNR t=999/500/10 | sample PSNR dB | time s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for bits in (2, 4, 8):
        for label, mode, extra in configs:
            q = aq.ArrowQuantV2(mode=mode)
            res, took = timed_quantize(q, batch, bits, extra)
            rows = res.to_pylist()
            size = [len(r["quantized_data"]) + 4 * len(r["scales"]) + 4 * len(r["zero_points"])
                    for r in rows]
            quant = [i for i, r in enumerate(rows) if r["bit_width"] in (2, 4, 8)]
            qn = sum(state[names[i]].size for i in quant)
            back = q.dequantize_arrow(res)
            ws = back.column("weights").to_pylist()
            qmodel.load_state_dict({n: torch.tensor(np.asarray(ws[i], np.float32)
                                                    .reshape(state[n].shape))
                                    for i, n in enumerate(names)})
            outs, samples = evaluate(qmodel)
            kept = sum(1 for r in rows if r["bit_width"] in (16, 32))
            eight = sum(1 for r in rows if r["bit_width"] == 8)
            below = sum(1 for r in rows if r["bit_width"] < bits)
            print(f"| {bits} | {label} | {8 * sum(size) / total:.3f} | "
                  f"{8 * sum(size[i] for i in quant) / qn:.3f} | {kept} | {eight} | {below} | "
                  + " / ".join(f"{sqnr(ref_outs[t], outs[t]):.1f}" for t in SQNR_T)
                  + f" | {psnr(ref_samples, samples):.2f} | {took:.2f} |", flush=True)
    if args.demo_unet:
        demo_table(args.demo_unet, [c for c in configs if c[1] != "time_aware"])


def demo_table(path, configs):
    """bpw, relative RMSE and speed of each configuration on the demo UNet."""
    from safetensors.numpy import load_file

    import arrow_quant_v2 as aq

    state = load_file(path)
    names = list(state)
    total = sum(v.size for v in state.values())
    batch = weights_batch(state, names)
    ref_sq = sum(float((state[n].astype(np.float64) ** 2).sum()) for n in names)
    print(f"\n# demo UNet {path}: {total} parameters, {len(names)} tensors")
    print("| bits | configuration | bpw (all) | bpw (quantized) | kept | 8-bit | rel RMSE | "
          "time s | M weights/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bits in (2, 4, 8):
        for label, mode, extra in configs:
            q = aq.ArrowQuantV2(mode=mode)
            res, took = timed_quantize(q, batch, bits, extra)
            bw = res.column("bit_width").to_pylist()
            size = [len(d) + 4 * len(s) + 4 * len(z) for d, s, z in zip(
                res.column("quantized_data").to_pylist(), res.column("scales").to_pylist(),
                res.column("zero_points").to_pylist())]
            quant = [i for i, b in enumerate(bw) if b in (2, 4, 8)]
            qn = sum(state[names[i]].size for i in quant)
            back = q.dequantize_arrow(res).column("weights")
            err = 0.0
            for i, n in enumerate(names):
                d = back[i].values.to_numpy(zero_copy_only=False).astype(np.float64)
                err += float(((d - state[n].ravel().astype(np.float64)) ** 2).sum())
            kept = sum(1 for b in bw if b in (16, 32))
            eight = sum(1 for b in bw if b == 8)
            print(f"| {bits} | {label} | {8 * sum(size) / total:.3f} | "
                  f"{8 * sum(size[i] for i in quant) / qn:.3f} | {kept} | {eight} | "
                  f"{math.sqrt(err / ref_sq):.4f} | {took:.2f} | {total / took / 1e6:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
