"""Time-aware calibration: the torch helper's statistics checked against a replay of the
trajectory, and its table read by the C library (aq_calib_*) through the C Data Interface."""
import math

import numpy as np
import pyarrow as pa
import pytest

import aqdiff_ctypes
from arrow_quant_v2 import QuantizationError, calibrate

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

GROUPS = 4
STEPS = 8


def small_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def scheduler():
    return diffusers.DDPMScheduler(num_train_timesteps=100)


@pytest.fixture(scope="module")
def run():
    model = small_unet()
    result = calibrate(model, 2, scheduler=scheduler(), num_steps=STEPS, groups=GROUPS,
                       generator=torch.Generator().manual_seed(0))
    return model, result


def test_table(run):
    model, result = run
    table = result.table
    assert table.schema.names == ["layer_name", "timestep_group", "mean_square"]
    assert table.schema.field("mean_square").type == pa.list_(pa.float32())
    assert table.schema.metadata[b"arrowquant.timestep_groups"] == b"4"
    layers = [n for n, m in model.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert result.layers == layers and table.num_rows == len(layers) * GROUPS
    state = model.state_dict()
    for row in table.to_pylist():
        weight = state[row["layer_name"] + ".weight"]
        assert len(row["mean_square"]) == weight.shape[1]  # input channels
    assert len(result.timesteps) == STEPS


def test_statistics_match_a_replay(run):
    """conv_in sees the sample itself and time_embedding.linear_1 the timestep's sinusoidal
    projection: replaying the same trajectory without hooks gives the same statistics."""
    model, result = run
    sched = scheduler()
    sched.set_timesteps(STEPS)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, 1, 8, 8), generator=gen)
    conv_in = [[] for _ in range(GROUPS)]
    temb = [[] for _ in range(GROUPS)]
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            g = i * GROUPS // STEPS
            conv_in[g].append(x.double())
            proj = model.time_proj(t.reshape(1).expand(2)).double()
            temb[g].append(proj)
            x = sched.step(model(x, t).sample, t, x, generator=gen).prev_sample
    for g in range(GROUPS):
        xs = torch.cat(conv_in[g])
        want = (xs * xs).mean(dim=(0, 2, 3)).numpy()
        np.testing.assert_allclose(result.mean_square("conv_in", g), want, rtol=1e-6)
        ps = torch.cat(temb[g])
        want = (ps * ps).mean(dim=0).numpy()
        np.testing.assert_allclose(result.mean_square("time_embedding.linear_1", g), want,
                                   rtol=1e-6)


def test_the_c_library_reads_the_table(aqd, run):
    model, result = run
    calib = aqdiff_ctypes.Calib(aqd, result.table)
    try:
        c_layers = calib.layers()
        assert list(c_layers) == result.layers
        for v in result.variation():
            channels, groups, scale, shape = c_layers[v.layer_name]
            assert (channels, groups) == (v.channels, GROUPS)
            assert math.isclose(scale, v.scale_ratio, rel_tol=1e-5)
            assert math.isclose(shape, v.shape_variation, rel_tol=1e-4, abs_tol=1e-6)
        names = list(model.state_dict())
        calib.check_model(names)
        calib.check_model(["unet/" + n for n in names])  # a pipeline's prefixed names
        with pytest.raises(ValueError, match="statistics for layer 'conv_out', which the "
                                             "model does not have"):
            calib.check_model([n for n in names if not n.startswith("conv_out")])
        # Importance: per input channel, the maximum of the mean-normalised groups.
        ms = np.array([result.mean_square("conv_in", g) for g in range(GROUPS)])
        want = np.maximum((ms / ms.mean(axis=1, keepdims=True)).max(axis=0), 0.01)
        shape = tuple(model.state_dict()["conv_in.weight"].shape)
        imp = calib.importance("unet/conv_in.weight", shape)
        assert imp.shape == shape
        for c in range(shape[1]):
            np.testing.assert_allclose(imp[:, c], want[c], rtol=1e-6)
        assert calib.importance("conv_in.bias", shape) is None
    finally:
        calib.close()
    mean = aqdiff_ctypes.Calib(aqd, result.table, combine=1)
    try:
        ms = np.array([result.mean_square("time_embedding.linear_2", g) for g in range(GROUPS)])
        want = np.maximum((ms / ms.mean(axis=1, keepdims=True)).mean(axis=0), 0.01)
        imp = mean.importance("time_embedding.linear_2.weight", (3, ms.shape[1]))
        np.testing.assert_allclose(imp[1], want, rtol=1e-5)
    finally:
        mean.close()


