"""arrowquant quantize --profile: the diffusion layer rules decide each tensor of the demo UNet
(kept, 8 bits, or the profile's bits and scheme), --bits-for and --keep override them, and bad
input is one line on stderr with no output file."""
import json
import subprocess

import pyarrow as pa
import pytest


@pytest.fixture(scope="module")
def unet(build_dir, tmp_path_factory):
    src = tmp_path_factory.mktemp("unet") / "unet.safetensors"
    subprocess.run([str(build_dir / "examples" / "gen_unet"), str(src), "--width", "32",
                    "--seed", "3"], check=True, capture_output=True)
    return src


def rows(path):
    with pa.memory_map(str(path)) as f:
        t = pa.ipc.open_file(f).read_all()
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    d = t.select(["layer_name", "bit_width", "scheme"]).to_pylist()
    return {r["layer_name"]: (r["bit_width"], r["scheme"]) for r in d}, meta


def test_local_profile_applies_the_unet_rules(aq, unet, tmp_path):
    out = tmp_path / "q.arrow"
    # --target-bpw 0: the rules alone, without the profile's budget (test_profile_budget.py).
    s = json.loads(aq("quantize", unet, "-o", out, "--profile", "local", "--json",
                      "--target-bpw", "0").stdout)
    r, meta = rows(out)
    assert meta["arrowquant.profile"] == "local"
    assert s["profile"] == "local"
    # Kept: norms and biases (raw, the source's 32 bits).
    for name in ["conv_norm_out.weight", "conv_norm_out.bias", "conv_in.bias",
                 "down_blocks.0.resnets.0.norm1.weight", "time_embedding.linear_1.bias"]:
        assert r[name][1] == "raw", name
    # 8 bits: the time embedding MLP, the first and the last layer.
    for name in ["time_embedding.linear_1.weight", "time_embedding.linear_2.weight",
                 "conv_in.weight", "conv_out.weight"]:
        assert r[name] == (8, "kquant"), name
    # The rest follows the profile: 4 bits kquant.
    for name in ["down_blocks.0.resnets.0.conv1.weight",
                 "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                 "up_blocks.1.resnets.0.conv2.weight"]:
        assert r[name] == (4, "kquant"), name
    # The summary counts what each rule decided, and the counts match the file.
    rules = s["rules"]
    assert sum(rules.values()) == s["tensors"] == len(r)
    assert rules["first_layer"] == 1 and rules["last_layer"] == 1
    assert rules["time_embedding"] == 2
    assert rules["profile"] == sum(1 for b, sc in r.values() if (b, sc) == (4, "kquant"))
    assert rules["bias"] + rules["norm"] == sum(1 for b, sc in r.values() if sc == "raw")
    text = aq("quantize", unet, "-o", tmp_path / "t.arrow", "--profile", "local",
              "--target-bpw", "0").stdout
    assert "profile local (4 bits, kquant)" in text
    assert f"rule         time_embedding  2 tensors" in text


def test_edge_and_cloud_profiles(aq, unet, tmp_path):
    for name, bits in [("edge", 2), ("cloud", 8)]:
        out = tmp_path / f"{name}.arrow"
        aq("quantize", unet, "-o", out, "--profile", name, "-q", "--target-bpw", "0")
        r, meta = rows(out)
        assert meta["arrowquant.profile"] == name
        assert r["down_blocks.0.resnets.0.conv1.weight"][0] == bits
        assert r["conv_in.weight"][0] == 8
        assert r["conv_norm_out.weight"][1] == "raw"


def test_bits_for_and_keep_override_the_rules(aq, unet, tmp_path):
    out = tmp_path / "o.arrow"
    s = json.loads(aq("quantize", unet, "-o", out, "--profile", "local", "--json",
                      "--target-bpw", "0", "--min-accuracy", "0",
                      "--bits-for", "down_blocks.0.*.weight=8",
                      "--bits-for", "conv_in.weight=2",
                      "--keep", "conv_out.weight").stdout)
    r, _ = rows(out)
    assert r["down_blocks.0.resnets.0.conv1.weight"] == (8, "kquant")
    assert r["down_blocks.0.resnets.0.norm1.weight"][0] == 8  # the override wins over "norm"
    assert r["conv_in.weight"] == (2, "kquant")
    assert r["conv_out.weight"][1] == "raw"
    assert r["down_blocks.1.resnets.0.conv1.weight"] == (4, "kquant")
    assert s["rules"]["override"] == sum(1 for n in r if n.startswith("down_blocks.0.")
                                         and n.endswith(".weight")) + 2


def test_bad_input(aq, unet, tmp_path):
    o = tmp_path / "x.arrow"
    aq.fails("quantize", unet, "-o", o, "--profile", "phone",
             expect="Unknown profile 'phone'", leaves_nothing_in=tmp_path)
    # The same pattern twice with different treatments.
    aq.fails("quantize", unet, "-o", o, "--profile", "local", "--bits-for", "conv_in.*=8",
             "--bits-for", "conv_in.*=2", expect="Contradictory overrides",
             leaves_nothing_in=tmp_path)
    # Two patterns that disagree about one tensor: found before anything is written.
    aq.fails("quantize", unet, "-o", o, "--profile", "local", "--bits-for", "conv_in.*=8",
             "--keep", "*.weight", expect="conv_in.weight", leaves_nothing_in=tmp_path)
    aq.fails("quantize", unet, "-o", o, "--profile", "local", "--bits-for", "conv_in.*=3",
             expect="conv_in.*=3", leaves_nothing_in=tmp_path)
    # --bits-for without --profile: the rules of the profile of --bits (edge at 2 bits).
    aq("quantize", unet, "-o", o, "--bits", "2", "--bits-for", "conv_in.*=8", "--quiet")
    aq("quantize", unet, "-o", tmp_path / "edge.arrow", "--profile", "edge", "--bits-for",
       "conv_in.*=8", "--quiet")
    import pyarrow.ipc as ipc
    mine, edge = (ipc.open_file(str(f)).read_all() for f in (o, tmp_path / "edge.arrow"))
    for col in ("layer_name", "quantized_data", "scales", "bit_width", "scheme"):
        assert mine.column(col).equals(edge.column(col)), col
    assert 8 in mine.column("bit_width").to_pylist() and 2 in mine.column("bit_width").to_pylist()
    o.unlink()
    (tmp_path / "edge.arrow").unlink()
    # Without --profile, --scheme, --group-size, --keep, a floor or a budget of its own, the
    # command applies the profile of --bits (4: local) as the Python diffusion mode does.
    aq("quantize", unet, "-o", o, "--quiet")
    aq("quantize", unet, "-o", tmp_path / "local.arrow", "--profile", "local", "--quiet")
    mine, local = (ipc.open_file(str(f)).read_all() for f in (o, tmp_path / "local.arrow"))
    for col in ("layer_name", "quantized_data", "scales", "bit_width", "scheme"):
        assert mine.column(col).equals(local.column(col)), col
    o.unlink()
    (tmp_path / "local.arrow").unlink()
    aq.fails("quantize", unet, "-o", o, "--profile", "local", "--bits", "2",
             expect="cannot be combined", leaves_nothing_in=tmp_path)


def test_pipeline_folder_rules_per_component(aq, tmp_path):
    """A diffusers folder: the UNet's and the VAE's tensors are judged by their own family."""
    diffusers = pytest.importorskip("diffusers")
    root = tmp_path / "pipe"
    diffusers.UNet2DModel(block_out_channels=(32, 64), norm_num_groups=8,
                          down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                          sample_size=8).save_pretrained(root / "unet")
    diffusers.AutoencoderKL(block_out_channels=(32,), latent_channels=4,
                            norm_num_groups=8).save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    out = tmp_path / "p.arrow"
    s = json.loads(aq("quantize", root, "-o", out, "--profile", "edge", "--json",
                      "--target-bpw", "0").stdout)
    r, meta = rows(out)
    assert meta["arrowquant.profile"] == "edge"
    assert r["unet/conv_in.weight"] == (8, "kquant")
    assert r["unet/conv_out.weight"] == (8, "kquant")
    assert r["vae/encoder.conv_in.weight"] == (8, "kquant")
    assert r["vae/quant_conv.weight"] == (8, "kquant")
    assert r["unet/down_blocks.0.resnets.0.conv1.weight"] == (2, "kquant")
    assert r["vae/encoder.down_blocks.0.resnets.0.conv1.weight"] == (2, "kquant")
    assert s["rules"]["latent"] >= 2 and sum(s["rules"].values()) == len(r)
