"""Type stubs of the C extension module arrow_quant_v2.arrow_quant_v2 (re-exported by the
arrow_quant_v2 package)."""
import os
from typing import Any, Callable, Literal, Mapping, Optional, Protocol, Sequence, Union, overload

__version__: str
DEFAULT_BIT_WIDTH: int
DEFAULT_GROUP_SIZE: int

class _ArrowArrayExportable(Protocol):
    def __arrow_c_array__(self, requested_schema: Optional[object] = ...) -> tuple[object, object]: ...

class _ArrowStreamExportable(Protocol):
    def __arrow_c_stream__(self, requested_schema: Optional[object] = ...) -> object: ...

class _LegacyExportable(Protocol):
    def _export_to_c(self, *pointers: int) -> None: ...

class _Buffer(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...

ArrowBatchLike = Union[_ArrowArrayExportable, _ArrowStreamExportable, _LegacyExportable]
ArrowTableLike = Union[_ArrowStreamExportable, _ArrowArrayExportable, _LegacyExportable]
ProgressCallback = Callable[[int, Optional[int]], Any]
Mode = Literal["diffusion", "time_aware", "base"]
Scheme = Literal["affine", "affine_search", "kquant", "kquant_rows"]

class QuantizationError(ValueError):
    """Bad input or arguments; the message names the layer, column or parameter."""

    status: str

class SkippedLayerWarning(UserWarning):
    """One per layer skipped with continue_on_error=True."""

class Schema:
    """The schema of a light result object."""

    @property
    def names(self) -> list[str]: ...
    @property
    def types(self) -> list[str]: ...
    @property
    def metadata(self) -> Optional[dict[bytes, bytes]]: ...
    def __arrow_c_schema__(self) -> object: ...
    def __eq__(self, other: object) -> bool: ...

class RecordBatch:
    """A result record batch, returned when pyarrow is not importable."""

    @property
    def num_rows(self) -> int: ...
    @property
    def num_columns(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def schema(self) -> Schema: ...
    def __len__(self) -> int: ...
    def column(self, key: Union[str, int]) -> list[Any]: ...
    def to_pylist(self) -> list[dict[str, Any]]: ...
    def to_pydict(self) -> dict[str, list[Any]]: ...
    def __arrow_c_array__(self, requested_schema: Optional[object] = None) -> tuple[object, object]: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...

class Table:
    """A result table (a sequence of record batches), returned when pyarrow is not importable."""

    @property
    def num_rows(self) -> int: ...
    @property
    def num_columns(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    @property
    def schema(self) -> Schema: ...
    def __len__(self) -> int: ...
    def column(self, key: Union[str, int]) -> list[Any]: ...
    def to_pylist(self) -> list[dict[str, Any]]: ...
    def to_batches(self) -> list[RecordBatch]: ...
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...

class ArrowQuantV2:
    """A weight quantizer over the ArrowQuant C library.

    Results are pyarrow objects (pyarrow.RecordBatch / pyarrow.Table) when pyarrow is
    importable, otherwise this module's RecordBatch / Table.
    """

    def __init__(self, mode: Mode = "diffusion", *, threads: int = 0) -> None: ...
    @property
    def mode(self) -> str: ...
    def quantize_arrow_batch(
        self,
        record_batch: ArrowBatchLike,
        bit_width: Optional[int] = None,
        group_size: Optional[int] = None,
        scheme: Optional[Scheme] = None,
        continue_on_error: bool = False,
        progress_callback: Optional[ProgressCallback] = None,
        *,
        min_accuracy: Optional[float] = None,
        target_bpw: Optional[float] = None,
        config: Any = None,
        calibration: Any = None,
    ) -> Any: ...
    def quantize_arrow(
        self,
        table: ArrowTableLike,
        bit_width: Optional[int] = None,
        group_size: Optional[int] = None,
        scheme: Optional[Scheme] = None,
        continue_on_error: bool = False,
        progress_callback: Optional[ProgressCallback] = None,
        *,
        min_accuracy: Optional[float] = None,
        target_bpw: Optional[float] = None,
        config: Any = None,
        calibration: Any = None,
    ) -> Any: ...
    def quantize_batch(
        self,
        weights: Mapping[str, Any],
        bit_width: Optional[int] = None,
        continue_on_error: bool = False,
        progress_callback: Optional[ProgressCallback] = None,
        *,
        group_size: Optional[int] = None,
        scheme: Optional[Scheme] = None,
        min_accuracy: Optional[float] = None,
        target_bpw: Optional[float] = None,
        config: Any = None,
        calibration: Any = None,
    ) -> Any: ...
    def dequantize_arrow(self, result: ArrowTableLike) -> Any: ...


# Model-level functions behind arrow_quant_v2.quantize_diffusion_model and validate_quality
# (model.py); not part of the public API.
# Besides their own arguments, _quantize_model and _quantize_gguf take every setting of the
# library's table (_settings()) as a keyword by its name; _keywords() lists their own.
def _quantize_model(src: str | bytes | os.PathLike[str], dst: str | bytes | os.PathLike[str], *,
                    keep: Sequence[str] | None = ..., bits_for: Sequence[str] | None = ...,
                    schemes: Sequence[str] | None = ..., calibration: Any = ...,
                    progress: Callable[[Mapping[str, Any]], Any] | None = ...,
                    **settings: int | float | bool | str | None) -> dict[str, Any]: ...
def _compare_models(a: str | bytes | os.PathLike[str], b: str | bytes | os.PathLike[str],
                    min_cosine: float | None = ...) -> dict[str, Any]: ...
# GGUF functions behind arrow_quant_v2.quantize_gguf, dequantize_gguf and arrow_quant_v2.gguf.
def _quantize_gguf(src: str | bytes | os.PathLike[str], dst: str | bytes | os.PathLike[str],
                   gguf_type: str, *, keep: Sequence[str] | None = ...,
                   bits_for: Sequence[str] | None = ..., calibration: Any = ...,
                   architecture: str | None = ..., name: str | None = ...,
                   **settings: int | float | bool | str | None) -> dict[str, Any]: ...
def _gguf_encode(gguf_type: str, data: Any, importance: Any = ..., threads: int = ...,
                 gguf_search: str = ...) -> bytes: ...
def _gguf_decode(gguf_type: str, data: Any, count: int, threads: int = ...) -> bytes: ...
def _gguf_to_safetensors(src: str | bytes | os.PathLike[str],
                         dst: str | bytes | os.PathLike[str], dtype: str = ...) -> None: ...


# What the torch runtime (torch.py) needs; not part of the public API.
def _dequantize_into(scheme: str, bit_width: int, group_size: int, shape: Sequence[int],
                     packed: Any, scales: Any, zero_points: Any, out: Any,
                     out_dtype: Literal["f32", "f16", "bf16"] = ..., *,
                     name: str | None = ..., threads: int = ...) -> None: ...
class _HeldBuffer:
    """Memory of a model file row used in place: a writable buffer (buffer protocol)."""
    def __buffer__(self, flags: int, /) -> memoryview: ...
def _model_rows(path: str | bytes | os.PathLike[str], prefix: str | None = ..., *,
                hold: bool = ...) -> list[tuple[Any, ...]]: ...
def _hold_check(hold: Any) -> None: ...
def _model_metadata(path: str | bytes | os.PathLike[str], key: str) -> str | None: ...
