"""Run an ArrowQuant model file in torch with its weights kept packed.

    import torch, diffusers
    from arrow_quant_v2.torch import load_quantized
    with torch.device("meta"):                      # no full-precision weights are made
        unet = diffusers.UNet2DModel.from_config(diffusers.UNet2DModel.load_config("ddpm/unet"))
    unet = load_quantized(unet, "ddpm.arrow", component="unet")

Every ``nn.Linear`` and ``nn.Conv2d`` (diffusers' LoRA-compatible variants are subclasses)
whose weight is quantized in the file becomes a ``PackedLinear`` / ``PackedConv2d``: it keeps
the codes, scales and zero points as buffers and dequantizes its weight at each forward, into
one buffer shared by the model (the size of its largest layer), then runs ``F.linear`` /
``F.conv2d``. Every other tensor of the file becomes an ordinary parameter or buffer. On CPU
the C library dequantizes (every scheme, SIMD kernels, in place in the tensors' memory, the GIL
released); on other devices torch operations do, with the same floats (``dequantize_torch``).
docs/runtime.md has the design: devices, dtypes, state_dict, torch.compile.
"""
from __future__ import annotations

try:
    import torch
except ImportError:  # torch is an optional dependency of the package
    raise ImportError("arrow_quant_v2.torch needs PyTorch: pip install torch") from None

import ctypes
import json
import math
import os
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import nn

from . import arrow_quant_v2 as _ext

__all__ = ["load_quantized", "PackedLinear", "PackedConv2d", "dequantize", "dequantize_torch"]

