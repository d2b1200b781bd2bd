"""Time-aware calibration of torch diffusion models.

Weights do not change with the timestep; the activations they multiply do. ``calibrate`` runs
a denoiser along real sampling trajectories and records, for every ``Linear`` and convolution
layer, the mean square of each input channel, separately for each group of timesteps:

    from diffusers import DDPMScheduler, UNet2DModel
    from arrow_quant_v2.calibration import calibrate

    result = calibrate(unet, scheduler=DDPMScheduler(...), samples=8, num_steps=20, groups=4)
    result.table            # pyarrow Table: layer_name, timestep_group, mean_square
    result.most_varying(5)  # the layers whose inputs change most along the trajectory

The table is what the C library reads as importance (``aq_calib_*`` in ``arrowquant.h``):
each group is normalised by its mean and the groups are combined per channel by their maximum,
so no part of the trajectory is neglected. ``most_varying`` uses the same two figures as
``aq_calib_layer_get`` (scale ratio and shape variation).

The quantize entry points (``ArrowQuantV2.quantize_*``, ``quantize_diffusion_model``,
``quantize_gguf``) also take the torch model itself as ``calibration=`` and run ``calibrate``
on it (``calibration_from``): a ``torch.nn.Module``, a ``ModelCalibration`` (the model with
its timesteps, sample inputs, scheduler, ...), or a dict of ``ModelCalibration``'s fields:

    ArrowQuantV2(mode="time_aware").quantize_arrow_batch(
        batch, bit_width=4, calibration={"model": unet, "timesteps": [999, 750, 500, 250],
                                         "samples": noised_inputs})

Needs torch and pyarrow (imported when called, so that the package itself does not).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .arrow_quant_v2 import QuantizationError

__all__ = ["calibrate", "CalibrationResult", "LayerVariation", "layer_variation",
           "ModelCalibration", "calibration_from"]


@dataclass(frozen=True)
class LayerVariation:
    """How much one layer's input statistics change across timestep groups."""

    layer_name: str
    channels: int
    scale_ratio: float      # largest / smallest per-group mean square (inf if one is 0)
    shape_variation: float  # largest relative L2 distance of a normalised group from the mean


def layer_variation(name: str, groups: Sequence[Sequence[float]]) -> LayerVariation:
    """The figures of aq_calib_layer_get for one layer's per-group mean squares."""
    channels = len(groups[0])
    means = [sum(g) / channels for g in groups]
    lo, hi = min(means), max(means)
    scale = 1.0 if hi == 0.0 else (math.inf if lo == 0.0 else hi / lo)
    norm = [[v / m if m > 0.0 else 1.0 for v in g] for g, m in zip(groups, means)]
    nbar = [sum(col) / len(norm) for col in zip(*norm)]
    nn = sum(v * v for v in nbar)
    shape = 0.0
    for g in norm:
        d = sum((a - b) ** 2 for a, b in zip(g, nbar))
        shape = max(shape, math.sqrt(d / nn) if nn > 0.0 else 0.0)
    return LayerVariation(name, channels, scale, shape)


class CalibrationResult:
    """The statistics of one calibration run."""

    def __init__(self, stats: dict[str, list[list[float]]], groups: int,
                 timesteps: list[float]) -> None:
        self._stats = stats
        self._groups = groups
        self._timesteps = timesteps
        self._table = None

    @property
    def groups(self) -> int:
        """Number of timestep groups."""
        return self._groups

    @property
    def timesteps(self) -> list[float]:
        """The timesteps the model was run at, in trajectory order."""
        return list(self._timesteps)

    @property
    def layers(self) -> list[str]:
        """Layer (module) names, in the model's order."""
        return list(self._stats)

    def mean_square(self, layer: str, group: int) -> list[float]:
        """The per-input-channel mean square of one layer in one timestep group."""
        return list(self._stats[layer][group])

    @property
    def table(self):
        """A pyarrow Table: layer_name (string), timestep_group (int64), mean_square
        (list<float32>), one row per layer and group; the schema metadata holds
        arrowquant.timestep_groups."""
        if self._table is None:
            import pyarrow as pa

            names, groups, values = [], [], []
            for layer, per_group in self._stats.items():
                for g, ms in enumerate(per_group):
                    names.append(layer)
                    groups.append(g)
                    values.append(ms)
            schema = pa.schema(
                [("layer_name", pa.string()), ("timestep_group", pa.int64()),
                 ("mean_square", pa.list_(pa.float32()))],
                metadata={"arrowquant.timestep_groups": str(self._groups)})
            self._table = pa.table([pa.array(names, pa.string()), pa.array(groups, pa.int64()),
                                    pa.array(values, pa.list_(pa.float32()))], schema=schema)
        return self._table

    def variation(self) -> list[LayerVariation]:
        """Every layer's variation across timestep groups, in the model's order."""
        return [layer_variation(name, g) for name, g in self._stats.items()]

    def most_varying(self, n: int = 10, by: str = "shape_variation") -> list[LayerVariation]:
        """The n layers whose input statistics change most across the trajectory, by
        "shape_variation" (which channels matter) or "scale_ratio" (how large inputs are)."""
        if by not in ("shape_variation", "scale_ratio"):
            raise QuantizationError(f"Invalid by {by!r}. Must be 'shape_variation' or "
                                    "'scale_ratio'")
        return sorted(self.variation(), key=lambda v: getattr(v, by), reverse=True)[:n]


