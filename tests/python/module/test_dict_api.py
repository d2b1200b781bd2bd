"""quantize_batch: a dict of numpy arrays (or anything with the buffer protocol)."""
import array

import numpy as np
import pytest

from aqmodule_util import EXPECTED_COLUMNS, make_batch, pa, weights

from arrow_quant_v2 import QuantizationError, SkippedLayerWarning


def test_dict_of_float32_arrays_matches_the_arrow_path(quantizer):
    layers = {"a": weights(1000), "b": weights(20000, seed=1, shape=(100, 200))}
    result = quantizer.quantize_batch(layers, bit_width=4)
    assert isinstance(result, pa.RecordBatch)
    assert result.schema.names == EXPECTED_COLUMNS
    assert result.column("layer_name").to_pylist() == ["a", "b"]
    assert result.column("shape").to_pylist() == [[1000], [100, 200]]
    via_arrow = quantizer.quantize_arrow_batch(make_batch(list(layers.items())))
    assert result.equals(via_arrow)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_are_converted(quantizer, dtype):
    w = weights(4096, shape=(32, 128)).astype(dtype)
    result = quantizer.quantize_batch({"w": w})
    reference = quantizer.quantize_batch({"w": w.astype(np.float32)})
    assert result.equals(reference)  # float16 and float64 -> float32 are exact here or rounded


def test_shape_comes_from_the_buffer(quantizer):
    w = weights(2 * 3 * 4 * 5, shape=(2, 3, 4, 5))
    result = quantizer.quantize_batch({"conv": w})
    assert result.column("shape").to_pylist() == [[2, 3, 4, 5]]
    scalar = quantizer.quantize_batch({"s": np.float32(1.5).reshape(())})
    assert scalar.num_rows == 1


def test_non_contiguous_array_is_a_value_error_naming_the_layer(quantizer):
    w = weights(20000, shape=(100, 200))
    with pytest.raises(ValueError, match="Layer 'transposed' is not C-contiguous"):
        quantizer.quantize_batch({"ok": w, "transposed": w.T})
    with pytest.raises(ValueError, match="'strided'"):
        quantizer.quantize_batch({"strided": w[:, ::2]})


def test_other_buffer_objects_are_accepted(quantizer):
    values = [float(x) for x in weights(300)]
    a = quantizer.quantize_batch({"w": array.array("f", values)})
    b = quantizer.quantize_batch({"w": memoryview(np.array(values, dtype=np.float32))})
    assert a.equals(b)


def test_wrong_dtypes_and_objects(quantizer):
    with pytest.raises(ValueError, match="Layer 'ints' has element format"):
        quantizer.quantize_batch({"ints": np.arange(100, dtype=np.int32)})
    with pytest.raises(ValueError, match="Layer 'be'"):
        quantizer.quantize_batch({"be": weights(100).astype(">f4")})
    with pytest.raises(TypeError, match="Layer 'list'"):
        quantizer.quantize_batch({"list": [1.0, 2.0]})
    with pytest.raises(TypeError, match="layer names must be str"):
        quantizer.quantize_batch({1: weights(10)})
    with pytest.raises(TypeError, match="dict"):
        quantizer.quantize_batch([weights(10)])


def test_errors_of_the_core_keep_their_text(quantizer):
    w = weights(1000)
    w[500] = np.nan
    with pytest.raises(QuantizationError, match=r"^Layer 'n' contains NaN or Inf at index 500$") as e:
        quantizer.quantize_batch({"n": w})
    assert e.value.status == "AQ_NON_FINITE"
    with pytest.raises(ValueError, match=r"^Invalid bit_width: 3\. Must be 2, 4, or 8$"):
        quantizer.quantize_batch({"w": weights(10)}, bit_width=3)


def test_continue_on_error_keeps_the_good_layers(quantizer):
    bad = weights(1000, shape=(10, 100))
    bad[3, 7] = -np.inf
    with pytest.warns(SkippedLayerWarning, match="'bad'.*index 307"):
        result = quantizer.quantize_batch({"a": weights(100), "bad": bad, "c": weights(50)},
                                          continue_on_error=True)
    assert result.column("layer_name").to_pylist() == ["a", "c"]


def test_empty_dict_gives_an_empty_result(quantizer):
    result = quantizer.quantize_batch({})
    assert result.num_rows == 0
    assert result.schema.names == EXPECTED_COLUMNS


def test_dict_result_dequantizes(quantizer):
    w = weights(4096, shape=(16, 256))
    restored = quantizer.dequantize_arrow(quantizer.quantize_batch({"w": w}, bit_width=8))
    got = np.array(restored.column("weights")[0].as_py(), dtype=np.float32).reshape(16, 256)
    assert np.max(np.abs(got - w)) < 0.05
