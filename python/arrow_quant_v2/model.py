"""Model-level entry points of the diffusion mode: quantize a whole checkpoint, validate it.

    from arrow_quant_v2 import quantize_diffusion_model, validate_quality
    result = quantize_diffusion_model("ddpm/", "ddpm.arrow", config="local")
    result.bits_per_weight, result.summary["mean_cosine"], result.tensors[0].rule
    report = validate_quality("ddpm/", "ddpm.arrow")
    assert report.passed, report.failing

Both run the C library (the same code as ``arrowquant quantize --profile`` and ``arrowquant
validate``) over a safetensors file, a sharded checkpoint (``*.safetensors.index.json``) or a
folder (a diffusers pipeline with ``model_index.json``, or one model folder). The work runs with
the GIL released; Ctrl-C stops it and no output file is left behind.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from . import arrow_quant_v2 as _ext
from .arrow_quant_v2 import QuantizationError
from .diffusion import SETTINGS, DiffusionQuantConfig

__all__ = ["quantize_diffusion_model", "validate_quality", "QuantizationResult", "TensorResult",
           "CalibrationLayer", "QualityReport", "LayerQuality"]

_COMPRESSIONS = SETTINGS["compression"]["choices"]  # the library's settings table
_TARGET_BPW_PROFILE = -1.0  # AQ_TARGET_BPW_PROFILE in arrowquant.h


@dataclass(frozen=True)
class TensorResult:
    """What became of one tensor. kept tensors are stored unquantized (bit_width 16 or 32 in the
    file, scheme "raw"); the quality figures are those measured while quantizing."""
    name: str
    kept: bool
    rule: str | None          # the layer rule that decided it ("profile", "norm", "override", ...)
    elements: int
    bytes: int                # codes + scales + zero points (raw bytes when kept)
    bit_width: int | None     # 2, 4 or 8; None when kept
    scheme: str | None
    group_size: int | None
    sqnr_db: float | None
    cosine: float | None
    moved: bool               # the cosine floor raised its bits
    initial_bit_width: int | None
    initial_cosine: float | None

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes / self.elements if self.elements else 0.0


@dataclass(frozen=True)
class CalibrationLayer:
    """How much one layer's input changes along the sampling trajectory (aq_calib_layer_info):
    scale_ratio, the largest over the smallest per-group mean; shape_variation, the largest
    relative distance of a normalised group vector from their mean."""
    name: str
    channels: int
    groups: int
    scale_ratio: float
    shape_variation: float


class QuantizationResult:
    """The outcome of quantize_diffusion_model (read-only)."""

    __slots__ = ("_output_path", "_config", "_summary", "_tensors", "_calibration_layers")

    def __init__(self, output_path: str, config: DiffusionQuantConfig, raw: Mapping[str, Any]):
        layers = raw.get("calibration_layers")
        _init(self, _output_path=output_path, _config=config,
              _summary=MappingProxyType(dict(raw["summary"])),
              _tensors=tuple(_tensor(t) for t in raw["tensors"]),
              _calibration_layers=(None if layers is None else
                                   tuple(CalibrationLayer(**x) for x in layers)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QuantizationResult is read-only (cannot set {name!r})")

    @property
    def output_path(self) -> str:
        return self._output_path

    @property
    def config(self) -> DiffusionQuantConfig:
        return self._config

    @property
    def summary(self) -> Mapping[str, Any]:
        """Totals of the run (aq_model_summary): tensors, quantized, kept, params,
        quantized_params, bytes_in, bytes_out, quantized_bytes, batches, mean_sqnr_db,
        min_sqnr_db, mean_cosine, worst, moved; skipped: the members of a pipeline's
        model_index.json that gave no tensors, component name to why."""
        return self._summary

    @property
    def tensors(self) -> tuple[TensorResult, ...]:
        """One entry per tensor, in model order."""
        return self._tensors

    @property
    def bits_per_weight(self) -> float:
        """Over the whole model: every stored byte (kept tensors too) per parameter."""
        p = self._summary["params"]
        return 8.0 * self._summary["bytes_out"] / p if p else 0.0

    @property
    def budget_bits_per_weight(self) -> float:
        """Over the tensors the budget covers. The default budget (the profile's target_bpw
        not given explicitly): every tensor but the biases, norms and other vectors the rules
        keep as they come (docs/pipeline.md). An explicit target_bpw: with budget_scope
        "profile", the tensors the layer rules leave to the profile; with "model", every
        tensor."""
        if self._config.target_bpw != 0.0 and not self._config.target_bpw_given:
            mine = [t for t in self._tensors
                    if not (t.kept and t.rule in ("bias", "norm", "vector", "not float"))]
            n = sum(t.elements for t in mine)
            return 8.0 * sum(t.bytes for t in mine) / n if n else 0.0
        if self._config.budget_scope == "model":
            return self.bits_per_weight
        mine = [t for t in self._tensors if t.rule == "profile"]
        n = sum(t.elements for t in mine)
        return 8.0 * sum(t.bytes for t in mine) / n if n else 0.0

    @property
    def calibration_layers(self) -> tuple[CalibrationLayer, ...] | None:
        """Every layer of the calibration table, in its order; None without calibration."""
        return self._calibration_layers

    def most_varying_layers(self, n: int = 10, by: str = "shape_variation"
                            ) -> tuple[CalibrationLayer, ...]:
        """The n calibration layers whose inputs change most across timesteps, by
        "shape_variation" or "scale_ratio" (empty without calibration)."""
        if by not in ("shape_variation", "scale_ratio"):
            raise QuantizationError(
                f"Invalid by {by!r}. Must be 'shape_variation' or 'scale_ratio'")
        layers = self._calibration_layers or ()
        return tuple(sorted(layers, key=lambda x: getattr(x, by), reverse=True)[:n])

    def __repr__(self) -> str:
        s = self._summary
        return (f"QuantizationResult({self._output_path!r}, profile={self._config.profile!r}, "
                f"tensors={s['tensors']}, quantized={s['quantized']}, "
                f"bits_per_weight={self.bits_per_weight:.3f}, "
                f"mean_cosine={s['mean_cosine']:.6f})")


@dataclass(frozen=True)
class LayerQuality:
    """One tensor of a validation. status: "compared", "missing in A" (only the quantized
    model has it), "missing in B" (the quantized model lacks it), "shapes differ", "identical
    bytes" or "bytes differ" (non-float tensors). The figures are None unless compared."""
    name: str
    status: str
    passed: bool
    elements: int
    sqnr_db: float | None
    cosine: float | None
    max_abs_error: float | None
    original: Mapping[str, Any] | None   # dtype, scheme (None for safetensors), bit_width
    quantized: Mapping[str, Any] | None


