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
    # The settings GGUF output applies are checked by the table; another setting's flag is
    # refused before the source is read.
    src = tmp_path / "none.safetensors"
    applied = _applied("_quantize_gguf")
    for name in [n for n, d in TABLE.items() if d["flag"] and n not in applied]:
        d = TABLE[name]
        p = aq("quantize", src, "-o", tmp_path / "o.gguf", "--type", "Q8_0", d["flag"],
               d["default"], check=False)
        assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
        assert f"{d['flag']} (setting {name}) does not apply to GGUF output" in p.stderr
    for name in [n for n in applied if TABLE[n]["flag"]]:
        d = TABLE[name]
        for bad in _outside(d):
            p = aq("quantize", src, "-o", tmp_path / "o.gguf", "--type", "Q8_0", d["flag"], bad,
                   check=False)
            assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
            assert p.stderr.startswith(f"arrowquant: error: {d['flag']}: "), p.stderr
            if d["choices"]:
                assert ", ".join(d["choices"]) in p.stderr
    assert not (tmp_path / "o.gguf").exists()


def test_the_model_file_form_agrees_with_the_table(aq, tmp_path):
    # The model file's writer and GGUF output apply the settings the table marks for each;
    # every setting applies to one of them, and a flag of a setting the model file's writer
    # does not apply is refused by the table's column, before the source is read.
    model, gguf = _applied("_quantize_model"), _applied("_quantize_gguf")
    assert set(model) | set(gguf) == set(TABLE)
    assert "gguf_search" in gguf and "gguf_search" not in model
    src = tmp_path / "none.safetensors"
    for name in [n for n, d in TABLE.items() if d["flag"] and n not in model]:
        d = TABLE[name]
        p = aq("quantize", src, "-o", tmp_path / "o.arrow", d["flag"], d["default"], check=False)
        assert p.returncode != 0 and p.stderr.count("\n") == 1, p.stderr
        assert f"{d['flag']} (setting {name}) applies to GGUF output only" in p.stderr
    assert not (tmp_path / "o.arrow").exists()


# ---- the extension's entry points take their keywords from the table ----

from arrow_quant_v2 import arrow_quant_v2 as _ext  # noqa: E402
from arrow_quant_v2.arrow_quant_v2 import _keywords, _settings_resolve  # noqa: E402

_CALLS = {
    "_quantize_model": lambda tmp, **kw: _ext._quantize_model(
        tmp / "missing.safetensors", tmp / "o.arrow", **kw),
    "_quantize_gguf": lambda tmp, **kw: _ext._quantize_gguf(
        tmp / "missing.safetensors", tmp / "o.gguf", "Q8_0", **kw),
}


def _typed(d, text):
    return {"int": int, "float": float, "choice": str,
            "bool": lambda t: bool(int(t)) if t in ("0", "1") else int(t)}[d["type"]](text)


def _applied(fname):
    applies = _keywords()[fname][2]
    return sorted(TABLE) if applies is None else sorted(applies)


def test_every_setting_is_a_keyword_of_each_entry_point(tmp_path):
    assert set(_keywords()) == set(_CALLS)
    resolved = _settings_resolve("local", {})
    for fname, (positional, own, applies) in _keywords().items():
        assert not set(own) & set(TABLE) and not set(positional) & set(TABLE)
        assert applies is None or set(applies) <= set(TABLE)
        accepted = set(TABLE) | set(own) | set(positional)
        call = _CALLS[fname]
        # A setting's keyword is taken by its name: the call gets as far as the missing file.
        for name in sorted(accepted - set(positional)):
            value = resolved[name] if name in TABLE else None
            try:
                call(tmp_path, **{name: value})
            except OSError as e:
                assert "missing.safetensors" in str(e)
            except QuantizationError as e:
                # GGUF output refuses a value for a setting it does not apply.
                assert applies is not None and name not in applies, (fname, name, e)
                assert f"does not apply the setting {name}" in str(e)
            else:
                raise AssertionError((fname, name))
        with pytest.raises(TypeError, match="unexpected keyword argument 'no_such_setting'"):
            call(tmp_path, no_such_setting=1)
        # Every applied setting at once, as the library resolves them.
        with pytest.raises(OSError, match="missing.safetensors"):
            call(tmp_path, **{n: resolved[n] for n in _applied(fname)})


def test_the_entry_points_enforce_the_table_bounds(tmp_path):
    for fname in _keywords():
        for name in _applied(fname):
            d = TABLE[name]
            for bad in _outside(d):
                with pytest.raises(QuantizationError) as e:
                    _CALLS[fname](tmp_path, **{name: _typed(d, bad)})
                with pytest.raises(QuantizationError) as lib:
                    _setting_check(name, bad)
                assert str(e.value) == str(lib.value), (fname, name, bad)
                assert str(e.value).startswith(f"Invalid {name}")
            wrong = 1.5 if d["type"] in ("int", "choice", "bool") else "1"
            with pytest.raises(TypeError, match=f"^{name} must be"):
                _CALLS[fname](tmp_path, **{name: wrong})
    assert not any(tmp_path.iterdir())


def _tiny_model(path):
    """A safetensors file of two float32 tensors large enough to be quantized."""
    import json
    import struct

    import numpy as np
    rng = np.random.default_rng(7)
    tensors = {"down_blocks.0.attentions.0.to_q.weight": rng.standard_normal((64, 512)),
               "down_blocks.0.resnets.0.conv1.weight": rng.standard_normal((128, 256))}
    header, blobs, at = {}, [], 0
    for name, t in tensors.items():
        b = t.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return path


@pytest.mark.parametrize("profile", ["edge", "local", "cloud"])
def test_the_extension_applies_the_profile_as_the_config_does(tmp_path, profile):
    src = _tiny_model(tmp_path / "m.safetensors")
    arrow_quant_v2.quantize_diffusion_model(src, tmp_path / "config.arrow", profile)
    # Only the profile given: the library applies its bits, scheme, floor and budget.
    _ext._quantize_model(src, tmp_path / "ext.arrow", profile=profile, compression="zstd")
    assert (tmp_path / "ext.arrow").read_bytes() == (tmp_path / "config.arrow").read_bytes()
    # An explicit value wins over the profile's.
    arrow_quant_v2.quantize_diffusion_model(
        src, tmp_path / "config0.arrow", DiffusionQuantConfig(profile, min_cosine=0.0))
    _ext._quantize_model(src, tmp_path / "ext0.arrow", profile=profile, min_cosine=0,
                         compression="zstd")
    assert (tmp_path / "ext0.arrow").read_bytes() == (tmp_path / "config0.arrow").read_bytes()
