#!/usr/bin/env python3
"""The torch runtime (arrow_quant_v2.torch) against the same diffusers UNet loaded the ordinary
way: resident memory, CPU forward time, and the C dequantizer's speed against a memory floor.

    .venv/bin/python bench/runtime_torch.py                       # widths 64 and 320
    .venv/bin/python bench/runtime_torch.py --widths 32,64,128 --batch 8 --out FILE.md

Builds a DDPM-style diffusers UNet2DModel (CIFAR-10 layout: four levels of widths W, 2W, 2W,
2W, two layers per block, attention at 16x16) with random weights for each width, saves it with
save_pretrained and quantizes it with the arrowquant command (4 bits; affine and kquant).

- Memory: each configuration is loaded in its own process; the process's resident set before
  loading is the base, its peak is reset (/proc/self/clear_refs), and the figures are the
  peak (VmHWM) and resident (VmRSS) growth while loading. The process then loads the same
  model a second time, the first kept, from a new base: the second load is what one more
  model costs (the model's own memory), the difference between the two is what a process pays
  once whatever it loads (code pages, lazy imports, allocator arenas). The parent reads the
  child's /proc/PID/smaps before and after each load (so that parsing it does not change the
  child's memory): the pages of shared libraries (.so files: torch's, this package's module
  with zstd, lz4 and jansson, the others) that became resident, which split what is paid
  once into library pages (file-backed, shared) and anonymous memory. Then the peak growth
  through one forward pass at batch 1 of the second model. fp32 and bf16 are loaded the ordinary way
  (UNet2DModel.from_pretrained); packed models are built on the meta device and filled by
  load_quantized. The bound is 1.10 x (packed size + the largest layer's float32 weight).
- Forward time: one process holds the fp32 model and the packed ones and runs them in turn
  (no grad, batch --batch at 32x32, --threads torch threads, median of --reps rounds after a
  warm-up, in process CPU time, so that a shared machine still gives per-core figures); the
  ratio is
  packed / fp32 from that same run. The dequantization alone (every packed layer once, into
  the shared buffer) is timed in the same process, so the note can say what bounds the ratio.
- Dequantize speed: one 2048 x 4096 tensor per scheme and bit width through the extension's
  _dequantize_into on one thread (median of 11, process CPU time), in G weights/s, against a
  floor from a one-thread copy of 64 MiB of float32 in the same process (copy GB/s divided by
  the bytes a weight moves: its packed bits / 8 read plus 4 bytes written).

Model files are written with the command's default zstd compression; one affine file is also
written uncompressed (memory only). The packed buffers are the reader's memory (the file's
mapping, or the decompressed record batch), not copies (docs/runtime.md, "Memory while
loading"). --memory-only writes the memory tables alone.

Writes a Markdown table (date, machine, command) to --out, by default
bench/results/runtime_torch_<date>.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


# Shared libraries whose code pages loading a packed model touches: this package's extension
# module and the compression and JSON libraries it links; torch's own libraries.
_OURS = ("arrow_quant_v2", "libzstd", "liblz4", "libjansson")


def _code_pages(pid: int) -> dict:
    """Resident bytes of a process's shared-library mappings (file-backed code and read-only
    data of .so files), as {"torch": ..., "ours": ..., "other": ...}. Read by the parent, so
    that parsing the child's long smaps does not change the child's memory."""
    out = {"torch": 0, "ours": 0, "other": 0}
    lib = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                lib = None
                if ".so" in path.rsplit("/", 1)[-1]:
                    lib = ("ours" if any(k in path for k in _OURS) else
                           "torch" if "/torch/" in path else "other")
            elif head == "Rss:" and lib is not None:
                out[lib] += int(line.split()[1]) * 1024
    return out


def _unet(width: int):
    import diffusers
    return dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                block_out_channels=(width, 2 * width, 2 * width, 2 * width),
                down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                  "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                norm_num_groups=32), diffusers.UNet2DModel


def _meta(folder: str):
    import diffusers
    import torch
    config = diffusers.UNet2DModel.load_config(folder)
    with torch.device("meta"):
        return diffusers.UNet2DModel.from_config(config)


def _load(mode: str, folder: str, files: dict, meta=None):
    import diffusers
    import torch

    from arrow_quant_v2.torch import load_quantized
    if mode == "fp32":
        return diffusers.UNet2DModel.from_pretrained(folder).eval()
    if mode == "bf16":
        return diffusers.UNet2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16).eval()
    return load_quantized(meta if meta is not None else _meta(folder), files[mode]).eval()


def _packed_sizes(model):
    from arrow_quant_v2.torch import PackedConv2d, PackedLinear
    total = sum(t.numel() * t.element_size()
                for t in list(model.parameters()) + list(model.buffers()))
    layers = [m for m in model.modules() if isinstance(m, (PackedLinear, PackedConv2d))]
    largest = max((4 * math.prod(m.weight_shape) for m in layers), default=0)
    return total, largest, len(layers)


def _snapshot() -> None:
    """Asks the parent to read this process's shared-library pages now, and waits for it."""
    sys.stdout.write("@snapshot\n")
    sys.stdout.flush()
    sys.stdin.readline()