class QualityReport:
    """The outcome of validate_quality (read-only): passed is True when every tensor of the
    original is in the quantized model with its shape and a cosine at or above min_cosine, and
    the quantized model has no tensor the original lacks."""

    __slots__ = ("_layers", "_summary", "_failing")

    def __init__(self, raw: Mapping[str, Any]):
        layers = []
        for t in raw["tensors"]:
            ok = t["status"] in ("compared", "identical bytes") and not t["below_min_cosine"]
            layers.append(LayerQuality(
                name=t["name"], status=t["status"], passed=ok, elements=t["elements"],
                sqnr_db=t["sqnr_db"], cosine=t["cosine"], max_abs_error=t["max_abs_error"],
                original=_ro(t["original"]), quantized=_ro(t["quantized"])))
        _init(self, _layers=tuple(layers), _summary=MappingProxyType(dict(raw["summary"])),
              _failing=tuple(x.name for x in layers if not x.passed))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QualityReport is read-only (cannot set {name!r})")

    @property
    def passed(self) -> bool:
        return not self._failing

    @property
    def failing(self) -> tuple[str, ...]:
        """Names of the tensors below the floor, missing on a side or mismatched."""
        return self._failing

    @property
    def layers(self) -> tuple[LayerQuality, ...]:
        """Every tensor, in the original's order, then the quantized model's extra ones."""
        return self._layers

    @property
    def min_cosine(self) -> float:
        """The floor the tensors were held to."""
        return self._summary["floor"]

    @property
    def floor_source(self) -> str:
        """Where the floor came from: "argument", "file" (the quantized file's recorded
        floor), "profile" (its profile's) or "default" (the local profile's)."""
        return self._summary["floor_source"]

    @property
    def summary(self) -> Mapping[str, Any]:
        """Totals: tensors, compared, missing_in_original, missing_in_quantized, mismatched,
        mean_sqnr_db, min_sqnr_db, mean_cosine, min_cosine (the lowest seen), worst,
        below_min_cosine, floor, floor_source."""
        return self._summary

    def __repr__(self) -> str:
        s = self._summary
        return (f"QualityReport(passed={self.passed}, tensors={s['tensors']}, "
                f"min_cosine={s['floor']}, lowest_cosine={s['min_cosine']:.6f}, "
                f"failing={len(self._failing)})")


