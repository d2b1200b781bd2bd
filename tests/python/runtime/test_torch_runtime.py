"""The torch runtime (arrow_quant_v2.torch): model files run with their weights packed.

The torch dequantizer gives the C library's floats bit for bit for every scheme and bit width;
diffusers' own classes (UNet2DModel, UNet2DConditionModel, FluxTransformer2DModel), built on the
meta device and loaded packed, give the outputs of the same model loaded with the weights that
`arrowquant dequantize` restores; a DDPM pipeline runs on a packed UNet; devices, dtypes,
state_dict and torch.compile behave; a file that does not match the model is refused, naming
the tensor."""
import io
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")  # pinned in requirements-test.txt
diffusers = pytest.importorskip("diffusers")
from safetensors.torch import load_file, save_file  # noqa: E402

import arrow_quant_v2.torch as aqt  # noqa: E402
from arrow_quant_v2 import arrow_quant_v2 as ext  # noqa: E402
from diffusers_unet import small_unet  # noqa: E402

SCHEMES = ["affine", "affine_search", "kquant"]
BITS = [2, 4, 8]
CASES = [(s, b) for s in SCHEMES for b in BITS]
# The dequantizers also read kquant_rows (format version 1's row-by-row kquant layout).
DQ_CASES = CASES + [("kquant_rows", b) for b in BITS]


def _randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # random weights everywhere (fresh output layers are zero)
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return model.eval()


def _cond_unet_config():
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D",
                                                               "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                norm_num_groups=8, attention_head_dim=8)


def _flux_config():
    return dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                pooled_projection_dim=32, axes_dims_rope=(4, 4, 8))


def _unet2d_config():
    return dict(small_unet().config)


def _unet2d_run(m):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=g)
    return m(x, timestep=torch.tensor([10, 500])).sample


def _cond_run(m):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 5, 32, generator=g)
    return m(x, torch.tensor([3, 700]), encoder_hidden_states=ctx).sample


def _flux_run(m):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 16, generator=g)
    txt = torch.randn(1, 4, 32, generator=g)
    pooled = torch.randn(1, 32, generator=g)
    img_ids = torch.zeros(16, 3)
    img_ids[:, 1] = torch.arange(16) // 4
    img_ids[:, 2] = torch.arange(16) % 4
    return m(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled,
             timestep=torch.tensor([0.5]), img_ids=img_ids, txt_ids=torch.zeros(4, 3)).sample


MODELS = {
    "UNet2DModel": (diffusers.UNet2DModel, _unet2d_config, _unet2d_run),
    "UNet2DConditionModel": (diffusers.UNet2DConditionModel, _cond_unet_config, _cond_run),
    "FluxTransformer2DModel": (diffusers.FluxTransformer2DModel, _flux_config, _flux_run),
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, quantize):
    """model_files(kind, scheme, bits) -> (model file, original safetensors, config)."""
    d = tmp_path_factory.mktemp("models")
    cache = {}

    def get(kind, scheme, bits):
        cls, config, _ = MODELS[kind]
        src = d / f"{kind}.safetensors"
        if not src.exists():
            save_file(_randomize(cls(**config()), 5).state_dict(), str(src))
        key = (kind, scheme, bits)
        if key not in cache:
            out = d / f"{kind}-{scheme}-{bits}.arrow"
            summary = quantize(src, out, "--bits", bits, "--scheme", scheme,
                               "--min-elements", 256)
            assert summary["quantized"] >= 8, summary
            cache[key] = out
        return cache[key], src, config()

    return get


def _meta(cls, config):
    with torch.device("meta"):
        return cls(**config)


def _reference(cls, config, model_file, dequantize, tmp_path):
    """The same model loaded the ordinary way with the weights arrowquant dequantize restores."""
    st = dequantize(model_file, tmp_path / "restored.safetensors")
    ref = cls(**config)
    ref.load_state_dict(load_file(str(st)))
    return ref.eval()


def _packed_layers(m):
    return [x for x in m.modules() if isinstance(x, (aqt.PackedLinear, aqt.PackedConv2d))]


# ---------------------------------------------------------------------------------------------
# The torch dequantizer against the C library
# ---------------------------------------------------------------------------------------------

