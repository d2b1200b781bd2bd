"""The demo's generated checkpoint has the names and shapes of a real diffusers
UNet2DConditionModel (Stable Diffusion 1.x layout), which loads it and runs."""
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

diffusers = pytest.importorskip("diffusers")


def test_generated_unet_is_a_diffusers_unet(build_dir, aq, tmp_path):
    gen = build_dir / "examples" / "gen_unet"
    src = tmp_path / "unet.safetensors"
    subprocess.run([str(gen), str(src), "--width", "32", "--seed", "7"], check=True,
                   capture_output=True)
    ours = load_file(str(src))
    w = 32
    model = diffusers.UNet2DConditionModel(block_out_channels=(w, 2 * w, 4 * w, 4 * w),
                                           cross_attention_dim=768, attention_head_dim=8,
                                           norm_num_groups=32, sample_size=8)
    ref = model.state_dict()
    assert set(ours) == set(ref)
    for name, t in ref.items():
        assert tuple(ours[name].shape) == tuple(t.shape), name
    missing, unexpected = model.load_state_dict(ours, strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        out = model(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 3, 768))
    assert torch.isfinite(out.sample).all()
    # Deterministic: the same seed gives the same bytes.
    again = tmp_path / "again.safetensors"
    subprocess.run([str(gen), str(again), "--width", "32", "--seed", "7"], check=True,
                   capture_output=True)
    assert again.read_bytes() == src.read_bytes()
    # Plain 4-bit affine (without --scheme the command applies the layer rules of a profile).
    summary = json.loads(aq("quantize", src, "-o", tmp_path / "u.arrow", "--scheme", "affine",
                            "--json").stdout)
    assert summary["tensors"] == len(ref)
    assert 8 < summary["mean_sqnr_db"] < 20  # 4 bits on heavy tails and outlier channels