def _init(obj: Any, **fields: Any) -> None:
    for k, v in fields.items():
        object.__setattr__(obj, k, v)


def _ro(d: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if d is None else MappingProxyType(dict(d))


def _tensor(t: Mapping[str, Any]) -> TensorResult:
    kept = bool(t["kept"])
    return TensorResult(
        name=t["name"], kept=kept, rule=t["rule"], elements=t["elements"], bytes=t["bytes"],
        bit_width=None if kept else t["bit_width"], scheme=None if kept else t["scheme"],
        group_size=None if kept else t["group_size"],
        sqnr_db=None if kept else t["sqnr_db"], cosine=None if kept else t["cosine"],
        moved=False if kept else bool(t["moved"]),
        initial_bit_width=None if kept else t["initial_bit_width"],
        initial_cosine=None if kept else t["initial_cosine"])


def _rule_choices(cfg: DiffusionQuantConfig) -> dict[str, Any]:
    """The choices the extension builds the layer rules, floor and budget from, for both the
    model entry point and the batch methods."""
    # The profile's target_bpw, not given explicitly, is the default mode's size
    # (AQ_TARGET_BPW_PROFILE, as the command's --profile default): that figure over every
    # tensor of two or more dimensions, the rules' treatments preferences within it.
    target = cfg.target_bpw
    if target != 0.0 and not cfg.target_bpw_given:
        target = _TARGET_BPW_PROFILE
    return {"profile": cfg.profile, "family": cfg.family, "keep": list(cfg.keep),
            "bits_for": [f"{p}={v}" for p, v in cfg.bits_for.items()],
            "bit_width": cfg.bit_width, "scheme": cfg.scheme, "group_size": cfg.group_size,
            "min_cosine": cfg.min_cosine, "target_bpw": target,
            "calibration_combine": cfg.calibration_combine}


def _config(config: Any) -> DiffusionQuantConfig:
    if config is None:
        return DiffusionQuantConfig("local")
    if isinstance(config, str):
        return DiffusionQuantConfig.from_profile(config)
    if isinstance(config, DiffusionQuantConfig):
        return config
    raise TypeError("config must be a DiffusionQuantConfig, a profile name ('edge', 'local', "
                    f"'cloud') or None, not {type(config).__name__}")


def _path(p: Any, what: str) -> str:
    try:
        s = os.fsdecode(os.fspath(p))
    except TypeError:
        raise TypeError(f"{what} must be a path (str or os.PathLike), not "
                        f"{type(p).__name__}") from None
    return s


def _must_exist(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def _calibration(calibration: Any) -> Any:
    if calibration is None:
        return None
    from .calibration import calibration_from

    calibration = calibration_from(calibration)  # a torch model: calibrated here
    if isinstance(calibration, (str, bytes, os.PathLike)):
        path = _path(calibration, "calibration")
        _must_exist(path)
        return path
    table = getattr(type(calibration), "table", None)
    if isinstance(table, property):
        # A CalibrationResult (arrow_quant_v2.calibrate): its Arrow table.
        return calibration.table
    if hasattr(calibration, "__arrow_c_stream__"):
        return calibration
    raise TypeError("calibration must be a CalibrationResult (arrow_quant_v2.calibrate), an "
                    "Arrow table (any object with __arrow_c_stream__), the path of an Arrow "
                    "IPC file, or a torch model to calibrate (a torch.nn.Module, a "
                    "ModelCalibration or a dict with 'model'), not "
                    f"{type(calibration).__name__}")


def quantize_diffusion_model(model_path: Any, output_path: Any,
                             config: DiffusionQuantConfig | str | None = None,
                             calibration: Any = None,
                             progress_callback: Callable[[Mapping[str, Any]], Any] | None = None,
                             *, threads: int = 0, compression: str = "zstd"
                             ) -> QuantizationResult:
    """Quantizes a model into an arrowquant model file (Arrow IPC, docs/format.md) with the
    diffusion layer rules.

    model_path: a .safetensors file, a *.safetensors.index.json or a folder (a diffusers
    pipeline or one model's folder). output_path: the .arrow file to write; it is written under
    a temporary name and renamed only when complete.
    config: a DiffusionQuantConfig, a profile name ("edge", "local", "cloud"), or None (the
    local profile). Its profile, family, bit_width, scheme and group_size decide the layer
    rules; keep and bits_for override them; min_cosine raises a tensor's bits when it falls
    below the floor; target_bpw is the size budget over budget_scope (the profile's own figure,
    the default, means the profile's own size on this model, as ``arrowquant quantize
    --profile`` does; 0 means no budget).
    calibration: time-aware calibration statistics (a CalibrationResult from
    arrow_quant_v2.calibrate, any Arrow table with layer_name, timestep_group, mean_square, or
    the path of an Arrow IPC file holding one): the importance of each weight for the searched
    and two-level schemes. A table for layers the model lacks, missing timestep groups or NaN
    statistics raise QuantizationError.
    progress_callback: called on this thread after each tensor with a mapping (tensors_done,
    tensors_total, bytes_done, bytes_total, current, phase: "planning" during the budget's
    measuring pass, else "quantizing"). Returning False stops the run: QuantizationError with
    status 'AQ_CANCELLED'. An exception it raises, or Ctrl-C (KeyboardInterrupt), stops the
    run too and is raised. No output file is left behind when the run stops or fails.
    threads: worker threads (0: one per CPU); the output does not depend on it.
    compression: the model file's IPC body compression: "zstd" (the default, as the
    command's), "lz4" or "none".

    Errors: FileNotFoundError / OSError for paths, QuantizationError (a ValueError) for bad
    configurations and inputs, TypeError for arguments of the wrong kind.
    """
    cfg = _config(config)
    src = _path(model_path, "model_path")
    dst = _path(output_path, "output_path")
    _must_exist(src)
    if compression not in _COMPRESSIONS:
        raise QuantizationError(
            f"Unknown compression {compression!r}. Must be one of: {', '.join(_COMPRESSIONS)}")
    if progress_callback is not None and not callable(progress_callback):
        raise TypeError("progress_callback must be callable or None")
    calib = _calibration(calibration)
    choices = _rule_choices(cfg)
    if choices["target_bpw"] == _TARGET_BPW_PROFILE:
        # Not given: the extension applies the profile's budget as the command does.
        del choices["target_bpw"]
    raw = _ext._quantize_model(
        src, dst, **choices, compression=compression, threads=threads,
        calibration=calib, progress=progress_callback, budget_scope=cfg.budget_scope)
    return QuantizationResult(dst, cfg, raw)


def validate_quality(original_path: Any, quantized_path: Any,
                     min_cosine: float | None = None) -> QualityReport:
    """Compares a quantized model with its original, tensor by tensor (the library's
    aq_model_compare, as ``arrowquant validate``). quantized_path may be an arrowquant model
    file or a dequantized safetensors file or folder; either side a file, a sharded index or a
    folder.

    min_cosine: the floor each tensor's cosine similarity must reach; None: the floor the
    quantized model file records, else its profile's, else the local profile's (0.99).
    Returns a QualityReport; passed is False when a tensor falls below, is missing on either
    side, or has another shape. Errors: FileNotFoundError / OSError for paths,
    QuantizationError for unreadable models or a floor the settings table's min_cosine refuses
    (it must lie in [0, 1)).
    """
    a = _path(original_path, "original_path")
    b = _path(quantized_path, "quantized_path")
    _must_exist(a)
    _must_exist(b)
    if min_cosine is not None:
        if isinstance(min_cosine, bool) or not isinstance(min_cosine, (int, float)):
            raise TypeError(f"min_cosine must be a number or None, not "
                            f"{type(min_cosine).__name__}")
        # The bounds are the settings table's (0: no floor), as the command's --min-accuracy.
        min_cosine = _ext._setting_check("min_cosine", repr(float(min_cosine)))
    return QualityReport(_ext._compare_models(a, b, min_cosine))


def _batch_spec(config: Any, calibration: Any) -> dict[str, Any]:
    """config= and calibration= of ArrowQuantV2's quantize methods as plain values for the
    extension (called from C): the layer rules' choices when config is given (None: no rules),
    and the calibration as a path or an Arrow stream object."""
    spec: dict[str, Any] = {"calibration": _calibration(calibration),
                            "calibration_combine": "max", "rules": config is not None}
    if config is None:
        return spec
    spec.update(_rule_choices(_config(config)))
    return spec


@dataclass(frozen=True)
class GGUFTensorResult:
    """One tensor of quantize_gguf: its ggml type, why it got it ("type", "1-D", "block", or
    the layer rule's name), its size in the file and the quality of its decoded floats."""
    name: str
    type: str
    reason: str
    elements: int
    bytes: int
    sqnr_db: float
    cosine: float


@dataclass(frozen=True)
class GGUFResult:
    """The outcome of quantize_gguf."""
    output_path: str
    gguf_type: str
    summary: Mapping[str, Any]
    tensors: tuple[GGUFTensorResult, ...]

    @property
    def bits_per_weight(self) -> float:
        """Tensor data of the whole file (header excluded) per parameter."""
        params = sum(t.elements for t in self.tensors)
        data = sum(t.bytes for t in self.tensors)
        return 8.0 * data / params if params else 0.0


def quantize_gguf(model_path: Any, output_path: Any, gguf_type: str = "Q4_K",
                  config: DiffusionQuantConfig | str | None = None, calibration: Any = None,
                  *, threads: int = 0, architecture: str | None = None,
                  name: str | None = None, gguf_search: str | None = None) -> GGUFResult:
    """Writes a model as a GGUF file (docs/gguf.md) for ComfyUI-GGUF, stable-diffusion.cpp and
    diffusers' GGUFQuantizationConfig, with the library's own searched encoders in ggml's block
    layouts.

    model_path: a .safetensors file, a *.safetensors.index.json or a folder, as for
    quantize_diffusion_model. output_path: the .gguf file, written under a temporary name and
    renamed only when complete.
    gguf_type: the type of quantized tensors: Q8_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K, Q5_0, Q4_0,
    BF16, F16 or F32.
    config: None: every tensor of two or more dimensions gets gguf_type (ComfyUI-GGUF's
    convention). A DiffusionQuantConfig or profile name: its layer rules choose per tensor
    (kept tensors F16, the 8-bit rules Q8_0, the profile's tensors gguf_type); keep and bits_for
    override them. Either way 1-D tensors are F32, and a tensor whose innermost dimension is not
    a multiple of the block is Q8_0 (a K type, rows of whole 32s) or F16 (docs/gguf.md).
    calibration: importance for the searched encoders, as for quantize_diffusion_model.
    architecture: general.architecture (None: detected from the names; "" writes none).
    gguf_search: "full" (the default) searches each Q8_0, Q5_0 and Q4_0 block's scale for the
    least error; "none" rounds as ggml's reference quantizer does (ggml's bytes, at memory
    speed; importance unused). None: the settings table's default, "full".

    Errors: FileNotFoundError / OSError for paths, QuantizationError (a ValueError) for bad
    types, configurations and inputs.
    """
    src = _path(model_path, "model_path")
    dst = _path(output_path, "output_path")
    _must_exist(src)
    if not isinstance(gguf_type, str):
        raise TypeError(f"gguf_type must be a str, not {type(gguf_type).__name__}")
    kwargs: dict[str, Any] = {}
    if config is not None:
        cfg = _config(config)
        kwargs = {"profile": cfg.profile, "family": cfg.family, "keep": list(cfg.keep),
                  "bits_for": [f"{p}={v}" for p, v in cfg.bits_for.items()],
                  "calibration_combine": cfg.calibration_combine}
    if gguf_search is not None:
        kwargs["gguf_search"] = gguf_search
    raw = _ext._quantize_gguf(src, dst, gguf_type, threads=threads,
                              calibration=_calibration(calibration), architecture=architecture,
                              name=name, **kwargs)
    return GGUFResult(dst, gguf_type.upper(), MappingProxyType(dict(raw["summary"])),
                      tuple(GGUFTensorResult(**t) for t in raw["tensors"]))


def dequantize_gguf(gguf_path: Any, output_path: Any, dtype: str = "f32") -> None:
    """Writes a GGUF file's tensors as one safetensors file: F32, F16 and BF16 tensors as they
    are, block types decoded (the floats of ggml's reference decoder) to dtype ("f32", "f16",
    "bf16"). The string metadata goes into __metadata__."""
    src = _path(gguf_path, "gguf_path")
    _must_exist(src)
    _ext._gguf_to_safetensors(src, _path(output_path, "output_path"), dtype)