def _awkward_tensors():
    g = torch.Generator().manual_seed(3)
    t = {
        "tail_groups": torch.randn(7, 45, generator=g),            # short last group of a row
        "partial_super_blocks": torch.randn(3, 1100, generator=g),  # 2 super-blocks + 76
        "narrow": torch.randn(5, 7, 3, generator=g),                # cols < one sub-block
        "heavy_tails": torch.randn(16, 300, generator=g) ** 5,
        "one_d": torch.randn(700, generator=g),
        "wide_3d": torch.randn(2, 3, 700, generator=g),
    }
    c = torch.randn(6, 96, generator=g)
    c[1] = 0.25          # constant rows
    c[2] = -0.0
    c[3, :40] = 1e-39    # denormals
    c[4] *= 1e30         # huge values
    t["edges"] = c
    return t


@pytest.fixture(scope="module")
def awkward_rows(tmp_path_factory, quantize):
    d = tmp_path_factory.mktemp("awkward")
    src = d / "awkward.safetensors"
    save_file(_awkward_tensors(), str(src))
    rows = {}
    for scheme, bits in DQ_CASES:
        for group in ([32, 128] if not scheme.startswith("kquant") else [512]):
            out = d / f"{scheme}-{bits}-{group}.arrow"
            quantize(src, out, "--bits", bits, "--scheme", scheme, "--group-size", group,
                     "--min-elements", 1)
            got = [r for r in ext._model_rows(str(out)) if not r[3]]
            # Every tensor but the 1-D one, which the default rules keep.
            assert {r[0] for r in got} == set(_awkward_tensors()) - {"one_d"}, got
            rows[(scheme, bits, group)] = got
    return rows


