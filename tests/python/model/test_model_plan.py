"""The model path in three steps through the extension, without a cluster: the command's plan
(arrowquant quantize --plan-out), tensors executed in ranges (_model_execute), the file written
from their rows (_model_write): byte for byte the command's file. Rows out of order, missing, or
a plan of another model are refused with messages naming the tensor."""
import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import save_file

from arrow_quant_v2 import QuantizationError
from arrow_quant_v2.arrow_quant_v2 import (_model_execute, _model_plan_tensors, _model_write,
                                           _quantize_gguf)


class _Rows:
    def __init__(self, pair):
        self.pair = pair

    def __arrow_c_array__(self, requested_schema=None):
        return self.pair


def _rows(src, plan, begin, end):
    return pa.record_batch(_Rows(_model_execute(str(src), plan, begin, end)))


def _rows_file(path, src, plan, ranges):
    """The rows of each range (begin, end) of the plan, in one Arrow IPC stream file at path."""
    batches = [_rows(src, plan, a, b) for a, b in ranges]
    with pa.ipc.new_stream(str(path), batches[0].schema) as w:
        for b in batches:
            w.write_batch(b)
    return path


def _check_follows_plan(cli, src, tmp_path, options, ext, untimed, untimed_json):
    """--plan-in (executing the plan here) and --plan-in --rows-in (the rows of three ranges
    made elsewhere, as two stream files, one holding two ranges) write the plain command's
    file (ext) and print its summary: text compared through untimed(text, ref, out), --json
    through untimed_json(doc), both without their times. Returns the plain run, its --json
    and the number of tensors of the plan."""
    ref, plan_path = tmp_path / f"ref{ext}", tmp_path / "plan"
    plain = cli("quantize", src, "-o", ref, *options)
    plain_json = cli.json("quantize", src, "-o", ref, *options)
    cli("quantize", src, "-o", tmp_path / f"x{ext}", "--plan-out", plan_path, *options)
    plan = plan_path.read_bytes()
    n = len(_model_plan_tensors(plan))
    files = []
    for k, ranges in enumerate([[(0, 1)], [(1, n // 2), (n // 2, n)]]):
        files += ["--rows-in", _rows_file(tmp_path / f"rows{k}.arrows", src, plan, ranges)]
    for name, extra in (("planned", []), ("rows", files)):
        out = tmp_path / f"{name}{ext}"
        p = cli("quantize", src, "-o", out, "--plan-in", plan_path, *extra, *options)
        assert out.read_bytes() == ref.read_bytes(), name
        assert untimed(p.stdout, ref, out) == untimed(plain.stdout, ref, out), name
        doc = cli.json("quantize", src, "-o", out, "--plan-in", plan_path, *extra, *options)
        assert untimed_json(doc) == untimed_json(plain_json), name
    return plain, plain_json, n


@pytest.mark.parametrize("options", [["--profile", "local"], ["--bits", "2", "--keep", "*norm*",
                                                               "--min-accuracy", "0.99"]])
def test_ranges_give_the_commands_bytes(cli, ddpm, tmp_path, options):
    src = ddpm / "diffusion_pytorch_model.safetensors"
    ref, plan_path = tmp_path / "ref.arrow", tmp_path / "plan"
    cli("quantize", src, "-o", ref, *options, "--quiet")
    cli("quantize", src, "-o", tmp_path / "x.arrow", "--plan-out", plan_path, *options)
    assert not (tmp_path / "x.arrow").exists()  # planning writes no model file
    plan = plan_path.read_bytes()
    tensors = _model_plan_tensors(plan)
    n = len(tensors)
    assert n > 10 and all(isinstance(t[0], str) for t in tensors)
    cuts = [0, 1, n // 3, n // 2, n]
    batches = [_rows(src, plan, a, b) for a, b in zip(cuts, cuts[1:])]
    assert [b.num_rows for b in batches] == [b - a for a, b in zip(cuts, cuts[1:])]
    out = tmp_path / "split.arrow"
    summary = _model_write(plan, str(out), batches)
    assert summary["tensors"] == n
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("options,kwargs", [
    (["--type", "Q4_K"], {"gguf_type": "Q4_K"}),
    (["--type", "Q3_K", "--profile", "local", "--gguf-search", "none"],
     {"gguf_type": "Q3_K", "profile": "local", "gguf_search": "none"})])
def test_gguf_ranges_give_the_commands_bytes(cli, ddpm, tmp_path, options, kwargs):
    # GGUF output through the same three steps: the command's GGUF plan, each tensor's blocks
    # as rows, the GGUF file written from them.
    src = ddpm / "diffusion_pytorch_model.safetensors"
    ref, plan_path = tmp_path / "ref.gguf", tmp_path / "plan"
    cli("quantize", src, "-o", ref, *options, "--quiet")
    cli("quantize", src, "-o", tmp_path / "x.gguf", "--plan-out", plan_path, *options)
    assert not (tmp_path / "x.gguf").exists()
    plan = plan_path.read_bytes()
    n = len(_model_plan_tensors(plan))
    cuts = [0, 1, n // 3, n // 2, n]
    batches = [_rows(src, plan, a, b) for a, b in zip(cuts, cuts[1:])]
    assert batches[0].schema.names == ["layer_name", "gguf_type", "data", "sqnr_db", "cosine",
                                       "checksum"]
    out = tmp_path / "split.gguf"
    summary = _model_write(plan, str(out), batches)
    assert summary["tensors"] == n and summary["bytes_out"] == out.stat().st_size
    assert out.read_bytes() == ref.read_bytes()
    # The GGUF file's summary, as _quantize_gguf gives it (less its threads and kernels).
    whole = _quantize_gguf(str(src), str(tmp_path / "whole.gguf"), **kwargs)["summary"]
    assert summary == {k: v for k, v in whole.items() if k not in ("threads", "kernels")}
    assert sum(summary["types"].values()) == n
    with pytest.raises(QuantizationError, match="came where tensor 0 of the plan"):
        _model_write(plan, str(tmp_path / "bad.gguf"), batches[1:])
    assert not (tmp_path / "bad.gguf").exists()


def test_bad_rows_and_plans_are_refused(cli, ddpm, tmp_path):
    src = ddpm / "diffusion_pytorch_model.safetensors"
    plan_path = tmp_path / "plan"
    cli("quantize", src, "-o", tmp_path / "x.arrow", "--plan-out", plan_path, "--bits", "4",
        "--keep", "*norm*")
    plan = plan_path.read_bytes()
    names = [t[0] for t in _model_plan_tensors(plan)]
    n = len(names)
    out = tmp_path / "out.arrow"
    with pytest.raises(QuantizationError, match=f"'{names[2]}' came where tensor 0 of the plan"):
        _model_write(plan, str(out), [_rows(src, plan, 2, n)])
    with pytest.raises(QuantizationError, match=f"the first missing is '{names[3]}'"):
        _model_write(plan, str(out), [_rows(src, plan, 0, 3)])
    assert not out.exists()
    damaged = bytearray(plan)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(QuantizationError, match="checksum mismatch"):
        _model_plan_tensors(bytes(damaged))
    other = tmp_path / "other.safetensors"  # another model (no torch: the leak check runs this)
    save_file({"proj.weight": np.ones((64, 64), np.float32)}, str(other))
    with pytest.raises(QuantizationError, match="the plan does not match the model"):
        _model_execute(str(other), plan, 0, 1)
    with pytest.raises(QuantizationError, match="not a range of the plan"):
        _model_execute(str(src), plan, 3, 3)
    missing = tmp_path / "missing.arrow"
    with pytest.raises(OSError, match=str(missing)):
        _model_execute(str(src), plan, 0, 1, calibration=str(missing))
    with pytest.raises(QuantizationError, match="calibration_combine"):
        _model_execute(str(src), plan, 0, 1, calibration=str(missing), combine="median")
    with pytest.raises(TypeError, match="calibration must be a calibration table"):
        _model_execute(str(src), plan, 0, 1, calibration=3)


def _untimed(text, ref, out):
    return [ln for ln in text.replace(str(ref), str(out)).splitlines()
            if not ln.startswith("  time ")]


def _json_untimed(doc):
    """A model file's --json document without its time and output name."""
    doc = dict(doc)
    doc.pop("seconds"), doc.pop("output")
    return doc


@pytest.mark.parametrize("options", [["--profile", "local"],
                                     ["--bits", "2", "--keep", "*norm*", "--min-accuracy",
                                      "0.999"],
                                     ["--bits", "4", "--target-bpw", "7", "--budget-scope",
                                      "model"]])
def test_command_follows_a_plan_and_writes_rows_with_its_summary(cli, ddpm, tmp_path, options):
    """--plan-in (executing the plan here) and --plan-in --rows-in (rows made elsewhere) write
    the plain command's file and print its summary, text and --json, the floor's moves with
    their cosine before included."""
    src = ddpm / "diffusion_pytorch_model.safetensors"
    plain, plain_json, _ = _check_follows_plan(cli, src, tmp_path, options, ".arrow", _untimed,
                                               _json_untimed)
    if "--min-accuracy" in options:
        assert plain_json["moved"] and "nan" not in plain.stdout


def test_plan_in_and_rows_in_are_checked(cli, ddpm, tmp_path):
    src = ddpm / "diffusion_pytorch_model.safetensors"
    plan_path = tmp_path / "plan"
    cli("quantize", src, "-o", tmp_path / "x.arrow", "--plan-out", plan_path, "--bits", "4",
        "--keep", "*norm*")
    out = tmp_path / "out.arrow"
    p = cli("quantize", src, "-o", out, "--rows-in", plan_path, "--bits", "4", check=False)
    assert p.returncode != 0 and "--rows-in needs --plan-in PLAN" in p.stderr
    bad = tmp_path / "bad.plan"
    bad.write_bytes(plan_path.read_bytes()[:-3])
    p = cli("quantize", src, "-o", out, "--plan-in", bad, "--bits", "4", check=False)
    assert p.returncode != 0 and f"--plan-in {bad}: " in p.stderr
    # Rows of the first tensors only: the writer names the first one missing.
    plan = plan_path.read_bytes()
    rows = _rows_file(tmp_path / "rows.arrows", src, plan, [(0, 2)])
    p = cli("quantize", src, "-o", out, "--plan-in", plan_path, "--rows-in", rows, "--bits", "4",
            "--keep", "*norm*", check=False)
    assert p.returncode != 0 and "the first missing is" in p.stderr
    assert not out.exists()


def _gguf_untimed(text, ref, out):
    # The summary's last figure is the time taken.
    return [ln.rsplit(", ", 1)[0] if ln.endswith(" s") else ln
            for ln in text.replace(str(ref), str(out)).splitlines()]


def _gguf_json_untimed(doc):
    """A GGUF --json document without its time and file name."""
    doc = dict(doc, summary=dict(doc["summary"]))
    doc.pop("file"), doc["summary"].pop("seconds")
    return doc


@pytest.mark.parametrize("options", [["--type", "Q4_K"],
                                     ["--type", "Q3_K", "--profile", "local", "--gguf-search",
                                      "none"]])
def test_gguf_command_follows_a_plan_and_writes_rows_with_its_summary(cli, ddpm, tmp_path,
                                                                      options):
    """GGUF output: --plan-in (executed here) and --plan-in --rows-in (rows made elsewhere)
    write the plain command's GGUF file and print its report, text and --json."""
    src = ddpm / "diffusion_pytorch_model.safetensors"
    _, plain_json, n = _check_follows_plan(cli, src, tmp_path, options, ".gguf", _gguf_untimed,
                                           _gguf_json_untimed)
    assert len(plain_json["tensors"]) == n


def test_gguf_and_model_file_plans_are_not_mixed(cli, ddpm, tmp_path):
    src = ddpm / "diffusion_pytorch_model.safetensors"
    gplan, mplan = tmp_path / "gguf.plan", tmp_path / "model.plan"
    cli("quantize", src, "-o", tmp_path / "x.gguf", "--plan-out", gplan, "--type", "Q4_K")
    cli("quantize", src, "-o", tmp_path / "x.arrow", "--plan-out", mplan, "--bits", "4")
    out = tmp_path / "out.gguf"
    p = cli("quantize", src, "-o", out, "--type", "Q4_K", "--plan-in", mplan, check=False)
    assert p.returncode != 0 and "the plan is a model file's" in p.stderr
    arrow = tmp_path / "out.arrow"
    p = cli("quantize", src, "-o", arrow, "--bits", "4", "--plan-in", gplan, check=False)
    assert p.returncode != 0 and "the plan is a GGUF file's" in p.stderr
    p = cli("quantize", src, "-o", out, "--type", "Q4_K", "--rows-in", gplan, check=False)
    assert p.returncode != 0 and "--rows-in needs --plan-in PLAN" in p.stderr
    assert not out.exists() and not arrow.exists()


@pytest.mark.parametrize("options,ext", [(["--bits", "4", "--keep", "*norm*"], ".arrow"),
                                         (["--type", "Q4_K"], ".gguf")])
def test_rows_in_refuses_to_overwrite_a_source(cli, ddpm, tmp_path, options, ext):
    """--rows-in writes no file over the checkpoint the rows come from, nor over a rows file,
    however it is named (as a followed plan refuses it); and rows need the plan's model."""
    import shutil

    src = tmp_path / "m.safetensors"
    shutil.copyfile(ddpm / "diffusion_pytorch_model.safetensors", src)
    plan_path = tmp_path / "plan"
    cli("quantize", src, "-o", tmp_path / f"x{ext}", "--plan-out", plan_path, *options)
    plan = plan_path.read_bytes()
    rows = _rows_file(tmp_path / "rows.arrows", src, plan, [(0, len(_model_plan_tensors(plan)))])
    before = {p: p.read_bytes() for p in (src, rows)}
    # Other names for the same files (a GGUF output's name ends in .gguf).
    (tmp_path / f"link{ext}").symlink_to(src)
    (tmp_path / f"rows-link{ext}").symlink_to(rows)
    cases = [(tmp_path / f"link{ext}", src), (tmp_path / f"rows-link{ext}", rows)]
    if ext == ".arrow":
        cases += [(src, src), (rows, rows)]
    for out, what in cases:
        p = cli("quantize", src, "-o", out, "--plan-in", plan_path, "--rows-in", rows, *options,
                check=False)
        assert p.returncode != 0, out
        assert f"{out}: is the input file {what}: refusing to overwrite a source" in p.stderr
    assert {p: p.read_bytes() for p in (src, rows)} == before
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # Rows of this checkpoint given with another one: the plan does not match it.
    other = tmp_path / "other.safetensors"
    save_file({"w": np.ones((4, 4), np.float32)}, str(other))
    out = tmp_path / f"out{ext}"
    p = cli("quantize", other, "-o", out, "--plan-in", plan_path, "--rows-in", rows, *options,
            check=False)
    assert p.returncode != 0 and "the plan does not match the model" in p.stderr
    assert not out.exists()
