"""config= and calibration= of ArrowQuantV2.quantize_batch / quantize_arrow_batch /
quantize_arrow: the diffusion layer rules and time-aware calibration in the Arrow batch path
(aq_batch_options.rules / .calib), checked against the model pipeline on the DDPM fixture."""
import math

import numpy as np
import pytest

import arrow_quant_v2 as aq
from arrow_quant_v2 import DiffusionQuantConfig, QuantizationError

pa = pytest.importorskip("pyarrow")
import pyarrow.ipc  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


@pytest.fixture(scope="module")
def weights(ddpm):
    w = load_file(str(ddpm / "diffusion_pytorch_model.safetensors"))
    return {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in w.items()}


def _batch(weights):
    return pa.record_batch({"layer_name": list(weights),
                            "weights": [v.ravel() for v in weights.values()],
                            "shape": [list(v.shape) for v in weights.values()]})


def _bits(result):
    return dict(zip(result.column("layer_name").to_pylist(),
                    result.column("bit_width").to_pylist()))


def test_rules_agree_with_the_model_pipeline(ddpm, weights, tmp_path):
    q = aq.ArrowQuantV2()
    cfg = DiffusionQuantConfig("local", target_bpw=0)
    r = q.quantize_batch(weights, config=cfg)
    # The same rules as quantize_diffusion_model's: each layer's bits (16 when kept).
    m = aq.quantize_diffusion_model(ddpm, tmp_path / "m.arrow", cfg)
    rows = {x["layer_name"]: x["bit_width"] for x in pa.ipc.open_file(
        str(tmp_path / "m.arrow")).read_all().select(["layer_name", "bit_width"]).to_pylist()}
    assert _bits(r) == rows
    assert {t.name: t.rule for t in m.tensors}["conv_in.weight"] == "first_layer"
    assert _bits(r)["conv_in.weight"] == 8 and _bits(r)["conv_in.bias"] == 16
    # The three methods give the same bytes.
    batch = _batch(weights)
    assert q.quantize_arrow_batch(batch, config=cfg).equals(r)
    table = pa.Table.from_batches([batch.slice(0, 70), batch.slice(70)])
    t = q.quantize_arrow(table, config=cfg)
    assert t.num_rows == len(weights)
    assert pa.Table.from_batches([r]).to_pylist() == t.to_pylist()
    # Without config, scheme or group_size the diffusion mode applies the rules, floor and
    # budget of the profile of its bit width (4: local); the base mode quantizes every layer,
    # biases included, at 4 bits.
    assert q.quantize_batch(weights).equals(q.quantize_batch(weights, config="local"))
    assert _bits(q.quantize_batch(weights, bit_width=2)) == \
        _bits(q.quantize_batch(weights, config="edge"))
    assert set(_bits(q.quantize_batch(weights, scheme="kquant")).values()) == {4}
    assert set(_bits(aq.ArrowQuantV2(mode="base").quantize_batch(weights)).values()) == {4}


def test_profile_floor_budget_and_overrides(weights):
    q = aq.ArrowQuantV2()
    edge = _bits(q.quantize_batch(weights, config="edge"))
    cloud = _bits(q.quantize_batch(weights, config="cloud"))
    follows = [n for n in weights if weights[n].ndim >= 2 and cloud[n] == 8 and edge[n] != 8]
    assert follows and all(edge[n] in (2, 4) for n in follows)
    cfg = DiffusionQuantConfig("local", keep=["*attentions*"], bits_for={"down_blocks.0.*": 2},
                               min_cosine=0, target_bpw=0)
    b = _bits(q.quantize_batch(weights, config=cfg))
    assert all(b[n] == 16 for n in weights if "attentions" in n)
    assert all(b[n] == 2 for n in weights if n.startswith("down_blocks.0.") and
               weights[n].ndim >= 2 and not n.endswith("norm1.weight"))
    # An explicit floor wins over the configuration's.
    hi = _bits(q.quantize_batch(weights, config=cfg.replace(bits_for={}), min_accuracy=0.9999))
    assert sum(v == 8 for v in hi.values()) > sum(v == 8 for v in b.values())


def test_calibration_changes_bytes(ddpm, weights):
    q = aq.ArrowQuantV2()
    rng = np.random.default_rng(0)
    rows = [(n[:-len(".weight")], g, rng.lognormal(0, 2, v.shape[1]).tolist())
            for n, v in weights.items() if n.endswith(".weight") and v.ndim >= 2
            for g in range(2)]
    table = pa.table({"layer_name": [r[0] for r in rows], "timestep_group": [r[1] for r in rows],
                      "mean_square": pa.array([r[2] for r in rows], pa.list_(pa.float32()))})
    plain = q.quantize_batch(weights, config="local")
    cal = q.quantize_batch(weights, config="local", calibration=table)
    assert cal.column("quantized_data") != plain.column("quantized_data")
    # Calibration alone (no rules): importance for the context's scheme.
    a = q.quantize_batch(weights, scheme="affine_search", group_size=64)
    b = q.quantize_batch(weights, scheme="affine_search", group_size=64, calibration=table)
    assert a.column("quantized_data") != b.column("quantized_data")
    assert q.quantize_arrow_batch(_batch(weights), config="local", calibration=table).equals(cal)


def test_bad_config_and_calibration(weights):
    q = aq.ArrowQuantV2()
    with pytest.raises(QuantizationError, match="cannot be combined with bit_width"):
        q.quantize_batch(weights, config="local", bit_width=2)
    with pytest.raises(QuantizationError, match="Unknown profile 'huge'"):
        q.quantize_arrow_batch(_batch(weights), config="huge")
    with pytest.raises(TypeError, match="DiffusionQuantConfig"):
        q.quantize_arrow(_batch(weights), config=42)
    with pytest.raises(TypeError, match="calibration must be"):
        q.quantize_batch(weights, calibration=42)
    nan = pa.table({"layer_name": ["conv_in"], "timestep_group": [0],
                    "mean_square": pa.array([[1.0, math.nan]], pa.list_(pa.float32()))})
    with pytest.raises(QuantizationError, match="NaN"):
        q.quantize_batch(weights, config="local", calibration=nan)
    cfg = DiffusionQuantConfig(keep=["conv_in.*"], bits_for={"*conv_in.weight": 8})
    with pytest.raises(QuantizationError, match=r"conv_in\.\*"):
        q.quantize_batch(weights, config=cfg)
