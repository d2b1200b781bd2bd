"""diffusers' GGUF path against our GGUF files: its torch dequantization of our blocks gives
our floats bit for bit (when it computes in float32), and a tiny FluxTransformer2DModel loads
from our GGUF file through GGUFQuantizationConfig, offline, and runs a forward."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")
import arrow_quant_v2 as aq  # noqa: E402
from arrow_quant_v2 import gguf as aqg  # noqa: E402
from diffusers.quantizers.gguf import utils as dgu  # noqa: E402

GT = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q5_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K",
                                   "BF16"])
def test_diffusers_dequantizes_our_blocks_to_our_floats(qtype):
    t = GT[qtype]
    block, size = gguf.GGML_QUANT_SIZES[t]
    x = np.random.default_rng(4).normal(0, 0.02, 64 * 256).astype(np.float32)
    x[::97] *= 30.0  # some outliers
    data = aqg.encode(x, qtype)
    blocks = torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(-1, size)
    theirs = dgu.dequantize_functions[t](blocks, block, size, dtype=torch.float32).reshape(-1)
    ours = aqg.decode(data, qtype, x.size)
    assert np.array_equal(theirs.numpy().view(np.uint32), ours.view(np.uint32))


def tiny_flux(seed=0):
    torch.manual_seed(seed)
    m = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=2, joint_attention_dim=256, pooled_projection_dim=256,
        axes_dims_rope=[16, 56, 56])
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0"])
def test_diffusers_loads_our_gguf_and_runs(tmp_path, qtype):
    from safetensors.torch import load_file

    m = tiny_flux()
    m.save_pretrained(tmp_path / "model")
    src = tmp_path / "model" / "diffusion_pytorch_model.safetensors"
    res = aq.quantize_gguf(src, tmp_path / "model.gguf", qtype)
    assert res.summary["types"][qtype] >= 20
    q = diffusers.FluxTransformer2DModel.from_single_file(
        str(tmp_path / "model.gguf"),
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch.float32),
        config=str(tmp_path / "model"), local_files_only=True, torch_dtype=torch.float32,
        low_cpu_mem_usage=True)
    assert isinstance(q.transformer_blocks[0].attn.to_q, dgu.GGUFLinear)
    inputs = dict(hidden_states=torch.randn(1, 16, 8), encoder_hidden_states=torch.randn(1, 8, 256),
                  pooled_projections=torch.randn(1, 256), timestep=torch.tensor([0.5]),
                  img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3), return_dict=False)
    aq.dequantize_gguf(tmp_path / "model.gguf", tmp_path / "restored.safetensors")
    with torch.no_grad():
        y = q(**inputs)[0]
        m.load_state_dict(load_file(str(tmp_path / "restored.safetensors")))
        y_ours = m(**inputs)[0]
    assert y.shape == (1, 16, 8)
    assert torch.isfinite(y).all()
    # diffusers' CPU path dequantizes in float16 before its float32 matmul; ours is float32.
    assert float((y - y_ours).abs().max()) <= 1e-2 * float(y_ours.abs().max())