SCHEMES = ("affine", "affine_search", "kquant", "kquant_rows")
_KQ_SUPER = 512  # AQ_KQUANT_SUPER_BLOCK
_GROUP_SIZE_ROW = 4294967295  # AQ_GROUP_SIZE_ROW
_C_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
# Kept rows of non-float tensors hold their source dtype's bytes (safetensors names).
_RAW_DTYPES = {"F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
               "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_FLOAT_SOURCES = ("F32", "F16", "BF16", "F64")
# Which dequantizer runs on the CPU: "c" (the C library) or "torch" (the operations every other
# device runs; the tests set it to check them on the CPU).
CPU_DEQUANTIZER = "c"


# ---------------------------------------------------------------------------------------------
# Layouts (docs/format.md sections 1, 5 and 5.2)
# ---------------------------------------------------------------------------------------------

def _rows_cols(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, int(shape[0])
    return int(shape[0]), math.prod(int(d) for d in shape[1:])


def _kq_geometry(bits: int) -> tuple[int, int]:
    """(sub-block size S, parameter bits P) of kquant at this bit width."""
    return (16, 4) if bits == 2 else (32, 6)


def _kq_row_param_bytes(bits: int, cols: int) -> tuple[int, int, int]:
    """(bytes of a full super-block's parameters, bytes of a row's last super-block's, bytes
    of a row's) for kquant."""
    s, p = _kq_geometry(bits)
    gpr = -(-cols // _KQ_SUPER)
    last_len = cols - (gpr - 1) * _KQ_SUPER
    full = -(-(2 * (_KQ_SUPER // s) * p) // 8)
    last = -(-(2 * -(-last_len // s) * p) // 8)
    return full, last, (gpr - 1) * full + last


def _kq_rows_cols(scheme: str, shape: Sequence[int]) -> tuple[int, int]:
    """The rows kquant's super-blocks follow: the flattened tensor as one row ("kquant",
    format version 2), or the tensor's own rows ("kquant_rows", version 1's layout)."""
    rows, cols = _rows_cols(shape)
    return (1, rows * cols) if scheme == "kquant" else (rows, cols)


def _layout(scheme: str, bits: int, group_size: int, shape: Sequence[int]) -> tuple[int, int]:
    """(packed bytes, groups) a quantized tensor of this kind must have."""
    rows, cols = _kq_rows_cols(scheme, shape)
    n = rows * cols
    codes = -(-(n * bits) // 8)
    if scheme in ("kquant", "kquant_rows"):
        gpr = -(-cols // _KQ_SUPER)
        return codes + rows * _kq_row_param_bytes(bits, cols)[2], rows * gpr
    return codes, rows * -(-cols // group_size)


def _check(name: str, scheme: str, bits: int, group_size: int, shape: Sequence[int],
           qdata: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor) -> None:
    """Raises ValueError, naming the tensor, unless the buffers fit the layout."""
    if scheme not in SCHEMES:
        raise ValueError(f"Layer '{name}': unknown scheme {scheme!r} (expected one of "
                         f"{', '.join(SCHEMES)})")
    if bits not in (2, 4, 8):
        raise ValueError(f"Layer '{name}': bit width {bits}, expected 2, 4 or 8")
    kq = scheme in ("kquant", "kquant_rows")
    if kq and group_size != _KQ_SUPER:
        raise ValueError(f"Layer '{name}': {scheme} group size is {group_size}, expected 512")
    if not kq and not 8 <= group_size <= _GROUP_SIZE_ROW:
        raise ValueError(f"Layer '{name}': group size {group_size} is invalid")
    if qdata.dtype != torch.uint8 or scales.dtype != torch.float32 \
            or zero_points.dtype != torch.float32:
        raise ValueError(f"Layer '{name}': packed data must be uint8 and scales and zero points "
                         f"float32 (got {qdata.dtype}, {scales.dtype}, {zero_points.dtype})")
    packed, groups = _layout(scheme, bits, group_size, shape)
    if qdata.numel() != packed:
        raise ValueError(f"Layer '{name}': {qdata.numel()} packed bytes, expected {packed} for "
                         f"shape {list(shape)} at {bits} bits ({scheme})")
    if scales.numel() != groups or zero_points.numel() != groups:
        raise ValueError(f"Layer '{name}': {scales.numel()} scales and {zero_points.numel()} "
                         f"zero points, expected {groups} for shape {list(shape)} ({scheme})")


# ---------------------------------------------------------------------------------------------
# Dequantizers: the C library (CPU) and torch operations (any device)
# ---------------------------------------------------------------------------------------------

def _cbuf(t: torch.Tensor):
    """A writable buffer-protocol view of a contiguous CPU tensor's memory (no copy); the
    tensor must stay alive while the view is used."""
    return (ctypes.c_char * (t.numel() * t.element_size())).from_address(t.data_ptr())


def _dequantize_c(qdata, scales, zero_points, scheme, bits, group_size, shape, out, name=None):
    """The C dequantizer into out (a contiguous CPU tensor of f32, f16 or bf16)."""
    _ext._dequantize_into(scheme, bits, group_size, list(shape), _cbuf(qdata), _cbuf(scales),
                          _cbuf(zero_points), _cbuf(out), _C_DTYPES[out.dtype], name=name,
                          threads=torch.get_num_threads())
    return out


def _unpack_codes(qdata: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """The n codes of section 5 (lsb-first) as float32."""
    if bits == 8:
        return qdata[:n].to(torch.float32)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=qdata.device)
    nbytes = -(-(n * bits) // 8)
    codes = (qdata[:nbytes].unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(-1)[:n].to(torch.float32)


def _unpack_fields(b: torch.Tensor, nfields: int, p: int) -> torch.Tensor:
    """Fields of p bits from an lsb-first bit stream held in the last dimension of b (uint8),
    as float32: (..., nbytes) -> (..., nfields)."""
    bit = torch.arange(8, dtype=torch.uint8, device=b.device)
    stream = ((b.unsqueeze(-1) >> bit) & 1).reshape(*b.shape[:-1], b.shape[-1] * 8)
    stream = stream[..., :nfields * p].reshape(*b.shape[:-1], nfields, p).to(torch.int32)
    weight = torch.tensor([1 << k for k in range(p)], dtype=torch.int32, device=b.device)
    return (stream * weight).sum(-1).to(torch.float32)


def dequantize_torch(qdata: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, *,
                     scheme: str, bit_width: int, group_size: int, shape: Sequence[int],
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantizes one packed tensor with torch operations on its device, giving the same
    floats as the C library: docs/format.md section 4 (`(q - zero_point) * scale`, two float32
    operations) for the affine schemes, section 5.2 (`a = d * sc`, `b = dmin * mc`,
    `a * q - b`, each a float32 operation) for kquant (super-blocks over the flattened tensor)
    and kquant_rows (over each row); then rounded to dtype (nearest, ties to
    even). Each operation is its own kernel, so no multiply-add is fused."""
    name = "<tensor>"
    _check(name, scheme, bit_width, group_size, shape, qdata, scales, zero_points)
    rows, cols = _kq_rows_cols(scheme, shape)
    n = rows * cols
    q = _unpack_codes(qdata, n, bit_width).view(rows, cols)
    if scheme in ("kquant", "kquant_rows"):
        s, p = _kq_geometry(bit_width)
        j_full = _KQ_SUPER // s
        gpr = -(-cols // _KQ_SUPER)
        full, last, row_bytes = _kq_row_param_bytes(bit_width, cols)
        j_last = -(-(cols - (gpr - 1) * _KQ_SUPER) // s)
        params = qdata[-(-(n * bit_width) // 8):].view(rows, row_bytes)
        head = params[:, :(gpr - 1) * full].reshape(rows, gpr - 1, full)
        tail = params[:, (gpr - 1) * full:].reshape(rows, 1, last)
        sm_head = _unpack_fields(head, 2 * j_full, p).view(rows, gpr - 1, j_full, 2)
        sm_tail = _unpack_fields(tail, 2 * j_last, p).view(rows, 1, j_last, 2)
        sm_tail = F.pad(sm_tail, (0, 0, 0, j_full - j_last))
        sm = torch.cat([sm_head, sm_tail], dim=1)  # (rows, gpr, J, 2): sc, mc
        d = scales.view(rows, gpr, 1)
        dmin = zero_points.view(rows, gpr, 1)
        a = torch.mul(d, sm[..., 0])
        b = torch.mul(dmin, sm[..., 1])
        pad = gpr * _KQ_SUPER - cols
        if pad:
            q = F.pad(q, (0, pad))
        qv = q.view(rows, gpr, j_full, s)
        x = torch.sub(torch.mul(a.unsqueeze(-1), qv), b.unsqueeze(-1))
        x = x.reshape(rows, gpr * _KQ_SUPER)[:, :cols]
    else:
        gpr = -(-cols // group_size)
        g = cols if gpr == 1 else group_size
        pad = gpr * g - cols
        if pad:
            q = F.pad(q, (0, pad))
        qv = q.view(rows, gpr, g)
        x = torch.mul(torch.sub(qv, zero_points.view(rows, gpr, 1)), scales.view(rows, gpr, 1))
        x = x.reshape(rows, gpr * g)[:, :cols]
    return x.reshape(tuple(shape)).to(dtype).contiguous()


def dequantize(qdata: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, *,
               scheme: str, bit_width: int, group_size: int, shape: Sequence[int],
               dtype: torch.dtype = torch.float32, out: Optional[torch.Tensor] = None,
               name: Optional[str] = None) -> torch.Tensor:
    """Dequantizes one packed tensor on its device: the C library on CPU (into out when given:
    a contiguous CPU tensor of dtype with at least prod(shape) elements), torch operations
    elsewhere."""
    if qdata.device.type == "cpu" and dtype in _C_DTYPES and CPU_DEQUANTIZER == "c":
        n = math.prod(shape)
        if out is None:
            out = torch.empty(n, dtype=dtype)
        _dequantize_c(qdata, scales, zero_points, scheme, bit_width, group_size, shape,
                      out.view(-1)[:n], name)
        return out.view(-1)[:n].view(tuple(shape))
    w = dequantize_torch(qdata, scales, zero_points, scheme=scheme, bit_width=bit_width,
                         group_size=group_size, shape=shape, dtype=dtype)
    if out is not None:
        return out.view(-1)[:w.numel()].view(tuple(shape)).copy_(w)
    return w


# A custom operator, so torch.compile sees the dequantization as one opaque call (no graph
# break on the C call, and no fusing that could turn a * q - b into a multiply-add).
@torch.library.custom_op("arrowquant::dequantize", mutates_args=())
def _dequantize_op(qdata: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                   scheme: str, bit_width: int, group_size: int, shape: list[int],
                   dtype: torch.dtype) -> torch.Tensor:
    return dequantize(qdata, scales, zero_points, scheme=scheme, bit_width=bit_width,
                      group_size=group_size, shape=shape, dtype=dtype)


@_dequantize_op.register_fake
def _(qdata, scales, zero_points, scheme, bit_width, group_size, shape, dtype):
    return torch.empty(shape, dtype=dtype, device=qdata.device)


# ---------------------------------------------------------------------------------------------
# Packed modules
# ---------------------------------------------------------------------------------------------

class _Workspace:
    """The one buffer per device and dtype that the packed modules of a model dequantize
    into, grown to the largest layer. Plain object (not a Module), so it is in no state_dict."""

    def __init__(self):
        self._bufs: dict = {}

    def get(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (device, dtype)
        b = self._bufs.get(key)
        if b is None or b.numel() < numel:
            self._bufs.pop(key, None)
            b = torch.empty(numel, dtype=dtype, device=device)
            self._bufs[key] = b
        return b[:numel]


_PACKED = ("qdata", "scales", "zero_points")


class _FileCheck:
    """Checks, at each forward, that the model file whose memory a layer's packed buffers are
    (an uncompressed file's mapping) was not truncated while in use. Called before the
    dequantization (the file's size against the mapping: a page past the end would raise
    SIGBUS, which kills the process unless the library's guard is the handler that sees it)
    and after (a fault the guard turned into zeros during the read). Also keeps that memory
    alive with the layer. A copy or a pickle of the layer holds its own memory, so it gets
    none."""

    __slots__ = ("hold",)

    def __init__(self, hold):
        self.hold = hold

    def __call__(self) -> None:
        _ext._hold_check(self.hold)

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (type(None), ())


class _Packed(nn.Module):
    """What PackedLinear and PackedConv2d share: the packed weight as three buffers (qdata
    uint8, scales and zero_points float32) and its description (scheme, bit width, group size,
    shape) in the module's extra state, so state_dict() holds all of it."""

    def _init_packed(self, name, scheme, bit_width, group_size, shape, qdata, scales,
                     zero_points, dtype, workspace):
        _check(name, scheme, bit_width, group_size, shape, qdata, scales, zero_points)
        self.layer_name = name
        self.scheme = scheme
        self.bit_width = int(bit_width)
        self.group_size = int(group_size)
        self.weight_shape = tuple(int(d) for d in shape)
        self.weight_dtype = dtype
        self._workspace = workspace if workspace is not None else _Workspace()
        self._file_check = None  # set by load_quantized when the buffers are the file's
        self.register_buffer("qdata", qdata.contiguous())
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("zero_points", zero_points.contiguous())

    # -- the weight -----------------------------------------------------------------------

    def _dequantized(self, like: torch.Tensor) -> torch.Tensor:
        dev, dt = self.qdata.device, self.weight_dtype
        if torch.compiler.is_compiling():
            return torch.ops.arrowquant.dequantize(self.qdata, self.scales, self.zero_points,
                                                   self.scheme, self.bit_width, self.group_size,
                                                   list(self.weight_shape), dt)
        # The shared buffer is overwritten by the next layer: only where autograd will not keep
        # the weight for a backward pass.
        out = None
        if not (torch.is_grad_enabled() and like.requires_grad):
            out = self._workspace.get(math.prod(self.weight_shape), dt, dev)
        return self._read(out, dt)

    def _read(self, out: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        check = self._file_check
        if check is not None:
            check()  # before reading: a truncated file's pages past its end are not touched
        w = dequantize(self.qdata, self.scales, self.zero_points, scheme=self.scheme,
                       bit_width=self.bit_width, group_size=self.group_size,
                       shape=self.weight_shape, dtype=dtype, out=out, name=self.layer_name)
        if check is not None:
            check()  # after: a truncation during the read shows as a fault the guard caught
        return w

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, a new tensor (a full-size copy: for inspection)."""
        return self._read(None, self.weight_dtype).clone()

    # -- devices and dtypes ---------------------------------------------------------------

    def _apply(self, fn, recurse=True):
        # Follow the device; a floating dtype becomes the compute dtype, while the packed
        # buffers stay uint8/float32 (a cast would change the floats they restore).
        probe = fn(torch.empty(0, dtype=torch.float32, device=self.qdata.device))
        saved = {k: self._buffers.pop(k) for k in _PACKED}
        try:
            super()._apply(fn, recurse)
        finally:
            for k, t in saved.items():
                self._buffers[k] = t.to(probe.device) if t.device != probe.device else t
        if any(self._buffers[k] is not saved[k] for k in _PACKED):
            self._file_check = None  # the buffers are copies now: the file's memory can go
        if probe.dtype.is_floating_point:
            self.weight_dtype = probe.dtype
        return self

    # -- state_dict -----------------------------------------------------------------------

    def get_extra_state(self):
        return {"scheme": self.scheme, "bit_width": self.bit_width,
                "group_size": self.group_size, "shape": list(self.weight_shape),
                "dtype": str(self.weight_dtype).removeprefix("torch."),
                "name": self.layer_name}

    def set_extra_state(self, state):
        self.scheme = state["scheme"]
        self.bit_width = int(state["bit_width"])
        self.group_size = int(state["group_size"])
        self.weight_shape = tuple(int(d) for d in state["shape"])
        self.weight_dtype = getattr(torch, state["dtype"])
        self.layer_name = state.get("name", self.layer_name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The buffers are replaced, not written: a packed weight of another size (other bits
        # or scheme) fits, and the memory of the model file they were loaded from can go.
        for k in _PACKED:
            t = state_dict.get(prefix + k)
            if isinstance(t, torch.Tensor):
                self._buffers[k] = torch.empty(t.shape, dtype=self._buffers[k].dtype,
                                               device=self._buffers[k].device)
                self._file_check = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        _check(self.layer_name, self.scheme, self.bit_width, self.group_size,
               self.weight_shape, self.qdata, self.scales, self.zero_points)

    def extra_repr(self) -> str:
        return (f"{self.scheme}, bits={self.bit_width}, group_size={self.group_size}, "
                f"weight_shape={list(self.weight_shape)}, dtype={self.weight_dtype}")


def _as_parameter(t: Optional[torch.Tensor]) -> Optional[nn.Parameter]:
    if t is None or isinstance(t, nn.Parameter):
        return t
    return nn.Parameter(t, requires_grad=False)


class PackedLinear(_Packed):
    """nn.Linear with its weight packed; forward dequantizes it, then runs F.linear."""

    def __init__(self, in_features: int, out_features: int, *, name: str, scheme: str,
                 bit_width: int, group_size: int, qdata: torch.Tensor, scales: torch.Tensor,
                 zero_points: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 dtype: torch.dtype = torch.float32, workspace: Optional[_Workspace] = None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self._init_packed(name, scheme, bit_width, group_size, (out_features, in_features),
                          qdata, scales, zero_points, dtype, workspace)
        self.bias = _as_parameter(bias)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        # scale: the LoRA scale of diffusers' LoRACompatibleLinear (no LoRA layer here).
        return F.linear(x, self._dequantized(x), self.bias)


class PackedConv2d(_Packed):
    """nn.Conv2d with its weight packed; forward dequantizes it, then runs F.conv2d."""

    def __init__(self, conv: nn.Conv2d, *, name: str, scheme: str, bit_width: int,
                 group_size: int, qdata: torch.Tensor, scales: torch.Tensor,
                 zero_points: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 dtype: torch.dtype = torch.float32, workspace: Optional[_Workspace] = None):
        super().__init__()
        for a in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                  "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, a, getattr(conv, a))
        shape = (conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size)
        self._init_packed(name, scheme, bit_width, group_size, shape, qdata, scales,
                          zero_points, dtype, workspace)
        self.bias = _as_parameter(bias)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        # scale: the LoRA scale of diffusers' LoRACompatibleConv (no LoRA layer here).
        w = self._dequantized(x)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


# ---------------------------------------------------------------------------------------------
# Loading a model file
# ---------------------------------------------------------------------------------------------

def _raw_tensor(name, source_dtype, bits, shape, data: bytearray) -> torch.Tensor:
    if source_dtype in _FLOAT_SOURCES:
        dt = {16: torch.float16, 32: torch.float32}.get(bits)
    else:
        dt = _RAW_DTYPES.get(source_dtype)
    if dt is None:
        raise ValueError(f"Layer '{name}': kept tensor of dtype {source_dtype} at {bits} bits "
                         f"cannot be read into torch")
    t = torch.frombuffer(data, dtype=dt) if len(data) else torch.empty(0, dtype=dt)
    return t.reshape(tuple(shape))


def _row_tensors(row):
    """(qdata, scales, zero_points) of a quantized row, sharing the row's buffers (no copy)."""
    data, scales, zps = row[7], row[8], row[9]
    return (torch.frombuffer(data, dtype=torch.uint8),
            torch.frombuffer(scales, dtype=torch.float32),
            torch.frombuffer(zps, dtype=torch.float32))


def _dense(row, dtype: torch.dtype) -> torch.Tensor:
    """A row as an ordinary tensor of dtype (kept rows as stored, quantized rows dequantized
    by the C library)."""
    name, scheme, source, raw, bits, group, shape = row[:7]
    if raw:
        t = _raw_tensor(name, source, bits, shape, row[7])
        return t if t.dtype == dtype else t.to(dtype)
    q, s, z = _row_tensors(row)
    cdt = dtype if dtype in _C_DTYPES else torch.float32
    w = dequantize(q, s, z, scheme=scheme, bit_width=bits, group_size=group, shape=shape,
                   dtype=cdt, name=name)
    return w if w.dtype == dtype else w.to(dtype)


def _components(path: str) -> dict:
    text = _ext._model_metadata(path, "arrowquant.components")
    if not text:
        return {}
    try:
        comps = json.loads(text)
    except ValueError:
        raise ValueError(f"{path}: metadata arrowquant.components is not JSON") from None
    return comps if isinstance(comps, dict) else {}


def load_quantized(module: nn.Module, path, *, component: Optional[str] = None,
                   device=None) -> nn.Module:
    """Loads the model file at path into module and returns it, the quantized weights of its
    nn.Linear and nn.Conv2d layers kept packed (PackedLinear / PackedConv2d), every other
    tensor as an ordinary parameter or buffer.

    module: any torch module whose state_dict names are the file's tensor names, usually built
    on the meta device so that no full-precision weight is ever made
    (``with torch.device("meta"): Model.from_config(config)``; accelerate's
    ``init_empty_weights()`` also works and keeps non-persistent buffers). Each tensor takes
    the dtype of the module's tensor of the same name (build the model in the dtype you want
    to compute in). component: the part of a pipeline's model file to load (``"unet"``,
    ``"transformer"``, ...); required for such a file, refused for a single model's. device:
    where to move the model at the end (None: stays on the CPU).

    Raises ValueError naming the tensor when the file does not match the model: a tensor the
    model has and the file lacks, a tensor of the file the model has no place for, or a shape
    that differs; and OSError / arrow_quant_v2.QuantizationError for an unreadable file."""
    path = os.fspath(path)
    comps = _components(path)
    if comps:
        if component is None:
            raise ValueError(f"{path} is a pipeline's model file with components "
                             f"{', '.join(sorted(comps))}: pass component= to pick one")
        if component not in comps:
            raise ValueError(f"{path} has no component {component!r} (it has "
                             f"{', '.join(sorted(comps))})")
        prefix = component + "/"
    elif component is not None:
        raise ValueError(f"{path} holds a single model, not a pipeline: component={component!r} "
                         f"cannot be picked")
    else:
        prefix = ""
    where = f"model file {path}" + (f" (component {component!r})" if component else "")
    # Quantized rows come as the reader's own memory (hold=True), not copies: the packed
    # buffers are views of the decompressed record batch or of the file's mapping.
    rows = {r[0][len(prefix):]: r for r in _ext._model_rows(path, prefix or None, hold=True)}

    expected = {k: v for k, v in module.state_dict(keep_vars=True).items()
                if not k.endswith("_extra_state")}
    for k, v in expected.items():
        if k not in rows:
            raise ValueError(f"Tensor '{k}' of the model is missing in {where}: the file does "
                             f"not match the model")
        shape = list(rows[k][6])
        if list(v.shape) != shape:
            raise ValueError(f"Tensor '{k}': {where} holds shape {shape}, the model expects "
                             f"{list(v.shape)}")
    for k in rows:
        if k not in expected:
            raise ValueError(f"Tensor '{k}' of {where} has no place in the model: the file does "
                             f"not match the model")

    workspace = _Workspace()
    packed = set()
    # Names, not modules: each layer replaced goes at once (its memory serves the next one).
    layer_names = [n for n, m in module.named_modules()
                   if n and isinstance(m, (nn.Linear, nn.Conv2d))]  # the root stays dense
    for mod_name in layer_names:
        mod = module.get_submodule(mod_name)
        wname = f"{mod_name}.weight" if mod_name else "weight"
        row = rows.get(wname)
        if row is None or row[3]:  # kept in the file
            continue
        bname = f"{mod_name}.bias" if mod_name else "bias"
        bias = None
        if mod.bias is not None:
            bias = nn.Parameter(_dense(rows[bname], mod.bias.dtype),
                                requires_grad=mod.bias.requires_grad)
            packed.add(bname)
        q, s, z = _row_tensors(row)
        kw = dict(name=row[0], scheme=row[1], bit_width=row[4], group_size=row[5], qdata=q,
                  scales=s, zero_points=z, bias=bias, dtype=mod.weight.dtype,
                  workspace=workspace)
        if isinstance(mod, nn.Linear):
            new = PackedLinear(mod.in_features, mod.out_features, **kw)
        else:
            new = PackedConv2d(mod, **kw)
        new._file_check = _FileCheck(row[10])
        new.train(mod.training)
        _set_submodule(module, mod_name, new)
        packed.add(wname)

    for k, v in expected.items():
        if k in packed:
            continue
        owner_name, _, attr = k.rpartition(".")
        owner = module.get_submodule(owner_name)
        t = _dense(rows[k], v.dtype)
        if attr in owner._parameters:
            owner._parameters[attr] = nn.Parameter(t, requires_grad=v.requires_grad)
        else:
            owner._buffers[attr] = t

    for kind, items in (("parameter", module.named_parameters()),
                        ("buffer", module.named_buffers())):
        for k, v in items:
            if v.is_meta:
                raise ValueError(f"The model's {kind} '{k}' is still on the meta device: model "
                                 f"files hold no non-persistent buffers; build the model with "
                                 f"accelerate's init_empty_weights(), which keeps buffers")
    if device is not None:
        module.to(device)
    return module


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
