from .arrow_quant_v2 import (
    DEFAULT_BIT_WIDTH as DEFAULT_BIT_WIDTH,
    DEFAULT_GROUP_SIZE as DEFAULT_GROUP_SIZE,
    ArrowQuantV2 as ArrowQuantV2,
    QuantizationError as QuantizationError,
    RecordBatch as RecordBatch,
    Schema as Schema,
    SkippedLayerWarning as SkippedLayerWarning,
    Table as Table,
    __version__ as __version__,
)
from .calibration import ModelCalibration as ModelCalibration
from .calibration import calibrate as calibrate
from .diffusion import DiffusionQuantConfig as DiffusionQuantConfig
from .model import (
    GGUFResult as GGUFResult,
    QualityReport as QualityReport,
    QuantizationResult as QuantizationResult,
    dequantize_gguf as dequantize_gguf,
    quantize_diffusion_model as quantize_diffusion_model,
    quantize_gguf as quantize_gguf,
    validate_quality as validate_quality,
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
