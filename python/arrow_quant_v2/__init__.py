"""ArrowQuant: 2/4/8-bit weight quantization of Arrow data and numpy arrays.

    from arrow_quant_v2 import ArrowQuantV2
    q = ArrowQuantV2(mode="diffusion")
    result = q.quantize_arrow_batch(batch, bit_width=4)   # RecordBatch in, RecordBatch out
    table_result = q.quantize_arrow(table, bit_width=4)   # Table in, Table out, every chunk

Everything is implemented in C (the extension module arrow_quant_v2.arrow_quant_v2); this
file re-exports it, with the pure-Python helpers of the diffusion mode (diffusion.py:
DiffusionQuantConfig; calibration.py: time-aware calibration of torch models; model.py:
quantize_diffusion_model and validate_quality over whole checkpoints; quantize_gguf and
dequantize_gguf for GGUF files, gguf.py for ggml blocks from numpy).
"""
from .arrow_quant_v2 import (
    DEFAULT_BIT_WIDTH,
    DEFAULT_GROUP_SIZE,
    ArrowQuantV2,
    QuantizationError,
    RecordBatch,
    Schema,
    SkippedLayerWarning,
    Table,
    __version__,
)
from .calibration import ModelCalibration, calibrate
from .diffusion import DiffusionQuantConfig
from .model import (
    GGUFResult,
    QualityReport,
    QuantizationResult,
    dequantize_gguf,
    quantize_diffusion_model,
    quantize_gguf,
    validate_quality,
)

__all__ = [
    "ArrowQuantV2",
    "DiffusionQuantConfig",
    "QualityReport",
    "QuantizationResult",
    "quantize_diffusion_model",
    "quantize_gguf",
    "dequantize_gguf",
    "GGUFResult",
    "validate_quality",
    "calibrate",
    "ModelCalibration",
    "DEFAULT_BIT_WIDTH",
    "DEFAULT_GROUP_SIZE",
    "QuantizationError",
    "RecordBatch",
    "Schema",
    "SkippedLayerWarning",
    "Table",
    "__version__",
]
