"""A diffusers folder written by diffusers itself is quantized, and our dequantized output is
loaded back by diffusers, whose forward pass stays close to the original's."""
import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")  # pinned in requirements-test.txt

from diffusers_unet import small_unet  # noqa: E402


def _forward(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        return model(x, timestep=torch.tensor([10, 500])).sample


@pytest.mark.parametrize("bits,min_cos", [(8, 0.9995), (4, 0.98)])
def test_unet_roundtrip_through_diffusers(aq, tmp_path, bits, min_cos):
    src = tmp_path / "unet"
    model = small_unet()
    model.save_pretrained(src)  # safetensors by default
    assert (src / "diffusion_pytorch_model.safetensors").exists()
    q = tmp_path / "unet.arrow"
    p = aq("quantize", src, "-o", q, "--bits", bits, "--min-elements", 1024, "--json")
    summary = json.loads(p.stdout)
    assert summary["quantized"] > 10 and summary["kept"] > 0
    out = tmp_path / "restored"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    aq("dequantize", q, "-o", out / "diffusion_pytorch_model.safetensors")
    restored = diffusers.UNet2DModel.from_pretrained(out).eval()
    a, b = _forward(model), _forward(restored)
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    rel = ((a - b).norm() / a.norm()).item()
    assert cos > min_cos, (cos, rel)
    # And the weights really changed (the test would pass trivially otherwise).
    assert torch.equal(model.conv_in.bias, restored.conv_in.bias)  # 1-D: kept
    assert not torch.equal(model.down_blocks[1].attentions[0].to_q.weight,
                           restored.down_blocks[1].attentions[0].to_q.weight)


def test_pipeline_folder_with_fp16_variant(aq, tmp_path):
    """A diffusers pipeline folder: model_index.json, a UNet saved as the fp16 variant only,
    a VAE, and a scheduler without weights."""
    root = tmp_path / "pipe"
    unet = small_unet()
    unet.half().save_pretrained(root / "unet", variant="fp16")
    vae = diffusers.AutoencoderKL(block_out_channels=(32,), latent_channels=4,
                                  norm_num_groups=8)
    vae.save_pretrained(root / "vae")
    diffusers.DDIMScheduler().save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DModel"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"]}))
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    info = json.loads(aq("inspect", root, "--json").stdout)
    names = [t["name"] for t in info["tensors"]]
    assert any(n.startswith("unet/") for n in names) and any(n.startswith("vae/") for n in names)
    assert {t["dtype"] for t in info["tensors"] if t["name"].startswith("unet/")} == {"F16"}
    q = tmp_path / "pipe.arrow"
    summary = json.loads(aq("quantize", root, "-o", q, "--json").stdout)
    assert summary["tensors"] == len(names)
    import pyarrow.ipc
    t = pyarrow.ipc.open_file(str(q)).read_all()
    comps = json.loads(t.schema.metadata[b"arrowquant.components"])
    assert comps == {"unet": "unet/diffusion_pytorch_model.fp16.safetensors",
                     "vae": "vae/diffusion_pytorch_model.safetensors"}
    assert set(t.column("source_dtype").to_pylist()) == {"F16", "F32"}


def test_pipeline_folder_back_to_diffusers(aq, tmp_path):
    """Quantize a pipeline folder, dequantize it into a folder of the same layout, and load
    each component back with diffusers."""
    root = tmp_path / "pipe"
    unet = small_unet(3)
    unet.save_pretrained(root / "unet")
    torch.manual_seed(4)
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2,
                                  norm_num_groups=8).eval()
    vae.save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "Pipeline", "unet": ["diffusers", "UNet2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    q = tmp_path / "pipe.arrow"
    aq("quantize", root, "-o", q, "--bits", "8", "--min-elements", 1024, "--quiet")
    out = tmp_path / "out"
    out.mkdir()
    aq("dequantize", q, "-o", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")) == [
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    for comp in ("unet", "vae"):
        shutil.copy(root / comp / "config.json", out / comp / "config.json")
    unet2 = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    vae2 = diffusers.AutoencoderKL.from_pretrained(out / "vae").eval()
    a, b = _forward(unet), _forward(unet2)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ya = vae(x).sample
        yb = vae2(x).sample
    assert torch.nn.functional.cosine_similarity(ya.flatten(), yb.flatten(), dim=0) > 0.999
    # Not a pipeline: a folder output is refused, and nothing is written.
    single = tmp_path / "single.arrow"
    aq("quantize", root / "unet", "-o", single, "--quiet")
    before = sorted(out.rglob("*"))
    aq.fails("dequantize", single, "-o", out, expect="not a diffusers pipeline")
    assert sorted(out.rglob("*")) == before
