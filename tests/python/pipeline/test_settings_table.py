"""The library's settings table is the one source of the command's flags, DiffusionQuantConfig
and the extension's checks: each is compared with the table read through the extension."""
import inspect

import pytest

import arrow_quant_v2
from arrow_quant_v2 import DiffusionQuantConfig, QuantizationError
from arrow_quant_v2.arrow_quant_v2 import _profiles, _setting_check, _settings
from arrow_quant_v2.diffusion import PROFILES, SETTINGS

TABLE = {d["name"]: d for d in _settings()}


def _outside(d):
    """Values the setting refuses, as text."""
    if d["type"] == "choice":
        return ["no_such_choice"]
    if d["type"] == "bool":
        return ["2"]
    if d["type"] == "int":
        bad = [repr(int(d["lower"]) - 1), repr(int(d["upper"]) + 1)]
        if d["choices"]:
            allowed = {int(c) for c in d["choices"]}
            bad += [str(x) for x in range(int(d["lower"]), int(d["upper"]) + 1)
                    if x not in allowed][:1]
        return bad
    bad = [repr(d["upper"] + 1.0)]
    if d["lower"] > 0:
        bad.append(repr(d["lower"] / 2))
    if d["upper_open"]:
        bad.append(repr(d["upper"]))
    return bad


def test_the_python_side_reads_the_table():
    assert dict(SETTINGS) == TABLE
    assert dict(PROFILES) == _profiles()
    # Every choice DiffusionQuantConfig takes is a setting; every setting a profile gives is
    # one of its keywords.
    params = set(inspect.signature(DiffusionQuantConfig.__init__).parameters) - {
        "self", "keep", "bits_for"}
    assert params <= set(TABLE), params - set(TABLE)
    assert {n for n, d in TABLE.items() if d["in_profile"]} <= params
    assert arrow_quant_v2.diffusion.SCHEMES == TABLE["scheme"]["choices"]
    assert arrow_quant_v2.diffusion.FAMILIES == TABLE["family"]["choices"]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_bounds_errors_name_the_setting(name):
    d = TABLE[name]
    assert _setting_check(name, d["default"]) is not None
    for bad in _outside(d):
        with pytest.raises(QuantizationError) as e:
            _setting_check(name, bad)
        assert f"Invalid {name}" in str(e.value), (bad, str(e.value))


def test_config_agrees_with_the_table():
    for name in ("bit_width", "group_size", "min_cosine", "target_bpw", "scheme", "family",
                 "calibration_combine", "budget_scope"):
        d = TABLE[name]
        for bad in _outside(d):
            value = bad if d["type"] == "choice" else (
                int(bad) if d["type"] == "int" else float(bad))
            kwargs = {name: value}
            if name == "group_size":
                kwargs["scheme"] = "affine"
            with pytest.raises(QuantizationError) as e:
                DiffusionQuantConfig(**kwargs)
            with pytest.raises(QuantizationError) as lib:
                _setting_check(name, bad)
            assert str(e.value) == str(lib.value)
        if d["choices"]:
            for c in d["choices"]:
                value = c if d["type"] == "choice" else int(c)
                assert getattr(DiffusionQuantConfig(**{name: value}), name) == value
    for p, (bits, scheme, group, cos, bpw) in PROFILES.items():
        c = DiffusionQuantConfig(p)
        assert (c.bit_width, c.scheme, c.group_size, c.min_cosine, c.target_bpw) == (
            bits, scheme, group, cos, bpw)


def test_the_command_agrees_with_the_table(aq, tmp_path):
    usage = aq("--help", check=False).stderr
    usage = usage[usage.index("settings (the library's table"):]
    flagged = {n: d for n, d in TABLE.items() if d["flag"]}
    assert {"bit_width", "scheme", "min_cosine", "target_bpw", "compression"} <= set(flagged)
    for name, d in flagged.items():
        line = next((l for l in usage.splitlines() if l.strip().startswith(d["flag"] + " ")),
                    None)
        assert line is not None, d["flag"]
        assert f"(default {d['default']})" in line and d["help"] in line
        if d["choices"]:
            assert "|".join(d["choices"]) in line
    # The quantize command's value checks are the table's.
    src = tmp_path / "none.safetensors"
    for name in ("bit_width", "group_size", "threads", "min_cosine", "target_bpw",
                 "compression", "budget_scope", "calibration_combine", "min_elements"):
        d = TABLE[name]
        for bad in _outside(d):
            p = aq("quantize", src, "-o", tmp_path / "o.arrow", d["flag"], bad, check=False)
            assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
            assert p.stderr.startswith(f"arrowquant: error: {d['flag']}: "), p.stderr
            if d["type"] == "choice":
                assert ", ".join(d["choices"]) in p.stderr
            elif d["type"] == "int":
                with pytest.raises(QuantizationError) as lib:
                    _setting_check(name, bad)
                assert str(lib.value) in p.stderr
    assert not (tmp_path / "o.arrow").exists()


def test_the_gguf_form_agrees_with_the_table(aq, tmp_path):
    src = tmp_path / "none.safetensors"
    for name in ("threads", "family", "calibration_combine"):
        d = TABLE[name]
        for bad in _outside(d):
            p = aq("quantize", src, "-o", tmp_path / "o.gguf", "--type", "Q8_0", d["flag"], bad,
                   check=False)
            assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
            assert p.stderr.startswith(f"arrowquant: error: {d['flag']}: "), p.stderr
            if d["choices"]:
                assert ", ".join(d["choices"]) in p.stderr
    assert not (tmp_path / "o.gguf").exists()
