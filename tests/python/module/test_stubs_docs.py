"""The type stubs match the module, every public object has a docstring, and the README's
Python quick start runs as written."""
import ast
import inspect
import pathlib
import re

import arrow_quant_v2
from arrow_quant_v2 import arrow_quant_v2 as native

ROOT = pathlib.Path(__file__).resolve().parents[3]
STUB = ROOT / "python" / "arrow_quant_v2" / "arrow_quant_v2.pyi"


def _stub_classes():
    tree = ast.parse(STUB.read_text())
    classes = {}
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {
                n.name: n for n in node.body if isinstance(n, ast.FunctionDef)
            }
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    return classes, names


def test_stubs_match_the_module():
    classes, names = _stub_classes()
    public = {n for n in dir(native) if not n.startswith("_")} | {"__version__"}
    stubbed = {n for n in classes if not n.startswith("_")} | names
    assert public == stubbed
    for cls_name, methods in classes.items():
        if cls_name.startswith("_"):
            continue
        cls = getattr(native, cls_name)
        runtime = {n for n in dir(cls) if not n.startswith("_") or n.startswith("__arrow")}
        runtime -= set(dir(ValueError)) if issubclass(cls, BaseException) else set()
        declared = {n for n in methods if not n.startswith("_") or n.startswith("__arrow")}
        assert declared == runtime, cls_name
        for name, fn in methods.items():
            member = getattr(cls, name, None)
            if name == "__init__":
                member = cls
            if member is None or not callable(member) or (
                    name.startswith("__") and name != "__init__"):
                continue
            try:
                sig = inspect.signature(member)
            except (TypeError, ValueError):
                continue  # no text signature for this builtin
            want = [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg != "self"]
            got = [p for p in sig.parameters if p != "self"]
            assert got == want, (cls_name, name, got, want)
    # Diffusion mode: pure-Python names beside the extension's.
    pure_python = {"DiffusionQuantConfig", "calibrate", "ModelCalibration", "QualityReport",
                   "QuantizationResult",
                   "quantize_diffusion_model", "validate_quality",
                   # GGUF (docs/gguf.md)
                   "quantize_gguf", "dequantize_gguf", "GGUFResult"}
    assert set(arrow_quant_v2.__all__) == public | pure_python


def test_public_objects_have_docstrings():
    for name in arrow_quant_v2.__all__:
        obj = getattr(arrow_quant_v2, name)
        if inspect.isclass(obj):
            assert obj.__doc__, name
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    assert member.__doc__, (name, attr)


def test_readme_python_quick_start_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start: Python", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md has no python block under '## Quick start: Python'"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "result" in namespace and namespace["result"].num_rows > 0
