"""The benchmark's trained DDPM (tests/data/diffusion/ddpm_digits, bench/diffusion/
train_ddpm.py) as a fixture: it loads with diffusers, its names follow the UNet rules, and
quantized through the C library with the layer rules, its noise prediction stays close to
the float32 model's (the full measurements are bench/diffusion/bench_diffusion.py's)."""
import math
import pathlib

import numpy as np
import pytest

import aqdiff_ctypes

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

ROOT = pathlib.Path(__file__).resolve().parents[3]
MODEL = ROOT / "tests/data/diffusion/ddpm_digits"


@pytest.fixture(scope="module")
def ddpm():
    model = diffusers.UNet2DModel.from_pretrained(MODEL).float().eval()
    sched = diffusers.DDPMScheduler.from_pretrained(MODEL)
    return model, sched


def noise_prediction(model, sched, t):
    x0 = torch.tensor(sklearn_datasets.load_digits().images[-64:],
                      dtype=torch.float32).unsqueeze(1) / 16 * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    xt = sched.add_noise(x0, eps, torch.full((64,), t))
    with torch.no_grad():
        return model(xt, t).sample, eps


def test_the_model_predicts_noise(ddpm):
    model, sched = ddpm
    pred, eps = noise_prediction(model, sched, 500)
    # A trained denoiser: far better than predicting zero (relative error 1; measured 0.022).
    rel = float(((pred - eps) ** 2).mean() / (eps ** 2).mean())
    assert rel < 0.1, rel


# Floors about 7 dB under the measured 26.9, 39.4 and 52.4 dB.
@pytest.mark.parametrize("profile, floor_db", [("edge", 20.0), ("local", 32.0), ("cloud", 45.0)])
def test_quantized_with_the_rules(libaq, ddpm, profile, floor_db):
    model, sched = ddpm
    lib = aqdiff_ctypes.Lib(libaq._name)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    names = list(state)
    dec = lib.decisions(profile, names, [state[n].shape for n in names])
    rules = {d[2] for d in dec.values()}
    assert {"bias", "norm", "time_embedding", "modulation", "first_layer", "last_layer",
            "profile"} <= rules
    new = {}
    for n in names:
        keep, bits, _ = dec[n]
        if keep:
            new[n] = torch.from_numpy(state[n].astype(np.float16).astype(np.float32))
        else:
            deq, _ = lib.qdq(n, state[n], bits, "kquant", 512)
            new[n] = torch.from_numpy(deq)
    qmodel = diffusers.UNet2DModel.from_pretrained(MODEL).float().eval()
    qmodel.load_state_dict(new)
    ref, _ = noise_prediction(model, sched, 500)
    out, _ = noise_prediction(qmodel, sched, 500)
    sqnr = 10 * math.log10(float((ref ** 2).sum()) / float(((out - ref) ** 2).sum()))
    assert sqnr > floor_db, (profile, sqnr)
