"""arrowquant quantize with a calibration table (--calibration, --calibration-combine) and a
budget with the layer rules (--profile with --target-bpw, --budget-scope), on the project's
DDPM fixture (tests/data/diffusion/ddpm_digits) and the demo UNet: what the summary and --json
report, what the file holds, and every bad input as one line on stderr, a non-zero exit and no
output file."""
import json
import pathlib

import numpy as np
import pyarrow as pa
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
DDPM = ROOT / "tests/data/diffusion/ddpm_digits"


def ddpm_layers():
    """(layer, input channels) of every weight of 2 or more dimensions of the fixture."""
    from safetensors import safe_open

    with safe_open(str(DDPM / "diffusion_pytorch_model.safetensors"), "np") as f:
        out = []
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            if k.endswith(".weight") and len(shape) >= 2:
                out.append((k[:-len(".weight")], shape[1]))
    return out


def write_table(path, layers, groups=4, stream=False, nan_at=None, drop=None, seed=0):
    """A calibration table: per layer and timestep group, positive per-channel mean squares
    whose profile changes with the group. nan_at: (layer index, group) given a NaN; drop:
    (layer index, group) left out."""
    rng = np.random.default_rng(seed)
    names, gs, ms = [], [], []
    for i, (layer, c) in enumerate(layers):
        base = rng.gamma(0.5, 1.0, c) + 1e-3
        for g in range(groups):
            if drop == (i, g):
                continue
            v = base * (1.0 + 3.0 * g * rng.random(c))
            if nan_at == (i, g):
                v[0] = np.nan
            names.append(layer)
            gs.append(g)
            ms.append(v.astype(np.float32))
    t = pa.table({"layer_name": pa.array(names, pa.string()),
                  "timestep_group": pa.array(gs, pa.int64()),
                  "mean_square": pa.array(ms, pa.list_(pa.float32()))},
                 metadata={"arrowquant.timestep_groups": str(groups)})
    with pa.OSFile(str(path), "wb") as f:
        w = (pa.ipc.new_stream if stream else pa.ipc.new_file)(f, t.schema)
        w.write_table(t, max_chunksize=40)
        w.close()
    return path


def read(path):
    with pa.memory_map(str(path)) as f:
        t = pa.ipc.open_file(f).read_all()
    return {r["layer_name"]: r for r in t.to_pylist()}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_table(tmp_path_factory.mktemp("calib") / "calib.arrow", ddpm_layers())


def test_calibration_changes_the_searched_tensors_and_is_reported(aq, table, tmp_path):
    plain, cal = tmp_path / "plain.arrow", tmp_path / "cal.arrow"
    aq("quantize", DDPM, "-o", plain, "--profile", "edge", "-q")
    s = json.loads(aq("quantize", DDPM, "-o", cal, "--profile", "edge", "--json",
                      "--calibration", table).stdout)
    c = s["calibration"]
    assert c["file"] == str(table) and c["combine"] == "max"
    assert c["layers"] == len(ddpm_layers())
    top = c["most_varying"]
    assert len(top) == 3
    assert top[0]["shape_variation"] >= top[1]["shape_variation"] >= top[2]["shape_variation"]
    assert {t["layer"] for t in top} <= {layer for layer, _ in ddpm_layers()}
    a, b = read(plain), read(cal)
    assert a.keys() == b.keys()
    changed = [n for n in a if a[n]["scheme"] == "kquant"
               and a[n]["quantized_data"] != b[n]["quantized_data"]]
    assert len(changed) > 10
    # Kept tensors do not change.
    assert all(a[n]["quantized_data"] == b[n]["quantized_data"] for n in a
               if a[n]["scheme"] == "raw")
    text = aq("quantize", DDPM, "-o", tmp_path / "t.arrow", "--profile", "edge",
              "--calibration", table, "--calibration-combine", "mean").stdout
    assert "calibration  " in text and "(combine mean)" in text
    assert "varying most across timesteps: " in text
    # An IPC stream works as well as a file.
    stream = write_table(tmp_path / "calib.arrows", ddpm_layers(), stream=True)
    aq("quantize", DDPM, "-o", tmp_path / "s.arrow", "--profile", "edge", "-q",
       "--calibration", stream)


def test_plain_affine_warns_that_it_ignores_importance(aq, table, tmp_path):
    p = aq("quantize", DDPM, "-o", tmp_path / "a.arrow", "--bits", "4", "--min-elements", "64",
           "--calibration", table)
    assert p.returncode == 0
    assert "warning: --calibration: plain affine ignores importance" in p.stderr
    p = aq("quantize", DDPM, "-o", tmp_path / "b.arrow", "--bits", "4", "--min-elements", "64",
           "--scheme", "affine_search", "--calibration", table)
    assert "warning" not in p.stderr


def test_profile_budget_by_default(aq, tmp_path):
    """--profile applies its floor and its own size as a budget: the same bytes as the rules
    alone (the floor's moves included), at least as good a total error."""
    d = json.loads(aq("quantize", DDPM, "-o", tmp_path / "d.arrow", "--profile", "local",
                      "--json").stdout)
    r = json.loads(aq("quantize", DDPM, "-o", tmp_path / "r.arrow", "--profile", "local",
                      "--json", "--target-bpw", "0").stdout)
    assert d["min_accuracy"] == 0.99 and r["min_accuracy"] == 0.99
    assert d["target_bpw"] is None and r["target_bpw"] == 0 and r["budget"] is None
    b = d["budget"]
    assert b["scope"] == "profile" and b["target_bpw"] == "profile"
    assert d["bytes_out"] <= r["bytes_out"]
    assert b["model_bits_per_weight"] == pytest.approx(d["bits_per_weight"], abs=1e-3)
    # Off: no floor, no budget.
    o = json.loads(aq("quantize", DDPM, "-o", tmp_path / "o.arrow", "--profile", "local",
                      "--json", "--target-bpw", "0", "--min-accuracy", "0").stdout)
    assert o["min_accuracy"] == 0 and o["moved"] == []