def _layer_types(torch):
    nn = torch.nn
    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def calibrate(model: Any, samples: Any, *, scheduler: Any = None, num_steps: int = 20,
              timesteps: Sequence[Any] | None = None,
              step_fn: Callable[[Any, Any], Any] | None = None, groups: int = 4,
              model_kwargs: dict[str, Any] | None = None,
              generator: Any = None) -> CalibrationResult:
    """Runs model along sampling trajectories and records its layers' input statistics.

    model: a torch.nn.Module (the denoiser; its Linear and Conv layers are recorded).
    samples: the starting noise, a tensor [batch, ...], or a number of samples, drawn from a
    normal distribution with the shape of model.config (sample_size, in_channels) and the
    generator.
    With scheduler (a diffusers scheduler): its set_timesteps(num_steps) gives the timesteps,
    and each step is model(x, t, **model_kwargs) followed by scheduler.step(...).prev_sample
    (scale_model_input is applied when the scheduler has it; a stochastic step draws its noise
    from generator).
    With step_fn: step_fn(x, t) -> next x runs one denoising step (calling model itself),
    over the given timesteps.
    With timesteps alone: model(input, t, **model_kwargs) at each timestep, the input being
    samples (a tensor, or a list of one tensor per timestep, e.g. data noised to each level);
    nothing is stepped.
    groups: the trajectory's steps are cut into this many consecutive groups of (nearly)
    equal length, group 0 holding the first (noisiest) steps; every group has at least one
    step, so there must be at least as many steps as groups.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise QuantizationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise QuantizationError(f"Invalid groups: {groups!r}. Must be an integer >= 1")
    if scheduler is None and step_fn is None and timesteps is None:
        raise QuantizationError("calibrate needs a scheduler, a step_fn with timesteps, or "
                                "timesteps")
    if scheduler is not None and step_fn is not None:
        raise QuantizationError("calibrate takes a scheduler or a step_fn, not both")
    model_kwargs = dict(model_kwargs or {})

    if scheduler is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise QuantizationError(f"Invalid num_steps: {num_steps!r}. Must be >= 1")
        scheduler.set_timesteps(num_steps)
        steps = list(scheduler.timesteps)
        # Stochastic samplers (DDPM) draw noise in step(): from the caller's generator, so
        # that a calibration run is reproducible.
        import inspect

        step_kwargs = ({"generator": generator} if generator is not None and "generator" in
                       inspect.signature(scheduler.step).parameters else {})

        def step(x, t):
            inp = scheduler.scale_model_input(x, t) if hasattr(scheduler,
                                                                "scale_model_input") else x
            out = model(inp, t, **model_kwargs)
            out = out.sample if hasattr(out, "sample") else (
                out[0] if isinstance(out, tuple) else out)
            return scheduler.step(out, t, x, **step_kwargs).prev_sample
    elif step_fn is not None:
        if timesteps is None:
            raise QuantizationError("calibrate with a step_fn needs the timesteps")
        steps = list(timesteps)
        step = step_fn
    else:
        # Timesteps alone: the model is run at each one on the sample inputs (the same for
        # every timestep, or one per timestep), which are not stepped.
        steps = list(timesteps)
        if not steps:
            raise QuantizationError("calibrate needs at least one timestep")
        per_step = isinstance(samples, (list, tuple))
        if per_step and len(samples) != len(steps):
            raise QuantizationError(f"samples has {len(samples)} inputs for {len(steps)} "
                                    "timesteps: give one input per timestep or one for all")
        inputs = list(samples) if per_step else None
        where = [0]

        def step(x, t):
            inp = inputs[where[0]] if inputs is not None else x
            where[0] += 1
            model(inp, t, **model_kwargs)
            return x
    if len(steps) < groups:
        raise QuantizationError(
            f"The trajectory has {len(steps)} steps, fewer than the {groups} timestep groups: "
            "some groups would have no statistics")

    if isinstance(samples, int) and not isinstance(samples, bool):
        cfg = getattr(model, "config", None)
        size = getattr(cfg, "sample_size", None)
        channels = getattr(cfg, "in_channels", None)
        if size is None or channels is None:
            raise QuantizationError("samples must be a tensor when the model has no "
                                    "config.sample_size and config.in_channels")
        hw = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        x = torch.randn((samples, channels) + hw, generator=generator)
    elif isinstance(samples, torch.Tensor):
        x = samples.clone()
    elif (isinstance(samples, (list, tuple)) and scheduler is None and step_fn is None and
          samples and all(isinstance(v, torch.Tensor) for v in samples)):
        x = samples[0]  # one input per timestep (checked above)
    else:
        raise QuantizationError(f"samples must be a tensor or a number of samples, got "
                                f"{type(samples).__name__}")
    if not all(bool(torch.isfinite(v).all()) for v in
               (samples if isinstance(samples, (list, tuple)) else [x])):
        raise QuantizationError("samples contain NaN or Inf")

    kinds = _layer_types(torch)
    sums: dict[str, list[Any]] = {}
    counts: dict[str, list[int]] = {}
    current = [0]
    handles = []

    def hook(name):
        def record(module, args):
            inp = args[0] if args else None
            if not isinstance(inp, torch.Tensor):
                return
            v = inp.detach().to(torch.float64)
            if isinstance(module, torch.nn.Linear):
                v = v.reshape(-1, v.shape[-1])        # channels last
                s, n = (v * v).sum(dim=0), v.shape[0]
            else:
                if v.dim() == module.weight.dim() - 1:  # unbatched convolution input
                    v = v.unsqueeze(0)
                v = v.transpose(0, 1).reshape(v.shape[1], -1)  # channels first
                s, n = (v * v).sum(dim=1), v.shape[1]
            g = current[0]
            if sums[name][g] is None:
                sums[name][g] = s
            else:
                sums[name][g] += s
            counts[name][g] += n
        return record

    for name, module in model.named_modules():
        if isinstance(module, kinds) and name:
            sums[name] = [None] * groups
            counts[name] = [0] * groups
            handles.append(module.register_forward_pre_hook(hook(name)))
    if not sums:
        raise QuantizationError("The model has no Linear or convolution layers to calibrate")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, t in enumerate(steps):
                current[0] = i * groups // len(steps)
                x = step(x, t)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    stats: dict[str, list[list[float]]] = {}
    unused = []
    for name in sums:
        if any(s is None for s in sums[name]):
            unused.append(name)  # a layer the trajectory never ran (e.g. an unused branch)
            continue
        per_group = []
        for g in range(groups):
            ms = (sums[name][g] / counts[name][g]).tolist()
            if not all(math.isfinite(v) for v in ms):
                raise QuantizationError(
                    f"Layer '{name}': the input statistics of timestep group {g} contain NaN "
                    "or Inf (the model diverged during calibration)")
            per_group.append(ms)
        stats[name] = per_group
    if unused:
        import warnings

        warnings.warn(f"{len(unused)} layers never ran during calibration and have no "
                      f"statistics (first: '{unused[0]}'); they are quantized without "
                      "importance", stacklevel=2)
    ts = [float(t) for t in steps]
    return CalibrationResult(stats, groups, ts)


@dataclass(frozen=True)
class ModelCalibration:
    """A torch model to calibrate when quantizing: ``calibration=ModelCalibration(unet, ...)``
    (or a dict of these fields, or the bare module) runs ``calibrate`` with these arguments.

    Without scheduler, step_fn and timesteps, the model is run along a 20-step DDIM trajectory
    of diffusers' default DDPM schedule (1000 training steps, linear betas), which needs
    diffusers; give timesteps= (with samples=) or a scheduler for any other model.
    """

    model: Any
    samples: Any = 8
    timesteps: Sequence[Any] | None = None
    scheduler: Any = None
    step_fn: Callable[[Any, Any], Any] | None = None
    num_steps: int = 20
    groups: int = 4
    model_kwargs: dict[str, Any] | None = None
    seed: int = 0

    def run(self) -> CalibrationResult:
        """Runs the calibration (deterministic for a given seed)."""
        import torch

        scheduler = self.scheduler
        if scheduler is None and self.step_fn is None and self.timesteps is None:
            try:
                from diffusers import DDIMScheduler
            except ImportError:
                raise QuantizationError(
                    "calibration= a torch model without timesteps= or scheduler= runs it along "
                    "diffusers' default DDIM schedule, and diffusers is not installed: give "
                    "timesteps= and samples= (ModelCalibration or a dict)") from None
            scheduler = DDIMScheduler()
        gen = torch.Generator().manual_seed(self.seed)
        return calibrate(self.model, self.samples, scheduler=scheduler, num_steps=self.num_steps,
                         timesteps=self.timesteps, step_fn=self.step_fn, groups=self.groups,
                         model_kwargs=self.model_kwargs, generator=gen)


_SPEC_FIELDS = frozenset(ModelCalibration.__dataclass_fields__)


def calibration_from(calibration: Any) -> Any:
    """calibration= as the quantize entry points take it: a torch.nn.Module, a
    ModelCalibration or a dict with "model" are run (a CalibrationResult comes back); anything
    else is returned as it is."""
    if isinstance(calibration, ModelCalibration):
        return calibration.run()
    if isinstance(calibration, dict) and "model" in calibration:
        unknown = sorted(set(calibration) - _SPEC_FIELDS)
        if unknown:
            raise QuantizationError(
                f"calibration: unknown key {unknown[0]!r}; a model calibration takes "
                + ", ".join(sorted(_SPEC_FIELDS)))
        return ModelCalibration(**calibration).run()
    torch = sys.modules.get("torch")  # a Module needs torch imported already
    if torch is not None and isinstance(calibration, torch.nn.Module):
        return ModelCalibration(calibration).run()
    return calibration
