"""calibration= given as the torch model itself: the quantize entry points run calibrate on it
(arrow_quant_v2.calibration.calibration_from), with the same bytes as the CalibrationResult of
the same run, and calibrate's own timesteps-only mode (the model run at each timestep on the
given inputs)."""
import numpy as np
import pyarrow as pa
import pytest

import arrow_quant_v2 as aq
from arrow_quant_v2 import ModelCalibration, QuantizationError, calibrate
from arrow_quant_v2.calibration import calibration_from

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


def small_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def batch_of(model):
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return pa.record_batch({
        "layer_name": list(state),
        "weights": pa.array([v.ravel() for v in state.values()], pa.list_(pa.float32())),
        "shape": pa.array([list(v.shape) for v in state.values()], pa.list_(pa.int64()))})


def quantize(batch, mode, **kw):
    res = aq.ArrowQuantV2(mode=mode).quantize_arrow_batch(batch, bit_width=4, **kw)
    return res.column("quantized_data").to_pylist(), res.column("scales").to_pylist()


def test_timesteps_alone_run_the_model_on_the_inputs():
    lin = torch.nn.Sequential(torch.nn.Linear(3, 3))
    seen = []
    lin.register_forward_hook(lambda m, a, o: seen.append(a[0].clone()))
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])

    class Timed(torch.nn.Module):  # model(x, t)
        def __init__(self):
            super().__init__()
            self.inner = lin

        def forward(self, v, t):
            return self.inner(v * float(t))

    r = calibrate(Timed(), x, timesteps=[1, 2], groups=2)
    assert r.mean_square("inner.0", 0) == pytest.approx([5.0, 4.0, 5.0])
    assert r.mean_square("inner.0", 1) == pytest.approx([20.0, 16.0, 20.0])
    assert len(seen) == 2 and torch.equal(seen[0], x)  # not stepped
    per = calibrate(Timed(), [x, 2 * x], timesteps=[1, 1], groups=2)
    assert per.mean_square("inner.0", 1) == pytest.approx([20.0, 16.0, 20.0])
    with pytest.raises(QuantizationError, match="2 inputs for 3 timesteps"):
        calibrate(Timed(), [x, x], timesteps=[1, 2, 3], groups=1)
    with pytest.raises(QuantizationError, match="samples contain NaN"):
        calibrate(Timed(), [x, x * float("nan")], timesteps=[1, 2], groups=1)


def test_model_spec_gives_the_bytes_of_its_calibration_result():
    model = small_unet()
    batch = batch_of(model)
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    spec = {"model": model, "timesteps": [90, 60, 30, 10], "samples": x}
    direct = calibrate(model, x, timesteps=[90, 60, 30, 10], groups=4)
    from_spec = quantize(batch, "time_aware", calibration=spec)
    assert from_spec == quantize(batch, "time_aware", calibration=direct)
    assert from_spec == quantize(batch, "time_aware", calibration=ModelCalibration(**spec))
    # The importance reaches the encoders: not the bytes of mode 'diffusion'.
    assert from_spec != quantize(batch, "diffusion")
    # quantize_diffusion_model's path (model.py) takes it too.
    assert isinstance(calibration_from(spec), aq.calibration.CalibrationResult)


def test_bare_module_runs_the_default_schedule():
    model = small_unet()
    batch = batch_of(model)
    ref = ModelCalibration(model).run()
    assert len(ref.timesteps) == 20 and ref.groups == 4
    assert quantize(batch, "time_aware", calibration=model) == quantize(
        batch, "time_aware", calibration=ref)


def test_bad_specs():
    model = small_unet()
    batch = batch_of(model)
    with pytest.raises(QuantizationError, match="unknown key 'steps'"):
        quantize(batch, "time_aware", calibration={"model": model, "steps": 3})
    with pytest.raises(QuantizationError, match="must be a torch.nn.Module"):
        quantize(batch, "time_aware", calibration={"model": "unet", "timesteps": [1]})
    with pytest.raises(QuantizationError, match="needs calibration="):
        aq.ArrowQuantV2(mode="time_aware").quantize_arrow_batch(batch, bit_width=4)