@pytest.mark.parametrize("scope", ["profile", "model"])
def test_budget_scopes_stay_within_budget(aq, table, tmp_path, scope):
    target = 3.2 if scope == "profile" else 4.0
    out = tmp_path / f"{scope}.arrow"
    s = json.loads(aq("quantize", DDPM, "-o", out, "--profile", "edge", "--json",
                      "--target-bpw", target, "--budget-scope", scope,
                      "--calibration", table).stdout)
    b = s["budget"]
    assert b["scope"] == scope and b["target_bpw"] == target
    assert b["bits_per_weight"] <= target
    assert b["scope_bytes"] * 8 <= target * b["scope_parameters"]
    if scope == "model":
        assert b["scope_parameters"] == s["parameters"] == 701345
        assert b["scope_bytes"] == s["bytes_out"]
    rows = read(out)
    # The rule-fixed tensors keep their 8 bits; the budget mixes the others.
    for n in ["conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight"]:
        assert (rows[n]["bit_width"], rows[n]["scheme"]) == (8, "kquant"), n
    bits = {r["bit_width"] for n, r in rows.items() if r["scheme"] == "kquant"
            and n.startswith(("down_blocks", "up_blocks", "mid_block"))}
    assert bits >= {2, 4}
    text = aq("quantize", DDPM, "-o", tmp_path / "t.arrow", "--profile", "edge",
              "--target-bpw", target, "--budget-scope", scope).stdout
    assert f"budget       scope {scope}, target {target:.3f} bits/weight" in text


def test_whole_model_budget_with_lowered_rules(aq, tmp_path):
    """--bits-for lowers the 8-bit rule layers; the whole-model budget then covers them too
    (they are overrides: fixed at the bits given)."""
    s = json.loads(aq("quantize", DDPM, "-o", tmp_path / "l.arrow", "--profile", "edge",
                      "--json", "--budget-scope", "model", "--target-bpw", "3.5",
                      "--bits-for", "time_embedding.*.weight=4",
                      "--bits-for", "conv_in.weight=4",
                      "--scheme", "kquant,affine_search").stdout)
    assert s["budget"]["bits_per_weight"] <= 3.5
    rows = read(tmp_path / "l.arrow")
    assert rows["conv_in.weight"]["bit_width"] == 4
    assert rows["time_embedding.linear_2.weight"]["bit_width"] == 4
    # --scheme with --profile: the budget's candidates.
    assert {r["scheme"] for r in rows.values()} <= {"kquant", "affine_search", "raw"}


def test_bad_input(aq, table, tmp_path):
    o = tmp_path / "x.arrow"
    layers = ddpm_layers()
    other = write_table(tmp_path / "other.arrow", [("down_blocks.9.conv", 32)] + layers[:2])
    gap = write_table(tmp_path / "gap.arrow", layers, drop=(3, 2))
    nan = write_table(tmp_path / "nan.arrow", layers, nan_at=(5, 1))
    wrong = write_table(tmp_path / "wrong.arrow", [(layers[4][0], layers[4][1] + 3)])
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not an arrow file at all")
    base = ["quantize", DDPM, "-o", o, "--profile", "edge"]
    cases = [
        (["--calibration", tmp_path / "missing.arrow"], "missing.arrow"),
        (["--calibration", junk], "junk.arrow"),
        (["--calibration", other], "down_blocks.9.conv"),
        (["--calibration", gap], f"Layer '{layers[3][0]}' has no statistics for timestep "
                                 "group 2"),
        (["--calibration", nan], layers[5][0]),
        (["--calibration", wrong], layers[4][0]),
        (["--calibration", table, "--calibration-combine", "median"],
         "--calibration-combine: 'median' is not one of max, mean"),
        (["--calibration-combine", "max"], "--calibration-combine needs --calibration"),
        (["--budget-scope", "layer"], "--budget-scope: 'layer' is not one of profile, model"),
        (["--budget-scope", "model", "--target-bpw", "0"], "--budget-scope needs a budget"),
        (["--budget-scope", "model", "--target-bpw", "2.625"],
         "The smallest allocation needs 3.35"),
        (["--target-bpw", "2"], "The smallest allocation needs 2.6250"),
        (["--target-bpw", "-1"], "--target-bpw: '-1' is not 0 (off) or a number"),
        (["--min-accuracy", "1.5"], "--min-accuracy: '1.5' is not 0 (off) or a number"),
        (["--target-bpw", "0", "--scheme", "kquant"], "needs a budget"),
    ]
    for extra, expect in cases:
        aq.fails(*base, *extra, expect=expect, leaves_nothing_in=tmp_path)
    # Without a profile, a budget scope needs a budget too.
    aq.fails("quantize", DDPM, "-o", o, "--scheme", "affine", "--budget-scope", "model",
             expect="--budget-scope needs a budget", leaves_nothing_in=tmp_path)
