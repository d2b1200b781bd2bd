#!/usr/bin/env python3
"""The torch runtime (arrow_quant_v2.torch) on a CUDA device, checked and measured in one call.

    python bench/runtime_cuda_check.py [--out FILE.md] [--reps 20] [--batch 8]
    python bench/runtime_cuda_check.py --rehearse    # the same steps on the CPU, no GPU needed

Needs torch with CUDA, diffusers, safetensors, the installed arrow_quant_v2 module and the
arrowquant command (on PATH, or in $AQ_BUILD_DIR/src/cli or ./build/src/cli). Without a CUDA
device it prints one line saying so and exits 0. Steps (any failed check stops the run with
exit status 1 and names what differed):

1. Equality with the C dequantizer. Tensors of awkward shapes (short last groups, partial
   kquant super-blocks, narrow rows, constant rows, denormals, huge values) are quantized by
   the command for every scheme (affine, affine_search, kquant, kquant_rows) and bit width
   (2, 4, 8); each packed tensor, and a copy with random codes and sub-block parameters and
   extreme scales, is dequantized on the device to float32, float16 and bfloat16 and must give
   the C library's floats on the CPU bit for bit (any NaN equals any NaN: the hardware picks
   a NaN's sign and payload).
2. A packed diffusers forward. A DDPM-style UNet2DModel (the demo UNet of width 64, 9 M
   parameters) is quantized (affine and kquant, 4 bits), built on the meta device and loaded
   with load_quantized(..., device="cuda"). Every packed layer's weight on the device equals
   the C dequantizer's bit for bit, and the forward pass matches the same packed model on the
   CPU (TF32 off; relative error below 1e-3).
3. Moving the model between devices: .to("cpu") gives the CPU model's output exactly (same
   C dequantizer, same CPU operations), .to("cuda") again the first device output, and
   .to(torch.bfloat16) on the device runs with finite outputs.
4. Timing and memory on the device: forward time (median of --reps after a warm-up, batch
   --batch at 32 x 32, synchronized) of the packed models against the fp32 and bf16 models
   loaded the ordinary way (from_pretrained, then .cuda()), the dequantization alone (every
   packed layer once), and the device memory allocated after loading and at the peak through
   one forward pass (torch.cuda.memory_allocated / max_memory_allocated).

Writes a Markdown report (date, device, command) to --out, by default
bench/results/runtime_cuda_<date>.md, and prints it. --rehearse runs every step on the CPU
with the torch operations standing in for the device (arrow_quant_v2.torch.CPU_DEQUANTIZER =
"torch"), step 4 with two repetitions and no memory figures, so the script itself can be
checked without a GPU; it writes nothing (about 2.5 minutes on two shared cores).
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMES = ["affine", "affine_search", "kquant", "kquant_rows"]
BITS = [2, 4, 8]
SPECIAL = [0x00000000, 0x80000000, 0x00000001, 0x80400000, 0x00800000, 0x3A83126F, 0xC0200000,
           0x3C4985F0, 0x7149F2CA, 0x7F7FFFFF, 0xFF7FFFFF, 0x71800000, 0x40E00000, 0x3F800000]


class CheckFailed(Exception):
    pass


def _exe() -> str:
    for cand in ([os.environ["AQ_BUILD_DIR"] + "/src/cli/arrowquant"]
                 if os.environ.get("AQ_BUILD_DIR") else []) + [
            str(ROOT / "build" / "src" / "cli" / "arrowquant"), shutil.which("arrowquant")]:
        if cand and os.access(cand, os.X_OK):
            return cand
    raise SystemExit("runtime_cuda_check: the arrowquant command is not on PATH, in "
                     "$AQ_BUILD_DIR/src/cli or in ./build/src/cli")


def _quantize(src, out, *args):
    p = subprocess.run([_exe(), "quantize", str(src), "-o", str(out), *map(str, args), "--quiet"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"runtime_cuda_check: arrowquant quantize failed: {p.stderr.strip()}")


def _awkward(torch):
    g = torch.Generator().manual_seed(3)
    c = torch.randn(6, 96, generator=g)
    c[1] = 0.25
    c[2] = -0.0
    c[3, :40] = 1e-39
    c[4] *= 1e30
    return {"tail_groups": torch.randn(7, 45, generator=g),
            "partial_super_blocks": torch.randn(3, 1100, generator=g),
            "narrow": torch.randn(5, 7, 3, generator=g),
            "heavy_tails": torch.randn(16, 300, generator=g) ** 5,
            "wide_3d": torch.randn(2, 3, 700, generator=g),
            "whole_super_blocks": torch.randn(64, 1024, generator=g),
            "edges": c}


def _bits(t, torch):
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def _same_floats(a, b, torch):
    nan = torch.isnan(a.float()) & torch.isnan(b.float())
    return int(((_bits(a, torch) != _bits(b, torch)) & ~nan).sum())


def check_dequantizer(tmp, device, torch, aqt, ext, rehearse) -> str:
    from safetensors.torch import save_file
    src = tmp / "awkward.safetensors"
    save_file(_awkward(torch), str(src))
    g = torch.Generator().manual_seed(11)
    special = torch.tensor(SPECIAL, dtype=torch.int64).to(torch.int32)
    compared = 0
    for scheme in SCHEMES:
        for bits in BITS:
            for group in ([32, 128] if not scheme.startswith("kquant") else [512]):
                out = tmp / f"{scheme}-{bits}-{group}.arrow"
                _quantize(src, out, "--bits", bits, "--scheme", scheme, "--group-size", group,
                          "--min-elements", 1)
                for row in (r for r in ext._model_rows(str(out)) if not r[3]):
                    name, sch, _, _, bw, gs, shape = row[:7]
                    q, sc, zp = aqt._row_tensors(row)
                    pick = lambda n: special[torch.randint(len(special), (n,), generator=g)]
                    adversarial = (torch.randint(256, q.shape, generator=g,
                                                 dtype=torch.int32).to(torch.uint8),
                                   pick(sc.numel()).view(torch.float32),
                                   pick(zp.numel()).view(torch.float32))
                    for kind, (qq, ss, zz) in (("quantized", (q, sc, zp)),
                                               ("random bits", adversarial)):
                        for dtype in (torch.float32, torch.float16, torch.bfloat16):
                            c = aqt._dequantize_c(qq, ss, zz, sch, bw, gs, shape,
                                                  torch.empty(shape, dtype=dtype), name)
                            aqt.CPU_DEQUANTIZER = "torch" if rehearse else "c"
                            d = aqt.dequantize(qq.to(device), ss.to(device), zz.to(device),
                                               scheme=sch, bit_width=bw, group_size=gs,
                                               shape=shape, dtype=dtype).cpu()
                            aqt.CPU_DEQUANTIZER = "c"
                            bad = _same_floats(d, c, torch)
                            compared += c.numel()
                            if bad:
                                raise CheckFailed(
                                    f"dequantize on {device}: {bad} of {c.numel()} floats "
                                    f"differ from the C library: {name}, {scheme}, {bits} bits, "
                                    f"group {group}, {dtype}, {kind}")
    return (f"- dequantizer: {compared} floats of {len(SCHEMES)} schemes x {len(BITS)} bit "
            f"widths x 3 output dtypes (quantized and random-bit tensors) equal the C library's")


def _unet(width):
    return dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                block_out_channels=(width, 2 * width, 2 * width, 2 * width),
                down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=32)


def _packed(path, folder, device, torch, diffusers, aqt):
    config = diffusers.UNet2DModel.load_config(str(folder))
    with torch.device("meta"):
        meta = diffusers.UNet2DModel.from_config(config)
    return aqt.load_quantized(meta, str(path), device=device).eval()


def _rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))


def check_model(tmp, device, torch, diffusers, aqt, batch, reps, rehearse) -> list:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(64)
    model = diffusers.UNet2DModel(**_unet(64))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    folder = tmp / "unet64"
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    src = folder / "diffusion_pytorch_model.safetensors"
    files = {"affine4": tmp / "unet-affine4.arrow", "kquant4": tmp / "unet-kquant4.arrow"}
    _quantize(src, files["affine4"], "--bits", 4)
    _quantize(src, files["kquant4"], "--bits", 4, "--scheme", "kquant")
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lines = [f"- model: diffusers UNet2DModel, width 64, {params / 1e6:.1f} M parameters, "
             f"batch {batch} at 32 x 32"]
    with torch.no_grad():
        for key, path in files.items():
            cpu = _packed(path, folder, "cpu", torch, diffusers, aqt)
            ref = cpu(x, 10).sample
            if rehearse:
                aqt.CPU_DEQUANTIZER = "torch"
            dev = _packed(path, folder, device, torch, diffusers, aqt)
            for (n, a), b in zip(((n, m) for n, m in dev.named_modules()
                                  if isinstance(m, (aqt.PackedLinear, aqt.PackedConv2d))),
                                 (m for m in cpu.modules()
                                  if isinstance(m, (aqt.PackedLinear, aqt.PackedConv2d)))):
                bad = _same_floats(a.weight.cpu(), b.weight, torch)
                if bad:
                    raise CheckFailed(f"{key}: layer {n}: {bad} weights on {device} differ "
                                      f"from the C dequantizer's")
            out = dev(x.to(device), 10).sample
            rel = _rel(out.cpu(), ref)
            if not rel < 1e-3:
                raise CheckFailed(f"{key}: forward on {device} differs from the CPU by {rel:.2e} "
                                  f"(relative to the largest output)")
            dev.to("cpu")
            aqt.CPU_DEQUANTIZER = "c"
            back = dev(x, 10).sample
            if not torch.equal(back, ref):
                raise CheckFailed(f"{key}: after .to('cpu') the output differs from the CPU "
                                  f"model's by {_rel(back, ref):.2e}")
            if rehearse:
                aqt.CPU_DEQUANTIZER = "torch"
            dev.to(device)
            again = dev(x.to(device), 10).sample.cpu()
            if not _rel(again, out.cpu()) < 1e-5:
                raise CheckFailed(f"{key}: after .to('cpu') and back the output on {device} "
                                  f"moved by {_rel(again, out.cpu()):.2e}")
            dev.to(torch.bfloat16)
            low = dev(x.to(device, torch.bfloat16), 10).sample
            if not bool(torch.isfinite(low).all()):
                raise CheckFailed(f"{key}: bfloat16 forward on {device} is not finite")
            aqt.CPU_DEQUANTIZER = "c"
            lines.append(f"- {key}: every packed weight on {device} equals the C dequantizer's; "
                         f"forward within {rel:.1e} of the CPU; .to('cpu') exact, back to "
                         f"{device} and to bfloat16 run")
            del cpu, dev
        if rehearse:
            aqt.CPU_DEQUANTIZER = "torch"
        try:
            lines += measure(folder, files, x, device, torch, diffusers, aqt,
                             min(reps, 2) if rehearse else reps)
        finally:
            aqt.CPU_DEQUANTIZER = "c"
    return lines


class _Device:
    """The device calls of step 4: CUDA's, or for the rehearsal on the CPU, none (no
    synchronization, no memory figures), so that the rest of the step runs as on the GPU."""

    def __init__(self, device, torch):
        self.cuda = device == "cuda"
        self.torch = torch

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def allocated(self):
        if not self.cuda:
            return None
        self.torch.cuda.empty_cache()
        return self.torch.cuda.memory_allocated()

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak(self):
        return self.torch.cuda.max_memory_allocated() if self.cuda else None


def _time(fn, reps, dev):
    fn()
    dev.sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dev.sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _mib(n, base):
    return f"{(n - base) / 2**20:.1f}" if n is not None else "-"


def measure(folder, files, x, device, torch, diffusers, aqt, reps) -> list:
    rows = []
    dev = _Device(device, torch)
    xs = x.to(device)
    base_fwd = None
    for key in ["fp32", "bf16", *files]:
        before = dev.allocated()
        if key == "fp32":
            m = diffusers.UNet2DModel.from_pretrained(str(folder)).to(device).eval()
        elif key == "bf16":
            m = diffusers.UNet2DModel.from_pretrained(
                str(folder), torch_dtype=torch.bfloat16).to(device).eval()
        else:
            m = _packed(files[key], folder, device, torch, diffusers, aqt)
        loaded = dev.allocated()
        inp = xs.to(next(m.parameters()).dtype)
        dev.reset_peak()
        with torch.no_grad():
            m(inp, 10)
            dev.sync()
            peak = dev.peak()
            fwd = _time(lambda: m(inp, 10), reps, dev)
            layers = [l for l in m.modules() if isinstance(l, (aqt.PackedLinear,
                                                                 aqt.PackedConv2d))]
            deq = _time(lambda: [l._dequantized(inp) for l in layers], reps, dev) if layers \
                else None
        if key == "fp32":
            base_fwd = fwd
        rows.append(f"| {key} | {_mib(loaded, before)} | {_mib(peak, before)} | "
                    f"{fwd * 1e3:.2f} | "
                    f"{fwd / base_fwd:.2f}x | "
                    + (f"{deq * 1e3:.2f} ({deq / fwd:.0%}) |" if deq is not None else "- |"))
        del m
    return ["", "| model | MiB after load | MiB peak through forward | forward ms | vs fp32 | "
            "dequantize alone ms (of forward) |", "|---|---|---|---|---|---|", *rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rehearse", action="store_true")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("runtime_cuda_check: skipped: torch is not installed")
        return 0
    if not a.rehearse and not torch.cuda.is_available():
        print(f"runtime_cuda_check: skipped: no CUDA device (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'})")
        return 0
    import diffusers

    import arrow_quant_v2.torch as aqt
    from arrow_quant_v2 import arrow_quant_v2 as ext
    device = "cpu" if a.rehearse else "cuda"
    name = "CPU rehearsal (torch operations)" if a.rehearse else torch.cuda.get_device_name(0)
    date = datetime.date.today().isoformat()
    lines = [f"# Torch runtime on CUDA: checks and figures ({date})", "",
             f"- device: {name}; host {platform.node() or 'unknown'}, {os.cpu_count()} CPUs",
             f"- torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers "
             f"{diffusers.__version__}",
             f"- command: `{' '.join([pathlib.Path(sys.executable).name, *sys.argv])}`", ""]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            lines.append(check_dequantizer(tmp, device, torch, aqt, ext, a.rehearse))
            lines += check_model(tmp, device, torch, diffusers, aqt, a.batch, a.reps,
                                 a.rehearse)
    except CheckFailed as e:
        print("\n".join(lines))
        print(f"runtime_cuda_check: FAILED: {e}")
        return 1
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if not a.rehearse:
        out = pathlib.Path(a.out or ROOT / "bench" / "results" / f"runtime_cuda_{date}.md")
        out.write_text(text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
