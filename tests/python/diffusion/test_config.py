"""DiffusionQuantConfig: validated when constructed, read-only, profiles equal to the C
library's (aq_profile_get), the same messages as the C layer rules."""
import pytest

import aqdiff_ctypes
from arrow_quant_v2 import DiffusionQuantConfig, QuantizationError
from arrow_quant_v2.diffusion import PROFILES


@pytest.mark.parametrize("name", ["edge", "local", "cloud"])
def test_profiles_are_the_c_librarys(aqd, name):
    st, p, _ = aqdiff_ctypes.profile(aqd, name)
    assert st == 0
    config = DiffusionQuantConfig.from_profile(name)
    assert config.profile == name == p.name.decode()
    assert config.bit_width == p.bit_width
    assert config.scheme == aqdiff_ctypes.SCHEMES[p.scheme]
    assert config.group_size == p.group_size
    assert config.min_cosine == p.min_cosine
    assert config.target_bpw == p.target_bpw
    assert config.keep == () and dict(config.bits_for) == {} and config.family == "auto"


def test_profile_table_has_every_c_profile(aqd):
    assert list(PROFILES) == ["edge", "local", "cloud"]
    st, _, message = aqdiff_ctypes.profile(aqd, "mobile")
    assert st != 0
    with pytest.raises(QuantizationError) as e:
        DiffusionQuantConfig.from_profile("mobile")
    assert str(e.value) == message == (
        "Unknown profile 'mobile'. Known profiles: edge, local, cloud")


def test_defaults_and_explicit_choices():
    c = DiffusionQuantConfig()
    assert (c.profile, c.bit_width, c.scheme, c.group_size) == ("local", 4, "kquant", 512)
    c = DiffusionQuantConfig("edge", scheme="affine_search", group_size=64, min_cosine=0,
                             target_bpw=0, keep=["*norm*"], bits_for={"conv_in.*": 8},
                             family="unet", calibration_combine="mean")
    assert (c.bit_width, c.scheme, c.group_size, c.min_cosine, c.target_bpw) == (
        2, "affine_search", 64, 0.0, 0.0)
    assert c.keep == ("*norm*",) and dict(c.bits_for) == {"conv_in.*": 8}
    assert c.family == "unet" and c.calibration_combine == "mean"
    assert DiffusionQuantConfig("local", scheme="affine").group_size == 128
    assert c == DiffusionQuantConfig(**c.to_dict()) and hash(c) == hash(c.replace())
    assert "DiffusionQuantConfig(profile='edge'" in repr(c)


def test_bits_for_as_command_line_strings():
    c = DiffusionQuantConfig(bits_for=["time_embedding.*=8", "odd=name=2", "*attn*=keep",
                                       "x=16"])
    assert dict(c.bits_for) == {"time_embedding.*": 8, "odd=name": 2, "*attn*": "keep",
                                "x": "keep"}


def test_read_only():
    c = DiffusionQuantConfig()
    with pytest.raises(AttributeError):
        c.bit_width = 8
    with pytest.raises(AttributeError):
        c.anything = 1
    with pytest.raises(TypeError):
        c.bits_for["x"] = 2
    assert c.replace(bit_width=8).bit_width == 8 and c.bit_width == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"bit_width": 3}, "Invalid bit_width: 3. Must be 2, 4, or 8"),
    ({"bit_width": "4"}, "bit_width must be an integer, got str"),
    ({"scheme": "gptq"}, "Invalid scheme 'gptq'. Must be one of: affine, affine_search, kquant"),
    ({"group_size": 128}, "Invalid group_size: 128. The kquant scheme always uses 512"),
    ({"scheme": "affine", "group_size": 4}, "Invalid group_size: 4. Must be between 8"),
    ({"min_cosine": 1.0}, "Invalid min_cosine: 1.0. Must be in [0, 1)"),
    ({"min_cosine": float("nan")}, "min_cosine must be finite"),
    ({"min_cosine": "high"}, "min_cosine must be a number, got str"),
    ({"target_bpw": 1.5}, "Invalid target_bpw: 1.5. Must be 0 (off) or between 2 and 32"),
    ({"family": "sdxl"}, "Invalid family 'sdxl'. Must be one of: auto, generic"),
    ({"calibration_combine": "min"}, "Invalid calibration_combine 'min'"),
    ({"keep": [""]}, "keep: override pattern is empty"),
    ({"keep": [3]}, "keep patterns must be strings, got int"),
    ({"bits_for": {"x": 3}}, "Invalid bit width 3 for override 'x'. Must be 2, 4, 8, or keep"),
    ({"bits_for": ["x"]}, "Invalid override 'x': expected PATTERN=BITS"),
    ({"bits_for": ["=4"]}, "Invalid override '=4': expected PATTERN=BITS"),
])
def test_refused(kwargs, message):
    with pytest.raises(QuantizationError) as e:
        DiffusionQuantConfig(**kwargs)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)


def test_contradictory_overrides_as_the_c_library_says(aqd):
    with pytest.raises(QuantizationError) as e:
        DiffusionQuantConfig(keep=["time_embedding.*"], bits_for={"time_embedding.*": 4})
    assert str(e.value) == aqdiff_ctypes.override_message(aqd, "time_embedding.*", 16, 4)
    assert str(e.value) == ("Contradictory overrides: pattern 'time_embedding.*' is given both "
                            "keep and 4 bits")
    with pytest.raises(QuantizationError) as e:
        DiffusionQuantConfig(bits_for=["a*=2", "a*=8"])
    assert str(e.value) == aqdiff_ctypes.override_message(aqd, "a*", 2, 8)
    # The same treatment twice is no contradiction.
    assert DiffusionQuantConfig(keep=["a*"], bits_for=["a*=keep"]).keep == ("a*",)


@pytest.mark.parametrize("name", ["edge", "local", "cloud"])
def test_quantize_kwargs_drive_the_module(name):
    import numpy as np

    from arrow_quant_v2 import ArrowQuantV2

    config = DiffusionQuantConfig.from_profile(name)
    kwargs = config.quantize_kwargs()
    assert kwargs == {"bit_width": config.bit_width, "group_size": 512, "scheme": "kquant",
                      "min_accuracy": config.min_cosine, "target_bpw": config.target_bpw}
    w = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    result = ArrowQuantV2(mode="diffusion").quantize_batch({"w": w}, **kwargs)
    assert result.num_rows == 1
    assert result.column("bit_width")[0].as_py() == config.bit_width
    # kquant at the profile's width: exactly its bits per weight (full super-blocks).
    nbytes = (len(result.column("quantized_data")[0].as_py()) +
              8 * len(result.column("scales")[0].as_py()))
    assert nbytes * 8 / w.size == pytest.approx(config.target_bpw)
    plain = DiffusionQuantConfig(name, min_cosine=0, target_bpw=0).quantize_kwargs()
    assert "min_accuracy" not in plain and "target_bpw" not in plain


def test_target_bpw_given_or_profile_default():
    """The profile's figure by default (the model entry points then budget the profile's own
    size); a given figure, even the same number, is the user's strict budget, and replace()
    keeps whichever it was."""
    d = DiffusionQuantConfig("local")
    g = DiffusionQuantConfig("local", target_bpw=4.5)
    assert d.target_bpw == g.target_bpw == 4.5
    assert not d.target_bpw_given and g.target_bpw_given
    assert d != g and d.to_dict()["target_bpw"] is None and g.to_dict()["target_bpw"] == 4.5
    assert not d.replace(min_cosine=0.5).target_bpw_given
    assert g.replace(min_cosine=0.5).target_bpw_given
    assert d.replace(target_bpw=4.5) == g
