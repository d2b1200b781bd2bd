#!/usr/bin/env python3
"""The quality options of `arrowquant quantize` on a checkpoint (default: the demo UNet made
by scripts/demo): for each set of options, the true bits per weight of the quantized rows
(every byte of codes, scales and zero points counted from the model file), the total squared
error of the quantized tensors (numpy, from the restored safetensors), the run's minimum SQNR,
mean cosine, moved tensors and time. Prints a Markdown table (bench/results/pipeline_*.md, "Quality options").

    .venv/bin/python bench/pipeline_options.py [SRC_FOLDER_OR_FILE]
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.ipc
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = ROOT / "build" / "src" / "cli" / "arrowquant"
RUNS = [("--bits", "2"), ("--bits", "2", "--min-accuracy", "0.97"),
        ("--bits", "2", "--group-size", "64"), ("--target-bpw", "3"), ("--bits", "4"),
        ("--bits", "4", "--scheme", "kquant"), ("--target-bpw", "4.5")]


def main():
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "demo" / "unet"
    restored_src = tempfile.mkdtemp()
    ref_path = pathlib.Path(restored_src) / "ref.safetensors"
    # The source as one safetensors file, through the tool's own raw path (--keep '*').
    subprocess.run([CLI, "quantize", src, "-o", ref_path.with_suffix(".arrow"), "--keep", "*",
                    "--quiet"], check=True)
    subprocess.run([CLI, "dequantize", ref_path.with_suffix(".arrow"), "-o", ref_path],
                   check=True)
    ref = load_file(str(ref_path))
    print(f"load average before: {os.getloadavg()}")
    print("| options | bits/weight | squared error | min SQNR dB | mean cosine | moved | time s |")
    print("|---|---|---|---|---|---|---|")
    for args in RUNS:
        with tempfile.TemporaryDirectory() as d:
            out = pathlib.Path(d) / "m.arrow"
            s = json.loads(subprocess.run([CLI, "quantize", src, "-o", out, "--json", "--quiet",
                                           *args], capture_output=True, text=True,
                                          check=True).stdout)
            back = pathlib.Path(d) / "m.safetensors"
            subprocess.run([CLI, "dequantize", out, "-o", back], check=True, capture_output=True)
            got = load_file(str(back))
            with pa.ipc.open_file(str(out)) as r:
                rows = [x for x in r.read_all().to_pylist() if x["scheme"] != "raw"]
            elements = sum(int(np.prod(x["shape"])) for x in rows)
            size = sum(len(x["quantized_data"]) + 4 * len(x["scales"]) + 4 * len(x["zero_points"])
                       for x in rows)
            sse = sum(float(((ref[x["layer_name"]].astype(np.float64)
                              - got[x["layer_name"]].astype(np.float64)) ** 2).sum())
                      for x in rows)
            print(f"| `{' '.join(args)}` | {8 * size / elements:.4f} | {sse:.1f} | "
                  f"{s['min_sqnr_db']:.2f} | {s['mean_cosine']:.4f} | {len(s['moved'])} | "
                  f"{s['seconds']:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
