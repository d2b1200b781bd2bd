"""Diffusion mode: deployment profiles and the quantization choices of one run.

    from arrow_quant_v2 import DiffusionQuantConfig
    config = DiffusionQuantConfig.from_profile("edge", keep=["*attn2*"])
    config.bit_width, config.scheme, config.min_cosine, config.target_bpw   # 2, 'kquant', ...

A configuration is checked when it is made and never changes afterwards (``replace`` returns a
changed copy). The profiles, the settings' bounds, choices and defaults, and the checks are the
C library's settings table (``arrowquant.h``, ``aq_setting_at``), read at import:
a setting added there is known here.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from .arrow_quant_v2 import QuantizationError, _profiles, _settings, _settings_resolve

__all__ = ["DiffusionQuantConfig", "PROFILES", "FAMILIES", "SCHEMES", "BUDGET_SCOPES",
           "SETTINGS"]

# name -> {type, lower, upper, choices, default, flag, help, ...}: the library's table.
SETTINGS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {d["name"]: MappingProxyType(d) for d in _settings()})
# name -> (bit_width, scheme, group_size, min_cosine, target_bpw): aq_profile_at.
PROFILES: Mapping[str, tuple[int, str, int, float, float]] = MappingProxyType(_profiles())

# aq_family names: "auto" detects each component's family from its names.
FAMILIES = SETTINGS["family"]["choices"]
SCHEMES = SETTINGS["scheme"]["choices"]
_COMBINE = SETTINGS["calibration_combine"]["choices"]
# What a size budget covers (aq_budget_scope): the tensors that follow the profile, or the
# whole model (kept and rule-fixed tensors counted in the budget).
BUDGET_SCOPES = SETTINGS["budget_scope"]["choices"]
_KEEP = "keep"


def _profile(name: Any) -> str:
    if not isinstance(name, str) or name not in PROFILES:
        raise QuantizationError(
            f"Unknown profile {name!r}. Known profiles: {', '.join(PROFILES)}")
    return name


def _text(value: Any) -> str:
    """A value as the library's settings read it from text."""
    return repr(value) if isinstance(value, float) else str(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise QuantizationError(f"{what} must be an integer, got {type(value).__name__}")
    return value.__index__()


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise QuantizationError(
                f"{what} must be a number, got {type(value).__name__}") from None
    value = float(value)
    if not math.isfinite(value):
        raise QuantizationError(f"{what} must be finite, got {value}")
    return value


def _bits(value: Any, pattern: str) -> int | str:
    if value == _KEEP or (not isinstance(value, bool) and value == 16):
        return _KEEP
    if isinstance(value, bool) or value not in (2, 4, 8):
        raise QuantizationError(
            f"Invalid bit width {value!r} for override {pattern!r}. Must be 2, 4, 8, or keep")
    return int(value)


def _pattern(p: Any, what: str) -> str:
    if not isinstance(p, str):
        raise QuantizationError(f"{what} patterns must be strings, got {type(p).__name__}")
    if not p:
        raise QuantizationError(f"{what}: override pattern is empty")
    return p


class DiffusionQuantConfig:
    """The choices of one diffusion-mode quantization run, validated when constructed.

    profile: "edge" (2 bits), "local" (4 bits, the default) or "cloud" (8 bits); it gives the
    defaults of bit_width, scheme, group_size, min_cosine and target_bpw, each of which may be
    given explicitly instead. min_cosine 0 means no quality floor, target_bpw 0 no budget.
    keep: glob patterns of tensors stored unquantized (16 bits); bits_for: {pattern: 2, 4, 8 or
    "keep"} (or an iterable of "PATTERN=BITS" strings, the command line's form). A pattern
    given two different treatments is refused; so is a tensor that two patterns treat
    differently, when the layer rules meet it. family: "auto" or a family name.
    calibration_combine: how timestep groups are combined ("max" or "mean").
    budget_scope: what target_bpw covers: "profile" (the tensors that follow the profile, the
    default) or "model" (every float tensor, kept and 8-bit ones included).
    """

    __slots__ = ("_profile", "_bit_width", "_scheme", "_group_size", "_min_cosine",
                 "_target_bpw", "_keep", "_bits_for", "_family", "_calibration_combine",
                 "_budget_scope", "_bpw_given")

    def __init__(self, profile: str = "local", *, bit_width: int | None = None,
                 scheme: str | None = None, group_size: int | None = None,
                 min_cosine: float | None = None, target_bpw: float | None = None,
                 keep: Iterable[str] = (), bits_for: Mapping[str, Any] | Iterable[str] = (),
                 family: str = "auto", calibration_combine: str = "max",
                 budget_scope: str = "profile") -> None:
        given: dict[str, str] = {}
        if bit_width is not None:
            given["bit_width"] = _text(_int(bit_width, "bit_width"))
        if scheme is not None:
            given["scheme"] = _text(scheme)
        if group_size is not None:
            given["group_size"] = _text(_int(group_size, "group_size"))
        if min_cosine is not None:
            given["min_cosine"] = _text(_float(min_cosine, "min_cosine"))
        if target_bpw is not None:
            given["target_bpw"] = _text(_float(target_bpw, "target_bpw"))
        given["family"] = _text(family)
        given["calibration_combine"] = _text(calibration_combine)
        given["budget_scope"] = _text(budget_scope)
        # The library applies the profile to what was not given and checks it all together.
        v = _settings_resolve(_profile(profile), given)
        bits, sch, group = v["bit_width"], v["scheme"], v["group_size"]
        cos, bpw = v["min_cosine"], v["target_bpw"]
        if isinstance(keep, str):
            keep = [keep]
        overrides: dict[str, int | str] = {}

        def add(pattern: str, value: int | str) -> None:
            old = overrides.get(pattern)
            if old is not None and old != value:
                def say(v: int | str) -> str:
                    return "keep" if v == _KEEP else f"{v} bits"
                raise QuantizationError(
                    f"Contradictory overrides: pattern {pattern!r} is given both {say(old)} "
                    f"and {say(value)}")
            overrides[pattern] = value

        keep_list = []
        for p in keep:
            p = _pattern(p, "keep")
            if p not in keep_list:
                keep_list.append(p)
            add(p, _KEEP)
        if isinstance(bits_for, str):
            bits_for = [bits_for]
        if isinstance(bits_for, Mapping):
            items = list(bits_for.items())
        else:
            items = []
            for spec in bits_for:
                if not isinstance(spec, str) or "=" not in spec:
                    raise QuantizationError(
                        f"Invalid override {spec!r}: expected PATTERN=BITS "
                        "(BITS 2, 4, 8 or keep)")
                pattern, _, value = spec.rpartition("=")
                if not pattern or not value:
                    raise QuantizationError(
                        f"Invalid override {spec!r}: expected PATTERN=BITS "
                        "(BITS 2, 4, 8 or keep)")
                items.append((pattern, int(value) if value.isdigit() else value))
        bits_map: dict[str, int | str] = {}
        for pattern, value in items:
            pattern = _pattern(pattern, "bits_for")
            v = _bits(value, pattern)
            add(pattern, v)
            bits_map[pattern] = v
        self._profile = profile
        self._bit_width = bits
        self._scheme = sch
        self._group_size = group
        self._min_cosine = cos
        self._target_bpw = bpw
        self._bpw_given = target_bpw is not None
        self._keep = tuple(keep_list)
        self._bits_for = MappingProxyType(bits_map)
        self._family = family
        self._calibration_combine = calibration_combine
        self._budget_scope = budget_scope

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "DiffusionQuantConfig":
        """The configuration of profile `name` ("edge", "local", "cloud"); keyword arguments
        replace single choices, as in the constructor."""
        return cls(name, **overrides)

    def replace(self, **changes: Any) -> "DiffusionQuantConfig":
        """A copy with some choices changed, validated like a new configuration."""
        args = self.to_dict()
        args.update(changes)
        return DiffusionQuantConfig(**args)

    def to_dict(self) -> dict[str, Any]:
        """Every choice, as keyword arguments of the constructor."""
        return {"profile": self._profile, "bit_width": self._bit_width,
                "scheme": self._scheme, "group_size": self._group_size,
                "min_cosine": self._min_cosine,
                "target_bpw": self._target_bpw if self._bpw_given else None,
                "keep": list(self._keep), "bits_for": dict(self._bits_for),
                "family": self._family, "calibration_combine": self._calibration_combine,
                "budget_scope": self._budget_scope}

    def quantize_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ArrowQuantV2's quantize methods for these choices
        (bit_width, group_size, scheme, min_accuracy, target_bpw; a floor or budget of 0 is
        left out). The layer rules and overrides are not among them: they need the
        extension's rules entry points."""
        kwargs: dict[str, Any] = {"bit_width": self._bit_width, "group_size": self._group_size,
                                  "scheme": self._scheme}
        if self._min_cosine > 0.0:
            kwargs["min_accuracy"] = self._min_cosine
        if self._target_bpw > 0.0:
            kwargs["target_bpw"] = self._target_bpw
        return kwargs

    @property
    def profile(self) -> str:
        """The profile the defaults came from."""
        return self._profile

    @property
    def bit_width(self) -> int:
        """Bits of the tensors that follow the profile: 2, 4 or 8."""
        return self._bit_width

    @property
    def scheme(self) -> str:
        """"affine", "affine_search" or "kquant"."""
        return self._scheme

    @property
    def group_size(self) -> int:
        """Elements per group (512 for kquant's super-blocks)."""
        return self._group_size

    @property
    def min_cosine(self) -> float:
        """The quality floor per tensor (0: none)."""
        return self._min_cosine

    @property
    def target_bpw(self) -> float:
        """The size budget in bits per weight over the tensors that follow the profile
        (0: none)."""
        return self._target_bpw

    @property
    def target_bpw_given(self) -> bool:
        """True when target_bpw was given; False when it is the profile's figure. The
        model-level entry points then budget the profile's own size on the model (the size
        its bits and floor give, which on rows of partial kquant super-blocks is above the
        figure), as `arrowquant quantize --profile` does by default; a given target_bpw, even
        the profile's figure, is a strict budget."""
        return self._bpw_given

    @property
    def keep(self) -> tuple[str, ...]:
        """Glob patterns of tensors kept unquantized."""
        return self._keep

    @property
    def bits_for(self) -> Mapping[str, int | str]:
        """{pattern: 2, 4, 8 or "keep"} overrides (read-only)."""
        return self._bits_for

    @property
    def family(self) -> str:
        """The model family, or "auto"."""
        return self._family

    @property
    def calibration_combine(self) -> str:
        """How timestep groups of a calibration table are combined: "max" or "mean"."""
        return self._calibration_combine

    @property
    def budget_scope(self) -> str:
        """What target_bpw covers: "profile" or "model"."""
        return self._budget_scope

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiffusionQuantConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self._profile, self._bit_width, self._scheme, self._group_size,
                     self._min_cosine, self._target_bpw, self._bpw_given, self._keep,
                     tuple(sorted(self._bits_for.items(), key=lambda kv: kv[0])),
                     self._family, self._calibration_combine, self._budget_scope))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"DiffusionQuantConfig({inner})"
