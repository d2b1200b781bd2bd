"""quantize_diffusion_model and validate_quality (python/arrow_quant_v2/model.py) over the trained
DDPM fixture and a diffusers pipeline folder: every profile, files that load back into
diffusers, agreement with arrowquant validate --json, overrides, calibration, progress and
cancellation, and the errors of bad inputs (which leave no output file)."""
import json
import math
import os
import signal

import numpy as np
import pytest

import arrow_quant_v2 as aq
from arrow_quant_v2 import DiffusionQuantConfig, QuantizationError

from aqmodel_helpers import restore_pipeline, restore_unet, small_unet

pa = pytest.importorskip("pyarrow")
import pyarrow.ipc  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

# Cosine similarity of the restored DDPM's noise prediction with the original's, per profile
# (measured 0.9957, 0.99974, 0.9999974 at the worst of three timesteps).
FORWARD_FLOOR = {"edge": 0.95, "local": 0.998, "cloud": 0.99995}


def _noise_cosines(a, b):
    import torch

    g = torch.Generator().manual_seed(3)
    c, s = a.config.in_channels, a.config.sample_size
    x = torch.randn(4, c, s, s, generator=g)
    with torch.no_grad():
        return [torch.nn.functional.cosine_similarity(
            a(x, t).sample.flatten(), b(x, t).sample.flatten(), dim=0).item()
            for t in (10, 500, 900)]


def _rows(path):
    return {r["layer_name"]: r for r in pa.ipc.open_file(str(path)).read_all().select(
        ["layer_name", "bit_width", "scheme"]).to_pylist()}


def _agrees_with_cli(cli, report, original, quantized, *extra, rc=0):
    j = cli.json("validate", original, quantized, *extra, rc=rc)
    assert j["passed"] == report.passed
    assert tuple(j["failing"]) == report.failing
    assert j["min_cosine"] == report.min_cosine
    assert [t["name"] for t in j["tensors"]] == [x.name for x in report.layers]
    for t, x in zip(j["tensors"], report.layers):
        assert t["status"] == x.status and t["passed"] == x.passed
        if x.cosine is not None:
            assert t["cosine"] == x.cosine  # both printed exactly (%.17g, repr)
            sq = t["sqnr_db"]
            assert (sq == "inf" and math.isinf(x.sqnr_db)) or sq == x.sqnr_db
    return j


def _no_output(folder, before):
    assert sorted(os.listdir(folder)) == sorted(before)


@pytest.fixture(scope="module")
def ddpm_model(ddpm):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.UNet2DModel.from_pretrained(ddpm).float().eval()


@pytest.mark.torch
@pytest.mark.parametrize("profile", ["edge", "local", "cloud"])
def test_each_profile_loads_back_and_validates(cli, ddpm, ddpm_model, tmp_path, profile):
    q = tmp_path / f"{profile}.arrow"
    r = aq.quantize_diffusion_model(ddpm, q, profile)
    assert q.exists() and r.output_path == str(q)
    assert r.config == DiffusionQuantConfig.from_profile(profile)
    s = r.summary
    assert s["tensors"] == len(r.tensors) == len(load_file(str(ddpm / "diffusion_pytorch_model"
                                                               ".safetensors")))
    assert s["quantized"] + s["kept"] == s["tensors"] and s["quantized"] > 40
    # The same bytes as the command's --profile run (its floor and its own-size budget).
    c = tmp_path / f"{profile}_cli.arrow"
    cli("quantize", ddpm, "-o", c, "--profile", profile, "--quiet")
    assert q.read_bytes() == c.read_bytes()
    bits = {"edge": 2, "local": 4, "cloud": 8}[profile]
    assert bits < r.budget_bits_per_weight < bits + 1
    assert r.bits_per_weight == pytest.approx(8 * s["bytes_out"] / s["params"])
    # Every tensor: a rule; quantized ones carry bits, scheme and quality.
    rows = _rows(q)
    for t in r.tensors:
        assert t.rule is not None
        assert rows[t.name]["bit_width"] == (t.bit_width if not t.kept else
                                             rows[t.name]["bit_width"])
        if t.kept:
            assert rows[t.name]["scheme"] == "raw" and t.bit_width is None
        else:
            assert t.bit_width in (2, 4, 8)
    # The floor is met but where the model's size leaves a tensor below it (at most a few);
    # the file records the lowest cosine then, so that validate holds it to what it has.
    below = [t.cosine for t in r.tensors if not t.kept and t.cosine < r.config.min_cosine]
    assert len(below) <= 2, below
    floor = min([r.config.min_cosine] + below)
    with pytest.raises(AttributeError):
        r.summary = {}
    with pytest.raises(TypeError):
        r.summary["tensors"] = 0
    # The file loads back into diffusers and denoises like the original.
    restored = restore_unet(cli, q, ddpm, tmp_path / "restored")
    assert min(_noise_cosines(ddpm_model, restored)) > FORWARD_FLOOR[profile]
    # validate_quality holds the file to its recorded floor, as arrowquant validate does.
    v = aq.validate_quality(ddpm, q)
    assert v.passed and v.failing == () and floor - 1e-6 <= v.min_cosine <= floor
    assert v.floor_source == "file"
    assert len(v.layers) == s["tensors"]
    _agrees_with_cli(cli, v, ddpm, q)