def _load_once(mode: str, folder: str, files: dict) -> tuple:
    """Loads the model once, from a base taken just before: (model, figures)."""
    _snapshot()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    # The model's module objects (built on the meta device, no tensor data) are measured on
    # their own: what every way of loading this model pays beside its weights (the ordinary
    # loaders build the same modules), counted in the load figures. A packed model is built
    # from them; for the others they are built after loading, and kept while measured.
    packed = mode.startswith("packed")
    meta = _meta(folder) if packed else None
    structure = _status("VmRSS") - base
    model = _load(mode, folder, files, meta)
    del meta
    out = {"load_peak": _status("VmHWM") - base, "load_rss": _status("VmRSS") - base}
    # The shared libraries' pages that became resident while loading (file-backed, shared with
    # every process that maps them; they stay, so their growth at the end is their growth at
    # the peak): the parent reads them before and after.
    _snapshot()
    if not packed:
        before = _status("VmRSS")
        meta = _meta(folder)
        structure = _status("VmRSS") - before
        del meta
    out["structure"] = structure
    return model, out


def child_memory(mode: str, folder: str, files: dict) -> dict:
    import diffusers
    import safetensors.torch  # noqa: F401  (imported before the base, as the loaders need it)
    import torch

    import arrow_quant_v2.torch  # noqa: F401
    _ = diffusers.UNet2DModel, diffusers.models.modeling_utils  # diffusers imports lazily
    x = torch.randn(1, 3, 32, 32)
    # First load: a fresh process, where loading also pays what a process pays once (the code
    # pages and lazy imports of torch, diffusers and this package, allocator arenas). Second
    # load of the same model, the first one kept (so that no freed memory is reused): what
    # one more model costs, the model's own resident memory.
    model, out = _load_once(mode, folder, files)
    first = model
    model, second = _load_once(mode, folder, files)
    out.update({f"second_{k}": v for k, v in second.items()})
    base = _status("VmRSS") - second["load_rss"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with torch.no_grad():
        model(x.to(next(model.parameters()).dtype), 10)
    out["forward_peak"] = _status("VmHWM") - base
    if mode.startswith("packed"):
        out["packed_bytes"], out["largest_layer"], out["packed_layers"] = _packed_sizes(model)
    else:
        out["model_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    return out


def child_time(folder: str, files: dict, batch: int, reps: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    models = {m: _load(m, folder, files) for m in ["fp32", *sorted(files)]}
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times = {m: [] for m in models}
    deq = {m: [] for m in models if m != "fp32"}
    with torch.no_grad():
        for m in models.values():
            m(x, 10)
        for _ in range(reps):
            for name, m in models.items():
                t0 = time.process_time()
                m(x, 10)
                times[name].append(time.process_time() - t0)
            for name in deq:
                layers = [l for l in models[name].modules() if hasattr(l, "_dequantized")]
                t0 = time.process_time()
                for l in layers:
                    l._dequantized(x)
                deq[name].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"threads": torch.get_num_threads(), "forward": med,
            "dequant": {k: statistics.median(v) for k, v in deq.items()}}


def child_dequant(files: dict) -> dict:
    import torch

    from arrow_quant_v2 import arrow_quant_v2 as ext
    from arrow_quant_v2.torch import _cbuf
    torch.set_num_threads(1)
    src = torch.randn(16 * 1024 * 1024)
    dst = torch.empty_like(src)
    probe = []
    for _ in range(11):
        t0 = time.process_time()
        dst.copy_(src)
        probe.append(time.process_time() - t0)
    bw = 2 * src.numel() * 4 / statistics.median(probe)
    out = {"probe_gbs": bw / 1e9, "rows": []}
    for key, path in sorted(files.items()):
        (row,) = [r for r in ext._model_rows(path) if not r[3]]
        name, scheme, _, _, bits, group, shape, data, scales, zps = row
        n = shape[0] * shape[1]
        res = torch.empty(n)
        ts = []
        for _ in range(11):
            t0 = time.process_time()
            ext._dequantize_into(scheme, bits, group, list(shape), data, scales, zps, _cbuf(res),
                                 "f32", threads=1)
            ts.append(time.process_time() - t0)
        wps = n / statistics.median(ts)
        floor = bw / (bits / 8 + 4)
        out["rows"].append({"scheme": scheme, "bits": bits, "gws": wps / 1e9,
                            "floor_gws": floor / 1e9, "of_floor": wps / floor})
    return out


def _run_child(args: list) -> dict:
    """Runs a child; answers its snapshot requests (a memory child asks before and after each
    load) with the library pages of _code_pages, added to its figures as code_* and
    second_code_* (the growth over each load)."""
    errf = tempfile.TemporaryFile("w+")
    p = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(args)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True)
    snaps, last = [], ""
    for line in p.stdout:
        if line.strip() == "@snapshot":
            snaps.append(_code_pages(p.pid))
            p.stdin.write("\n")
            p.stdin.flush()
        elif line.strip():
            last = line
    errf.seek(0)
    err = errf.read()
    errf.close()
    if p.wait() != 0:
        raise SystemExit(f"child {args[0]} failed:\n{err}")
    out = json.loads(last)
    for i, prefix in ((0, "code_"), (2, "second_code_")):
        if len(snaps) >= i + 2:
            out.update({prefix + k: snaps[i + 1][k] - snaps[i][k] for k in snaps[i]})
    return out


def _quantize(src, out, *args):
    exe = ROOT / "build" / "src" / "cli" / "arrowquant"
    if os.environ.get("AQ_BUILD_DIR"):
        exe = pathlib.Path(os.environ["AQ_BUILD_DIR"]) / "src" / "cli" / "arrowquant"
    subprocess.run([str(exe), "quantize", str(src), "-o", str(out), *map(str, args), "--quiet"],
                   check=True, capture_output=True)


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", default="64,320")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the forward timing")
    ap.add_argument("--out", default=None)
    ap.add_argument("--memory-only", action="store_true",
                    help="the resident memory table alone (no forward or dequantize timing)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        args = json.loads(a.child)
        fn = {"memory": child_memory, "time": child_time, "dequant": child_dequant}[args[0]]
        print(json.dumps(fn(*args[1:])))
        return

    import torch
    import diffusers
    from safetensors.torch import save_file
    date = datetime.date.today().isoformat()
    out_path = pathlib.Path(a.out or ROOT / "bench" / "results" / f"runtime_torch_{date}.md")
    lines = [f"# Torch runtime: packed diffusers UNet vs fp32/bf16 ({date})", "",
             f"- machine: {_machine()}", f"- torch {torch.__version__}, diffusers "
             f"{diffusers.__version__}, AQ_KERNELS={os.environ.get('AQ_KERNELS', '(auto)')}",
             f"- command: `{' '.join([pathlib.Path(sys.executable).name, *sys.argv])}`", ""]
    schemes = {"packed-affine4": ("--bits", 4), "packed-kquant4": ("--bits", 4, "--scheme",
                                                                   "kquant"),
               "packed-affine4-uncompressed": ("--bits", 4, "--compression", "none")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        mem_rows, time_rows, warm_rows, once_rows = [], [], [], []
        for w in [int(x) for x in a.widths.split(",")]:
            config, cls = _unet(w)
            torch.manual_seed(w)
            model = cls(**config)
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.randn_like(p) * 0.02)
            folder = tmp / f"unet{w}"
            model.save_pretrained(folder)
            params = sum(p.numel() for p in model.parameters())
            del model
            files = {}
            for key, args in schemes.items():
                files[key] = str(tmp / f"unet{w}-{key}.arrow")
                _quantize(folder / "diffusion_pytorch_model.safetensors", files[key], *args)
            res = {m: _run_child(["memory", m, str(folder), files])
                   for m in ["fp32", "bf16", *schemes]}
            for m, r in res.items():
                if m.startswith("packed"):
                    bound = 1.10 * (r["packed_bytes"] + r["largest_layer"])
                    extra = (f"{r['packed_bytes'] / 2**20:.1f} | "
                             f"{r['largest_layer'] / 2**20:.1f} | "
                             f"{r['load_peak'] / bound * 1.10:.2f}x | "
                             f"{r['structure'] / 2**20:.1f} | "
                             f"{(r['load_peak'] - r['structure']) / bound * 1.10:.2f}x |")
                else:
                    extra = f"{r['model_bytes'] / 2**20:.1f} (weights) | - | - | - | - |"
                ref = r["packed_bytes"] + r["largest_layer"] if m.startswith("packed") else 0
                mib = {k: v / 2**20 for k, v in r.items() if isinstance(v, (int, float))}
                fixed = mib["load_peak"] - mib["second_load_peak"]
                if m.startswith("packed"):
                    ref = r["packed_bytes"] + r["largest_layer"]
                    ratios = (f"{r['second_load_peak'] / ref:.2f}x | "
                              f"{(r['second_load_peak'] - r['second_structure']) / ref:.2f}x")
                else:
                    ratios = "- | -"
                warm_rows.append(
                    f"| {w} | {m} | {mib['load_peak']:.1f} | {mib['second_load_peak']:.1f} | "
                    f"{fixed:.1f} | {mib['second_load_rss']:.1f} | "
                    f"{mib['second_structure']:.2f} | "
                    f"{mib['second_load_rss'] - mib['second_structure']:.1f} | "
                    + (f"{(r['packed_bytes'] + r['largest_layer']) / 2**20:.1f} | "
                       if m.startswith("packed") else f"{r['model_bytes'] / 2**20:.1f} (weights) | ")
                    + f"{ratios} |")
                code = {k: r[f"code_{k}"] for k in ("torch", "ours", "other")}
                code_all = sum(code.values())
                once_rows.append(
                    f"| {w} | {m} | {fixed:.2f} | {code['torch'] / 2**20:.2f} | "
                    f"{code['ours'] / 2**20:.2f} | {code['other'] / 2**20:.2f} | "
                    f"{sum(r[f'second_code_{k}'] for k in code) / 2**20:.2f} | "
                    f"{fixed - code_all / 2**20 + sum(r[f'second_code_{k}'] for k in code) / 2**20:.2f} | "
                    + (f"{(r['load_peak'] - code_all) / ref:.2f}x | {r['second_load_peak'] / ref:.2f}x |"
                       if m.startswith("packed") else "- | - |"))
                mem_rows.append(
                    f"| {w} | {params / 1e6:.1f} M | {m} | {r['load_peak'] / 2**20:.1f} | "
                    f"{r['load_rss'] / 2**20:.1f} | {r['forward_peak'] / 2**20:.1f} | "
                    f"{r['load_peak'] / res['fp32']['load_rss']:.2f} | "
                    f"{r['load_peak'] / res['bf16']['load_rss']:.2f} | {extra}")
            if a.memory_only:
                continue
            timed = {k: v for k, v in files.items() if not k.endswith("-uncompressed")}
            t = _run_child(["time", str(folder), timed, a.batch, a.reps, a.threads])
            f32 = t["forward"]["fp32"]
            for m, s in t["forward"].items():
                d = t["dequant"].get(m)
                time_rows.append(f"| {w} | {a.batch} | {t['threads']} | {m} | {s * 1e3:.1f} | "
                                 f"{s / f32:.2f}x | "
                                 + (f"{d * 1e3:.1f} ({d / s:.0%}) |" if d is not None
                                    else "- |"))
        lines += ["## Resident memory (MiB of growth over the process before loading)", "",
                  "| width | params | model | load peak | resident after load | peak through "
                  "forward (batch 1) | peak / fp32 resident | peak / bf16 resident | packed "
                  "size | largest layer (f32) | peak / (packed + largest) | module objects "
                  "| peak less module objects / (packed + largest) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|", *mem_rows, "",
                  "fp32 is loaded through safetensors' memory map: its weights become resident "
                  "only when the forward pass touches them, so its load figures are small and "
                  "its peak through forward is the one to compare. Module objects: the "
                  "resident growth of "
                  "building the packed model's modules on the meta device (Python objects, no "
                  "tensor data), measured before loading in the same process.", "",
                  "## The model's own memory: a second load in the same process", "",
                  "Each process then loads the same model again, the first one kept (no freed "
                  "memory reused), from a base taken just before. The difference between the "
                  "two load peaks is what a process pays once, whatever it loads (code pages "
                  "and lazy imports of torch, diffusers and this package, allocator arenas); "
                  "the fp32 and bf16 models pay it too. Module objects: the growth of building "
                  "the same modules on the meta device (a packed model is built from them; "
                  "the fp32 and bf16 models build the same modules), measured in this second "
                  "round. Bound: packed size + the largest layer's float32 weight; the target "
                  "is 1.10x.", "",
                  "| width | model | load peak, first load | load peak, second load | paid "
                  "once per process | resident after the second load | module objects | "
                  "resident less module objects | packed + largest layer | second peak / "
                  "(packed + largest) | second peak less module objects / (packed + largest) "
                  "|", "|---|---|---|---|---|---|---|---|---|---|---|", *warm_rows, "",
                  "## What the first load pays once", "",
                  "Paid once: the first load's peak less the second's (MiB). Of it, the "
                  "resident pages of shared libraries that the first load touched (code and "
                  "read-only data of .so files: file-backed, shared with every process mapping "
                  "them, dropped under memory pressure without writing): torch's libraries; "
                  "this package's extension module with the libraries it links (zstd, lz4, "
                  "jansson); the others (Python's, numpy's, the C library). Less them: the "
                  "anonymous memory paid once (first use of Python objects and allocator "
                  "arenas), counting the second load's own library pages. The last two "
                  "columns compare the first load less its library pages, and the second load, "
                  "with packed size + the largest layer's float32 weight.", "",
                  "| width | model | paid once | of which torch's library pages | this "
                  "package's and its libraries' pages | other libraries' pages | library pages "
                  "in the second load | paid once less library pages | first load less "
                  "library pages / (packed + largest) | second load / (packed + largest) |",
                  "|---|---|---|---|---|---|---|---|---|---|", *once_rows, ""]
        if a.memory_only:
            out_path.write_text("\n".join(lines) + "\n")
            print("\n".join(lines))
            print(f"\nwritten to {out_path}")
            return
        lines += ["## CPU forward time (median process CPU time, no grad, 32x32)", "",
                  "| width | batch | threads | model | CPU ms | vs fp32 | of which dequantize "
                  "(ms, share) |", "|---|---|---|---|---|---|---|", *time_rows, ""]
        # Dequantize speed: one 2048 x 4096 tensor per scheme and bit width.
        g = torch.Generator().manual_seed(1)
        st = tmp / "one.safetensors"
        save_file({"w": torch.randn(2048, 4096, generator=g) * 0.02}, str(st))
        files = {}
        for scheme in ("affine", "affine_search", "kquant"):
            for bits in (2, 4, 8):
                files[f"{scheme}{bits}"] = str(tmp / f"one-{scheme}{bits}.arrow")
                _quantize(st, files[f"{scheme}{bits}"], "--bits", bits, "--scheme", scheme,
                          "--min-elements", 1)
        d = _run_child(["dequant", files])
        lines += ["## C dequantizer, one thread, 2048 x 4096 to float32", "",
                  f"Memory floor from a one-thread float32 copy: {d['probe_gbs']:.1f} GB/s "
                  "per second of process CPU time "
                  "(read + write), divided by bits/8 + 4 bytes per weight.", "",
                  "| scheme | bits | G weights/s | floor G/s | of floor |",
                  "|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['scheme']} | {r['bits']} | {r['gws']:.2f} | "
                         f"{r['floor_gws']:.2f} | {r['of_floor']:.0%} |")
    out_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out_path}")


if __name__ == "__main__":
    main()