def _bits(t):
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("scheme,bits", DQ_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_dequantizer_is_bit_identical_to_c(awkward_rows, scheme, bits, dtype):
    for (s, b, group), rows in awkward_rows.items():
        if (s, b) != (scheme, bits):
            continue
        for name, sch, _, _, bw, gs, shape, *_ in rows:
            assert (sch, bw) == (scheme, bits)
            q, sc, zp = aqt._row_tensors(rows[[r[0] for r in rows].index(name)])
            c = aqt._dequantize_c(q, sc, zp, sch, bw, gs, shape,
                                  torch.empty(shape, dtype=dtype), name)
            t = aqt.dequantize_torch(q, sc, zp, scheme=sch, bit_width=bw, group_size=gs,
                                     shape=shape, dtype=dtype)
            assert t.shape == c.shape and t.dtype == dtype
            diff = (_bits(t) != _bits(c)).nonzero()
            assert diff.numel() == 0, (name, group, diff[:5].tolist())


# Finite float32 values of every kind for scales, zero points, d and dmin: zeros of both signs,
# subnormals, the extremes of the range (whose products overflow to infinities, and whose
# differences of infinities are NaN), and ordinary values.
_SPECIAL_PARAMS = [0x00000000, 0x80000000, 0x00000001, 0x80400000, 0x00800000, 0x3A83126F,
                   0xC0200000, 0x3C4985F0, 0x7149F2CA, 0x7F7FFFFF, 0xFF7FFFFF, 0x71800000,
                   0x40E00000, 0x3F800000]


def _adversarial(row, seed):
    """The row's buffers (same sizes) with random bytes as codes and sub-block parameters,
    and scales and zero points drawn from _SPECIAL_PARAMS."""
    g = torch.Generator().manual_seed(seed)
    q, sc, zp = aqt._row_tensors(row)
    special = torch.tensor(_SPECIAL_PARAMS, dtype=torch.int64).to(torch.int32)
    pick = lambda n: special[torch.randint(len(special), (n,), generator=g)].view(torch.float32)
    return (torch.randint(256, q.shape, generator=g, dtype=torch.int32).to(torch.uint8),
            pick(sc.numel()), pick(zp.numel()))


def _same_floats(t, c):
    """Bit for bit, except that any NaN equals any NaN (a NaN's sign and payload come from the
    hardware: x86 and CUDA make different ones)."""
    both_nan = torch.isnan(t.float()) & torch.isnan(c.float())
    return ((_bits(t) != _bits(c)) & ~both_nan).nonzero()


@pytest.mark.parametrize("scheme,bits", DQ_CASES)
def test_torch_dequantizer_matches_c_on_any_bits(awkward_rows, scheme, bits):
    """Random codes and sub-block parameters with extreme scales (infinite and NaN outputs
    included) give the C library's floats too."""
    for (s, b, group), rows in awkward_rows.items():
        if (s, b) != (scheme, bits):
            continue
        for k, row in enumerate(rows):
            name, sch, _, _, bw, gs, shape = row[:7]
            q, sc, zp = _adversarial(row, 100 * bits + k)
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                c = aqt._dequantize_c(q, sc, zp, sch, bw, gs, shape,
                                      torch.empty(shape, dtype=dtype), name)
                t = aqt.dequantize_torch(q, sc, zp, scheme=sch, bit_width=bw, group_size=gs,
                                         shape=shape, dtype=dtype)
                diff = _same_floats(t, c)
                assert diff.numel() == 0, (name, group, dtype, diff[:5].tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("scheme,bits", DQ_CASES)
def test_cuda_dequantizer_is_bit_identical_to_c(awkward_rows, scheme, bits):
    for (s, b, _), rows in awkward_rows.items():
        if (s, b) != (scheme, bits):
            continue
        for k, row in enumerate(rows):
            name, sch, _, _, bw, gs, shape = row[:7]
            for q, sc, zp in (aqt._row_tensors(row), _adversarial(row, 100 * bits + k)):
                for dtype in (torch.float32, torch.float16, torch.bfloat16):
                    c = aqt.dequantize(q, sc, zp, scheme=sch, bit_width=bw, group_size=gs,
                                       shape=shape, dtype=dtype)
                    g = aqt.dequantize(q.cuda(), sc.cuda(), zp.cuda(), scheme=sch,
                                       bit_width=bw, group_size=gs, shape=shape,
                                       dtype=dtype).cpu()
                    diff = _same_floats(g, c)
                    assert diff.numel() == 0, (name, dtype, diff[:5].tolist())


def test_c_dequantizer_checks_the_buffers(awkward_rows):
    name, sch, _, _, bw, gs, shape, *_ = awkward_rows[("affine", 4, 32)][0]
    q, sc, zp = aqt._row_tensors(awkward_rows[("affine", 4, 32)][0])
    with pytest.raises(ValueError, match=f"Layer '{name}'"):
        aqt._dequantize_c(q[:-1], sc, zp, sch, bw, gs, shape, torch.empty(shape), name)
    with pytest.raises(ValueError, match="output holds"):
        aqt._dequantize_c(q, sc, zp, sch, bw, gs, shape, torch.empty(1), name)
    with pytest.raises(ValueError, match="expected"):
        aqt.dequantize_torch(q[:-1], sc, zp, scheme=sch, bit_width=bw, group_size=gs,
                             shape=shape)


# ---------------------------------------------------------------------------------------------
# diffusers models, packed, against the same models with dequantized weights
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("scheme,bits", CASES)
def test_packed_model_matches_dequantized_model(model_files, dequantize, tmp_path, monkeypatch,
                                                kind, scheme, bits):
    cls, _, run = MODELS[kind]
    f, _, config = model_files(kind, scheme, bits)
    ref = _reference(cls, config, f, dequantize, tmp_path)
    packed = aqt.load_quantized(_meta(cls, config), f)
    layers = _packed_layers(packed)
    assert len(layers) >= 8
    assert {(x.scheme, x.bit_width) for x in layers} == {(scheme, bits)}
    assert not any(p.is_meta for p in packed.parameters())
    # No full-size weight in the packed layers: codes, scales and zero points only.
    assert all(set(dict(x.named_buffers(recurse=False))) == {"qdata", "scales", "zero_points"}
               and set(dict(x.named_parameters(recurse=False))) <= {"bias"} for x in layers)
    with torch.no_grad():
        want = run(ref)
        got = run(packed)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        monkeypatch.setattr(aqt, "CPU_DEQUANTIZER", "torch")  # the device path, on the CPU
        torch.testing.assert_close(run(packed), want, rtol=1e-5, atol=1e-6)


def test_ddpm_pipeline_runs_packed(tmp_path, quantize, dequantize):
    """A pipeline folder is quantized into one model file; its UNet component runs a DDPM
    pipeline, which gives the images of the same pipeline with dequantized weights."""
    root = tmp_path / "pipe"
    unet = small_unet(2)
    unet.save_pretrained(root / "unet")
    sched = diffusers.DDPMScheduler(num_train_timesteps=50)
    sched.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    f = tmp_path / "pipe.arrow"
    quantize(root, f, "--bits", 4, "--min-elements", 256)

    config = diffusers.UNet2DModel.load_config(root / "unet")
    with torch.device("meta"):
        meta = diffusers.UNet2DModel.from_config(config)
    with pytest.raises(ValueError, match="component"):
        aqt.load_quantized(meta, f)
    with pytest.raises(ValueError, match="no component 'vae'"):
        aqt.load_quantized(meta, f, component="vae")
    packed = aqt.load_quantized(meta, f, component="unet").eval()
    assert _packed_layers(packed)

    (tmp_path / "restored").mkdir()
    out = dequantize(f, tmp_path / "restored")
    ref = diffusers.UNet2DModel.from_config(config)
    ref.load_state_dict(load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors")))
    ref.eval()

    def images(u):
        pipe = diffusers.DDPMPipeline(unet=u, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=2, num_inference_steps=3, generator=torch.manual_seed(0),
                    output_type="np").images

    a, b = images(packed), images(ref)
    assert a.shape == (2, 16, 16, 3)
    assert abs(a - b).max() < 1e-4


# ---------------------------------------------------------------------------------------------
# Devices, dtypes, state_dict, torch.compile
# ---------------------------------------------------------------------------------------------

def test_dtype_follows_to_and_packed_buffers_stay(model_files, dequantize, tmp_path):
    f, _, config = model_files("UNet2DModel", "kquant", 4)
    packed = aqt.load_quantized(_meta(diffusers.UNet2DModel, config), f)
    ref = _reference(diffusers.UNet2DModel, config, f, dequantize, tmp_path)
    packed.to(torch.bfloat16)
    ref.to(torch.bfloat16)
    for x in _packed_layers(packed):
        assert x.weight_dtype == torch.bfloat16
        assert x.qdata.dtype == torch.uint8 and x.scales.dtype == torch.float32
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 16, 16, generator=g).to(torch.bfloat16)
        t = torch.tensor([10, 500])
        # bf16 weights from float32 by rounding to nearest even: the model .to(bf16) made.
        torch.testing.assert_close(packed(x, t).sample, ref(x, t).sample)
    packed.float()
    assert all(x.weight_dtype == torch.float32 for x in _packed_layers(packed))


def test_model_built_in_bf16_on_meta(model_files, dequantize, tmp_path):
    f, _, config = model_files("FluxTransformer2DModel", "affine", 4)
    with torch.device("meta"):
        meta = diffusers.FluxTransformer2DModel(**config).to(torch.bfloat16)
    packed = aqt.load_quantized(meta, f)
    assert {p.dtype for p in packed.parameters()} == {torch.bfloat16}
    layer = _packed_layers(packed)[0]
    w = layer.weight
    assert w.dtype == torch.bfloat16
    ref = load_file(str(dequantize(f, tmp_path / "r.safetensors")))[layer.layer_name]
    assert torch.equal(w, ref.to(torch.bfloat16))


def test_state_dict_round_trip(model_files):
    """state_dict holds the packed buffers and their description; it loads back into a model
    packed from another file (other bits, other scheme), which then runs like the first."""
    f4, _, config = model_files("UNet2DConditionModel", "affine", 4)
    f8, _, _ = model_files("UNet2DConditionModel", "kquant", 8)
    a = aqt.load_quantized(_meta(diffusers.UNet2DConditionModel, config), f4)
    b = aqt.load_quantized(_meta(diffusers.UNet2DConditionModel, config), f8)
    sd = a.state_dict()
    key = next(k for k in sd if k.endswith(".qdata"))
    assert sd[key].dtype == torch.uint8
    assert sd[key[:-len("qdata")] + "_extra_state"]["bit_width"] == 4
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    with torch.no_grad():
        before = _cond_run(b)
        b.load_state_dict(torch.load(buf, weights_only=False))
        assert {(x.scheme, x.bit_width) for x in _packed_layers(b)} == {("affine", 4)}
        after = _cond_run(b)
        assert not torch.equal(before, after)
        assert torch.equal(after, _cond_run(a))


def test_torch_compile(tmp_path, quantize):
    """A plain torch module named like the file's tensors; compiled whole (fullgraph), the
    dequantization is one opaque operator."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Flatten(), torch.nn.Linear(32 * 36, 64)).eval()
    src = tmp_path / "net.safetensors"
    save_file(net.state_dict(), str(src))
    f = tmp_path / "net.arrow"
    quantize(src, f, "--bits", 4, "--scheme", "kquant", "--min-elements", 256)
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.SiLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(32 * 36, 64))
    packed = aqt.load_quantized(meta, f).eval()
    assert len(_packed_layers(packed)) == 2
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        want = packed(x)
        got = torch.compile(packed, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def test_file_of_another_model_names_the_tensor(model_files):
    f, _, _ = model_files("UNet2DModel", "affine", 4)
    config = _unet2d_config()
    config["block_out_channels"] = (32, 48)
    with pytest.raises(ValueError, match=r"Tensor '[^']+': model file .* holds shape"):
        aqt.load_quantized(_meta(diffusers.UNet2DModel, config), f)
    f2, _, _ = model_files("FluxTransformer2DModel", "affine", 4)
    with pytest.raises(ValueError, match=r"Tensor '[^']+' of the model is missing"):
        aqt.load_quantized(_meta(diffusers.UNet2DModel, _unet2d_config()), f2)


def test_missing_and_extra_tensor(tmp_path, quantize):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    sd = net.state_dict()
    del sd["1.bias"]
    save_file(sd, str(tmp_path / "a.safetensors"))
    quantize(tmp_path / "a.safetensors", tmp_path / "a.arrow", "--min-elements", 256)
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    with pytest.raises(ValueError, match=r"Tensor '1.bias' of the model is missing in model file"):
        aqt.load_quantized(meta, tmp_path / "a.arrow")
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8, bias=False),
                                   torch.nn.Identity())
    packed = aqt.load_quantized(meta, tmp_path / "a.arrow")
    assert isinstance(packed[0], aqt.PackedLinear)
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Linear(64, 64))
    with pytest.raises(ValueError, match=r"Tensor '1.weight' of model file .* has no place"):
        aqt.load_quantized(meta, tmp_path / "a.arrow")
    with pytest.raises(ValueError, match="holds a single model"):
        aqt.load_quantized(meta, tmp_path / "a.arrow", component="unet")
    with pytest.raises(OSError):
        aqt.load_quantized(meta, tmp_path / "absent.arrow")


def test_import_without_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import arrow_quant_v2\n"
            "import arrow_quant_v2.torch\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and "pip install torch" in last, p.stderr


def test_one_shared_buffer_and_gradients(model_files, dequantize, tmp_path):
    """Without grad, every packed layer dequantizes into one buffer of the largest layer's
    size; with an input that needs grad, into fresh tensors, so the input's gradient is the
    dequantized model's."""
    import math
    f, _, config = model_files("UNet2DModel", "affine", 4)
    packed = aqt.load_quantized(_meta(diffusers.UNet2DModel, config), f)
    layers = _packed_layers(packed)
    assert len({id(x._workspace) for x in layers}) == 1
    with torch.no_grad():
        _unet2d_run(packed)
    bufs = layers[0]._workspace._bufs
    assert list(bufs) == [(torch.device("cpu"), torch.float32)]
    assert next(iter(bufs.values())).numel() == max(math.prod(x.weight_shape) for x in layers)

    ref = _reference(diffusers.UNet2DModel, config, f, dequantize, tmp_path)
    grads = []
    for m in (packed, ref):
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4),
                        requires_grad=True)
        m(x, timestep=torch.tensor([10])).sample.square().sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Packed buffers are the reader's memory, not copies
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_rows_held_in_place_equal_their_copies(tmp_path, quantize, compression):
    src = tmp_path / "m.safetensors"
    save_file(_randomize(small_unet(), 9).state_dict(), str(src))
    out = tmp_path / "m.arrow"
    quantize(src, out, "--bits", 4, "--min-elements", 256, "--compression", compression)
    before = out.read_bytes()
    copies = ext._model_rows(str(out))
    held = ext._model_rows(str(out), hold=True)
    assert len(copies) == len(held)
    n = 0
    for c, h in zip(copies, held):
        assert c[:7] == h[:7]
        if c[3]:
            assert len(h) == 10 and all(type(h[k]) is bytearray for k in (7, 8, 9))
        else:
            n += 1
            assert len(h) == 11 and type(h[7]).__name__ == "_HeldBuffer"
            ext._hold_check(h[10])
        assert [bytes(h[k]) for k in (7, 8, 9)] == [bytes(c[k]) for k in (7, 8, 9)]
    assert n >= 8
    # The memory outlives the list, the reader and the other rows; it is writable, and writes
    # stay in the process (copy-on-write for a mapped file).
    q = next(h for h in held if not h[3])
    want = bytes(q[7])
    t = torch.frombuffer(q[7], dtype=torch.uint8)
    del held, q
    import gc
    gc.collect()
    assert bytes(t.numpy()) == want
    t[:16] = 0
    assert out.read_bytes() == before
    again = next(r for r in ext._model_rows(str(out)) if not r[3])
    assert bytes(again[7]) == want