def test_most_varying(run):
    _, result = run
    top = result.most_varying(3)
    assert len(top) == 3
    assert top[0].shape_variation >= top[1].shape_variation >= top[2].shape_variation
    everything = result.variation()
    assert top[0].shape_variation == max(v.shape_variation for v in everything)
    by_scale = result.most_varying(1, by="scale_ratio")[0]
    assert by_scale.scale_ratio == max(v.scale_ratio for v in everything)
    with pytest.raises(QuantizationError, match="Invalid by"):
        result.most_varying(by="size")


def test_step_fn_and_bad_arguments():
    lin = torch.nn.Sequential(torch.nn.Linear(3, 3))

    def step(x, t):
        return x - 0.1 * float(t) * lin(x)

    r = calibrate(lin, torch.ones(2, 3), step_fn=step, timesteps=[3, 2, 1], groups=3)
    assert r.layers == ["0"]
    assert r.mean_square("0", 0) == [1.0, 1.0, 1.0]  # the first step sees the samples
    with pytest.raises(QuantizationError, match="fewer than the 4 timestep groups"):
        calibrate(lin, torch.ones(2, 3), step_fn=step, timesteps=[3, 2, 1], groups=4)
    with pytest.raises(QuantizationError, match="needs a scheduler, a step_fn with timesteps, or"):
        calibrate(lin, torch.ones(2, 3))
    with pytest.raises(QuantizationError, match="needs the timesteps"):
        calibrate(lin, torch.ones(2, 3), step_fn=step)
    with pytest.raises(QuantizationError, match="samples contain NaN or Inf"):
        calibrate(lin, torch.full((2, 3), math.nan), step_fn=step, timesteps=[1], groups=1)
    with pytest.raises(QuantizationError, match="no config.sample_size"):
        calibrate(lin, 2, step_fn=step, timesteps=[1], groups=1)
    with pytest.raises(QuantizationError, match="Invalid groups"):
        calibrate(lin, torch.ones(2, 3), step_fn=step, timesteps=[1], groups=0)

    def diverge(x, t):
        return lin(x) * 1e308 * 1e308

    with pytest.raises(QuantizationError, match="group 1 contain NaN or Inf"):
        calibrate(lin, torch.ones(2, 3), step_fn=diverge, timesteps=[2, 1], groups=2)


def table(rows, groups=None):
    schema = pa.schema([("layer_name", pa.string()), ("timestep_group", pa.int64()),
                        ("mean_square", pa.list_(pa.float32()))],
                       metadata=None if groups is None else {
                           "arrowquant.timestep_groups": str(groups)})
    return pa.table({"layer_name": [r[0] for r in rows], "timestep_group": [r[1] for r in rows],
                     "mean_square": [r[2] for r in rows]}, schema=schema)


@pytest.mark.parametrize("rows, groups, message", [
    ([("a", 0, [1.0, math.nan])], None,
     "Calibration layer 'a', timestep group 0: mean_square at channel 1 is NaN or Inf"),
    ([("a", 0, [1.0]), ("a", 1, [1.0])], 3,
     "Layer 'a' has no statistics for timestep group 2 (the table has groups 0..2)"),
    ([("a", 0, [1.0]), ("b", 1, [1.0]), ("b", 0, [1.0])], None,
     "Layer 'a' has no statistics for timestep group 1"),
    ([("a", 0, [1.0]), ("a", 0, [2.0])], None, "has timestep group 0 twice"),
    ([("a", 0, [-1.0])], None, "channel 0 is negative"),
])
def test_bad_tables_from_pyarrow(aqd, rows, groups, message):
    with pytest.raises(ValueError) as e:
        aqdiff_ctypes.Calib(aqd, table(rows, groups)).close()
    assert message in str(e.value)


def test_conditioned_unet_with_ddim(aqd):
    """A UNet2DConditionModel (cross-attention: its to_k/to_v see the text embedding) under a
    DDIM scheduler, conditioning passed through model_kwargs."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=24,
        attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    text = torch.randn((2, 5, 24), generator=torch.Generator().manual_seed(3))
    result = calibrate(unet, 2, scheduler=diffusers.DDIMScheduler(num_train_timesteps=100),
                       num_steps=6, groups=3, model_kwargs={"encoder_hidden_states": text},
                       generator=torch.Generator().manual_seed(0))
    to_k = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    assert to_k in result.layers
    # The text embedding does not change with the timestep: neither do to_k's statistics.
    want = (text.double() ** 2).mean(dim=(0, 1)).numpy()
    for g in range(3):
        np.testing.assert_allclose(result.mean_square(to_k, g), want, rtol=1e-9)
    v = {x.layer_name: x for x in result.variation()}[to_k]
    assert v.scale_ratio == pytest.approx(1.0) and v.shape_variation < 1e-9
    calib = aqdiff_ctypes.Calib(aqd, result.table)
    try:
        calib.check_model(list(unet.state_dict()))
    finally:
        calib.close()