def test_budgets_and_scopes(ddpm, tmp_path):
    r = aq.quantize_diffusion_model(ddpm, tmp_path / "b.arrow",
                                    DiffusionQuantConfig("local", target_bpw=3.5, min_cosine=0))
    assert 3.0 < r.budget_bits_per_weight <= 3.5
    assert {t.bit_width for t in r.tensors if t.rule == "profile"} >= {2, 4}
    m = aq.quantize_diffusion_model(
        ddpm, tmp_path / "m.arrow",
        DiffusionQuantConfig("local", target_bpw=5.0, min_cosine=0, budget_scope="model"))
    assert m.config.budget_scope == "model"
    assert m.budget_bits_per_weight == m.bits_per_weight <= 5.0
    # The profile's figure given explicitly is a strict budget over the profile's tensors;
    # left out, it is the default mode's size over every tensor of two or more dimensions,
    # the rules' tensors included (docs/pipeline.md).
    d = aq.quantize_diffusion_model(ddpm, tmp_path / "d.arrow",
                                    DiffusionQuantConfig("local", min_cosine=0))
    g = aq.quantize_diffusion_model(ddpm, tmp_path / "g.arrow",
                                    DiffusionQuantConfig("local", min_cosine=0, target_bpw=4.5))
    assert 4.4 < d.budget_bits_per_weight <= 4.5
    assert g.budget_bits_per_weight <= 4.5
    with pytest.raises(QuantizationError, match="budget_scope"):
        DiffusionQuantConfig("local", budget_scope="everything")
    before = os.listdir(tmp_path)
    with pytest.raises(QuantizationError):  # below the smallest options of the model
        aq.quantize_diffusion_model(
            ddpm, tmp_path / "x.arrow",
            DiffusionQuantConfig("edge", target_bpw=2.0, budget_scope="model"))
    _no_output(tmp_path, before)