def test_packed_model_from_an_uncompressed_file(model_files, tmp_path, quantize):
    """Packed from the file's mapping: the same outputs as from a zstd file, state_dict loads
    into it, moves let go of the file, and a file truncated while in use fails the forward
    (its pages would read as zeros) instead of giving other outputs."""
    cls, config, run = MODELS["UNet2DModel"]
    _, src, config = model_files("UNet2DModel", "affine", 4)
    files = {}
    for c in ("zstd", "none"):
        files[c] = tmp_path / f"m-{c}.arrow"
        quantize(src, files[c], "--bits", 4, "--min-elements", 256, "--compression", c)
    with torch.no_grad():
        want = run(aqt.load_quantized(_meta(cls, config), files["zstd"]))
        m = aqt.load_quantized(_meta(cls, config), files["none"])
        assert all(x._file_check is not None for x in _packed_layers(m))
        assert torch.equal(run(m), want)
        # Loading a state dict writes into fresh buffers: the file's memory goes.
        m2 = aqt.load_quantized(_meta(cls, config), files["none"])
        m2.load_state_dict(aqt.load_quantized(_meta(cls, config), files["zstd"]).state_dict())
        assert all(x._file_check is None for x in _packed_layers(m2))
        assert torch.equal(run(m2), want)
        import copy
        assert torch.equal(run(copy.deepcopy(m)), want)
        blob = io.BytesIO()
        torch.save(m, blob)
        blob.seek(0)
        assert torch.equal(run(torch.load(blob, weights_only=False)), want)
    # Truncated while the model lives: the next forward fails before it reads the lost pages.
    # In a child process (a regression would kill it), twice: with the library's SIGBUS guard
    # as the process's handler, and with faulthandler's installed after loading (as test
    # runners and frameworks do), which does not pass faults on.
    for handler in ("guard", "faulthandler"):
        f = tmp_path / f"m-none-{handler}.arrow"
        f.write_bytes(files["none"].read_bytes())
        p = subprocess.run([sys.executable, "-c", _TRUNCATED, str(f), handler],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, (handler, p.returncode, p.stdout, p.stderr)
        assert f"{f}: the file changed while in use (truncated by another process?)" \
            in p.stdout, (handler, p.stdout)


_TRUNCATED = """
import os, sys, torch
import arrow_quant_v2.torch as aqt
sys.path.insert(0, %r)
from diffusers_unet import small_unet
with torch.device("meta"):
    m = aqt.load_quantized(small_unet(), sys.argv[1])
if sys.argv[2] == "faulthandler":
    import faulthandler
    faulthandler.enable()
os.truncate(sys.argv[1], os.path.getsize(sys.argv[1]) // 8)
try:
    with torch.no_grad():
        m(torch.zeros(1, 3, 16, 16), 10)
    print("no error")
except OSError as e:
    print(e)
""" % str(__import__("pathlib").Path(__file__).resolve().parents[1])