@pytest.mark.torch
def test_diffusers_pipeline_folder(cli, pipeline_folder, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")  # noqa: F841
    q = tmp_path / "pipe.arrow"
    r = aq.quantize_diffusion_model(pipeline_folder, q)  # config None: the local profile
    assert r.config.profile == "local"
    assert all(t.name.startswith("unet/") for t in r.tensors)
    rules = {t.rule for t in r.tensors}
    assert {"profile", "bias", "norm"} <= rules
    pipe = restore_pipeline(cli, q, pipeline_folder, tmp_path / "restored")
    orig = diffusers.DDPMPipeline.from_pretrained(pipeline_folder)
    assert min(_noise_cosines(orig.unet.eval(), pipe.unet.eval())) > 0.99
    v = aq.validate_quality(pipeline_folder, q)
    assert v.passed and v.layers[0].name.startswith("unet/")
    _agrees_with_cli(cli, v, pipeline_folder, q)
    # The dequantized folder validates as well (no recorded floor: the local profile's), but
    # for the tensors the model's size left below that floor.
    below = {t.name for t in r.tensors if not t.kept and t.cosine < 0.99}
    v2 = aq.validate_quality(pipeline_folder, tmp_path / "restored")
    assert set(v2.failing) == below and v2.floor_source == "default" and v2.min_cosine == 0.99
    _agrees_with_cli(cli, v2, pipeline_folder, tmp_path / "restored", rc=1 if below else 0)


@pytest.mark.torch
def test_single_file_and_sharded_checkpoint(cli, ddpm, tmp_path):
    single = ddpm / "diffusion_pytorch_model.safetensors"
    r1 = aq.quantize_diffusion_model(single, tmp_path / "single.arrow", "local")
    r2 = aq.quantize_diffusion_model(ddpm, tmp_path / "folder.arrow", "local")
    assert (tmp_path / "single.arrow").read_bytes() == (tmp_path / "folder.arrow").read_bytes()
    assert r1.summary == r2.summary
    assert aq.validate_quality(single, tmp_path / "folder.arrow").passed
    # A sharded checkpoint written by diffusers: the index, or its folder.
    sharded = tmp_path / "sharded"
    small_unet().save_pretrained(sharded, max_shard_size="200KB")
    index = sharded / "diffusion_pytorch_model.safetensors.index.json"
    assert index.exists() and len(list(sharded.glob("*.safetensors"))) > 2
    q = tmp_path / "sharded.arrow"
    r = aq.quantize_diffusion_model(index, q, "cloud")
    assert r.summary["tensors"] == len(json.loads(index.read_text())["weight_map"])
    v = aq.validate_quality(sharded, q)
    assert v.passed and v.floor_source == "file"
    _agrees_with_cli(cli, v, index, q)


def test_overrides_and_keep_change_bits(ddpm, tmp_path):
    base = aq.quantize_diffusion_model(ddpm, tmp_path / "base.arrow", "local")
    cfg = DiffusionQuantConfig.from_profile(
        "local", keep=["*attentions*"], bits_for={"down_blocks.0.*": 8})
    r = aq.quantize_diffusion_model(ddpm, tmp_path / "over.arrow", cfg)
    by = {t.name: t for t in r.tensors}
    was = {t.name: t for t in base.tensors}
    att = [n for n in by if "attentions" in n and n.endswith(".weight") and
           not was[n].kept]
    down0 = [n for n in by if n.startswith("down_blocks.0.") and not was[n].kept and
             was[n].bit_width != 8]
    assert att and down0
    for n in att:
        assert by[n].kept and by[n].rule == "override"
    for n in down0:
        assert by[n].bit_width == 8 and by[n].rule == "override"
    rows = _rows(tmp_path / "over.arrow")
    assert all(rows[n]["scheme"] == "raw" for n in att)
    assert all(rows[n]["bit_width"] == 8 for n in down0)
    # Overrides are counted within the model's size: the other tensors take fewer bits.
    assert r.budget_bits_per_weight <= 4.5 and base.budget_bits_per_weight <= 4.5
    assert sum(by[n].bytes for n in by if n not in att and n not in down0) < \
        sum(was[n].bytes for n in was if n not in att and n not in down0)


def _layers(ddpm):
    """(layer, input channels) of every Linear and convolution of the DDPM, from its file."""
    out = []
    for name, v in load_file(str(ddpm / "diffusion_pytorch_model.safetensors")).items():
        if name.endswith(".weight") and v.ndim >= 2:
            out.append((name[:-len(".weight")], int(v.shape[1])))
    return out


def _table(rows, groups=2, meta=True):
    names, gs, ms = zip(*rows) if rows else ((), (), ())
    schema = pa.schema([("layer_name", pa.string()), ("timestep_group", pa.int64()),
                        ("mean_square", pa.list_(pa.float32()))],
                       metadata={"arrowquant.timestep_groups": str(groups)} if meta else None)
    return pa.table([pa.array(names, pa.string()), pa.array(gs, pa.int64()),
                     pa.array([list(map(float, m)) for m in ms], pa.list_(pa.float32()))],
                    schema=schema)


def _synthetic(ddpm, groups=2, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for layer, ch in _layers(ddpm):
        for g in range(groups):
            rows.append((layer, g, rng.lognormal(0.0, 2.0, ch)))
    return _table(rows, groups)


@pytest.mark.torch
def test_calibration_changes_bytes(ddpm, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")  # noqa: F841
    plain = tmp_path / "plain.arrow"
    aq.quantize_diffusion_model(ddpm, plain, "local")
    table = _synthetic(ddpm)
    a = tmp_path / "calib_table.arrow"
    r = aq.quantize_diffusion_model(ddpm, a, "local", calibration=table)
    assert a.read_bytes() != plain.read_bytes()
    layers = r.calibration_layers
    assert len(layers) == len(_layers(ddpm)) and layers[0].groups == 2
    top = r.most_varying_layers(5)
    assert len(top) == 5
    assert [x.shape_variation for x in top] == sorted((x.shape_variation for x in layers),
                                                      reverse=True)[:5]
    # The same table from an Arrow IPC file gives the same bytes.
    ipc = tmp_path / "calib.arrow"
    with pa.ipc.new_file(str(ipc), table.schema) as w:
        w.write_table(table)
    b = tmp_path / "calib_file.arrow"
    aq.quantize_diffusion_model(ddpm, b, "local", calibration=ipc)
    assert b.read_bytes() == a.read_bytes()
    # And a CalibrationResult from calibrate() on the model itself.
    model = diffusers.UNet2DModel.from_pretrained(ddpm).float().eval()
    cal = aq.calibrate(model, 2, scheduler=diffusers.DDPMScheduler.from_pretrained(ddpm),
                       num_steps=4, groups=2, generator=torch.Generator().manual_seed(0))
    c = tmp_path / "calib_result.arrow"
    rc = aq.quantize_diffusion_model(ddpm, c, "local", calibration=cal)
    assert c.read_bytes() != plain.read_bytes()
    assert {x.name for x in rc.calibration_layers} == set(cal.layers)
    assert aq.validate_quality(ddpm, c).passed


def test_progress_is_called_and_can_stop(ddpm, tmp_path):
    calls = []
    r = aq.quantize_diffusion_model(ddpm, tmp_path / "p.arrow", "local",
                                    progress_callback=calls.append)
    done = [c for c in calls if c["phase"] == "quantizing"]
    assert len(done) == r.summary["tensors"]
    assert [c["tensors_done"] for c in done] == list(range(1, len(done) + 1))
    assert done[-1]["bytes_done"] == done[-1]["bytes_total"]
    assert done[-1]["current"] == r.tensors[-1].name

    before = os.listdir(tmp_path)
    seen = []

    def stop(info):
        seen.append(info)
        return len(seen) < 5

    with pytest.raises(QuantizationError, match="returned False") as e:
        aq.quantize_diffusion_model(ddpm, tmp_path / "stopped.arrow", "local",
                                    progress_callback=stop)
    assert e.value.status == "AQ_CANCELLED" and len(seen) == 5
    _no_output(tmp_path, before)

    def boom(info):
        raise RuntimeError("boom from the callback")

    with pytest.raises(RuntimeError, match="boom from the callback"):
        aq.quantize_diffusion_model(ddpm, tmp_path / "boom.arrow", "local",
                                    progress_callback=boom)
    _no_output(tmp_path, before)

    # Ctrl-C: SIGINT during the run raises KeyboardInterrupt and leaves nothing. raise_signal
    # delivers it to this thread before it returns (os.kill lets the kernel pick any thread of
    # the process, the library's workers included), so the run stops at the third quantized
    # tensor whatever the timing.
    interrupted = []

    def interrupt(info):
        if info["phase"] == "quantizing":
            interrupted.append(info["tensors_done"])
            if info["tensors_done"] == 3:
                signal.raise_signal(signal.SIGINT)

    # Python's own handler, whatever this process inherited: a shell starts a background job
    # with SIGINT ignored, and Python then installs no handler of its own.
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            aq.quantize_diffusion_model(ddpm, tmp_path / "int.arrow", "local",
                                        progress_callback=interrupt)
    finally:
        signal.signal(signal.SIGINT, saved)
    assert interrupted == [1, 2, 3]
    _no_output(tmp_path, before)


def test_bad_inputs_raise_and_leave_nothing(ddpm, tmp_path):
    before = os.listdir(tmp_path)
    out = tmp_path / "out.arrow"
    with pytest.raises(FileNotFoundError):
        aq.quantize_diffusion_model(tmp_path / "missing", out)
    with pytest.raises(QuantizationError, match="Unknown profile 'huge'"):
        aq.quantize_diffusion_model(ddpm, out, "huge")
    for bad in (42, {"profile": "edge"}, ["local"]):
        with pytest.raises(TypeError, match="DiffusionQuantConfig"):
            aq.quantize_diffusion_model(ddpm, out, bad)
    # Contradictory overrides: one pattern, two treatments (refused by the configuration);
    # two patterns meeting on one tensor with different treatments (refused by the rules).
    with pytest.raises(QuantizationError, match="Contradictory overrides"):
        DiffusionQuantConfig(keep=["conv_in.*"], bits_for={"conv_in.*": 8})
    cfg = DiffusionQuantConfig(keep=["conv_in.*"], bits_for={"*conv_in.weight": 2})
    with pytest.raises(QuantizationError, match=r"conv_in\.\*"):
        aq.quantize_diffusion_model(ddpm, out, cfg)
    # Calibration tables that do not fit the model.
    layers = _layers(ddpm)
    good = [(l, g, np.ones(c)) for l, c in layers for g in range(2)]
    lacking = _table(good + [("no.such.layer", g, np.ones(4)) for g in range(2)])
    with pytest.raises(QuantizationError, match="no.such.layer"):
        aq.quantize_diffusion_model(ddpm, out, calibration=lacking)
    nan = [(l, g, m.copy()) for l, g, m in good]
    nan[3][2][1] = math.nan
    with pytest.raises(QuantizationError, match="NaN"):
        aq.quantize_diffusion_model(ddpm, out, calibration=_table(nan))
    missing_group = [x for x in good if not (x[0] == layers[0][0] and x[1] == 1)]
    with pytest.raises(QuantizationError, match="timestep group 1"):
        aq.quantize_diffusion_model(ddpm, out, calibration=_table(missing_group))
    with pytest.raises(TypeError, match="calibration must be"):
        aq.quantize_diffusion_model(ddpm, out, calibration=42)
    with pytest.raises(FileNotFoundError):
        aq.quantize_diffusion_model(ddpm, out, calibration=tmp_path / "none.arrow")
    with pytest.raises(QuantizationError, match="compression"):
        aq.quantize_diffusion_model(ddpm, out, compression="gzip")
    _no_output(tmp_path, before)
    with pytest.raises(FileNotFoundError):
        aq.validate_quality(ddpm, tmp_path / "missing.arrow")
    with pytest.raises(QuantizationError, match="min_cosine"):
        aq.validate_quality(ddpm, ddpm, min_cosine=1.5)


def test_validate_failures_agree_with_cli(cli, ddpm, tmp_path):
    # Plain 2-bit affine without a floor: many tensors fall below 0.99.
    q = tmp_path / "b2.arrow"
    cli("quantize", ddpm, "-o", q, "--bits", "2", "--scheme", "affine", "--quiet")
    v = aq.validate_quality(ddpm, q, min_cosine=0.99)
    assert not v.passed and v.floor_source == "argument"
    assert set(v.failing) == {x.name for x in v.layers if x.cosine is not None and
                              x.cosine < 0.99}
    _agrees_with_cli(cli, v, ddpm, q, "--min-accuracy", "0.99", rc=1)
    text = cli("validate", ddpm, q, "--min-accuracy", "0.99", check=False)
    assert text.returncode == 1 and text.stdout.count("FAIL ") == len(v.failing)
    assert text.stdout.splitlines()[-1].startswith("FAIL: 144 tensors")
    # A tensor missing from the quantized side, and one the original lacks.
    src = load_file(str(ddpm / "diffusion_pytorch_model.safetensors"))
    dropped = sorted(src)[0]
    part = {k: v for k, v in src.items() if k != dropped}
    part["extra.weight"] = np.ones((2, 2), np.float32)
    save_file(part, str(tmp_path / "part.safetensors"))
    v = aq.validate_quality(ddpm, tmp_path / "part.safetensors")
    st = {x.name: x.status for x in v.layers}
    assert st[dropped] == "missing in B" and st["extra.weight"] == "missing in A"
    assert set(v.failing) == {dropped, "extra.weight"}
    assert v.summary["missing_in_quantized"] == 1 and v.summary["missing_in_original"] == 1
    _agrees_with_cli(cli, v, ddpm, tmp_path / "part.safetensors", rc=1)
    # Errors: exit 2.
    p = cli("validate", ddpm, tmp_path / "none.arrow", check=False)
    assert p.returncode == 2 and f"{tmp_path / 'none.arrow'}: No such file" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = cli("validate", ddpm, q, "--profile", "edge", "--min-accuracy", "0.9", check=False)
    assert p.returncode == 2 and "not both" in p.stderr
    p = cli("validate", ddpm, q, "--profile", "huge", check=False)
    assert p.returncode == 2 and "Unknown profile 'huge'" in p.stderr
    # --profile: that profile's floor.
    j = cli.json("validate", ddpm, q, "--profile", "edge", rc=1)
    assert j["min_cosine"] == 0.9 and j["floor_source"] == "profile edge"


def test_docs_model_quick_start_runs(ddpm, tmp_path, monkeypatch):
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "python.md").read_text()
    section = text.split("## Whole models from Python", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ddpm_digits").symlink_to(ddpm)
    namespace = {}
    exec(compile(block, "docs/python.md", "exec"), namespace)
    assert namespace["report"].passed and (tmp_path / "ddpm.arrow").exists()
    by = {t.name: t for t in namespace["result"].tensors}
    assert by["conv_in.weight"].bit_width == 8 and by["conv_in.weight"].rule == "override"


@pytest.mark.parametrize("bits,profile,bpw", [(2, "edge", 2.625), (4, "local", 4.5),
                                              (8, "cloud", 8.5)])
def test_diffusion_mode_defaults_are_the_profile_of_the_bits(ddpm, tmp_path, bits, profile, bpw):
    """ArrowQuantV2(mode="diffusion") with nothing but bit_width applies the layer rules and
    the budget of that width's profile: the same bytes as quantize_diffusion_model with that
    profile (and so as ``arrowquant quantize --profile``), and the tensors the profile decides
    stay within its bits per weight, every byte counted."""
    pa = pytest.importorskip("pyarrow")
    tensors = load_file(str(ddpm / "diffusion_pytorch_model.safetensors"))
    names = list(tensors)
    batch = pa.record_batch({
        "layer_name": names,
        "weights": pa.array([tensors[n].astype(np.float32).ravel() for n in names],
                            pa.list_(pa.float32())),
        "shape": pa.array([list(tensors[n].shape) for n in names], pa.list_(pa.int64()))})
    seed = aq.ArrowQuantV2(mode="diffusion").quantize_arrow_batch(batch, bit_width=bits)
    model = aq.quantize_diffusion_model(ddpm, tmp_path / "m.arrow", config=profile)
    table = pyarrow.ipc.open_file(str(tmp_path / "m.arrow")).read_all()
    at = {n: i for i, n in enumerate(table.column("layer_name").to_pylist())}
    data = table.column("quantized_data").to_pylist()
    assert [data[at[n]] for n in names] == seed.column("quantized_data").to_pylist()
    assert {t.rule for t in model.tensors} >= {"profile", "bias", "norm"}
    # The profile's tensors: within the figure, up to one partial super-block each.
    rows = {r["layer_name"]: r for r in seed.to_pylist()}
    mine = [t for t in model.tensors if t.rule == "profile"]
    size = sum(len(rows[t.name]["quantized_data"]) + 8 * len(rows[t.name]["scales"])
               for t in mine)
    n = sum(t.elements for t in mine)
    assert size * 8 <= bpw * n + 88 * len(mine)
