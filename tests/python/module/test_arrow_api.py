"""quantize_arrow_batch / quantize_arrow / dequantize_arrow: the behaviours users rely on
(numbered), each with pyarrow, polars and duckdb objects as input."""
import math
import re
import warnings

import numpy as np
import pytest

from aqmodule_util import EXPECTED_COLUMNS, EXPECTED_TYPES, make_batch, pa, weights

import arrow_quant_v2
from arrow_quant_v2 import ArrowQuantV2, QuantizationError, SkippedLayerWarning


def test_01_one_layer_gives_the_six_columns(base_quantizer, produce):
    batch = make_batch([("layer.0.weight", weights(1000))])
    result = base_quantizer.quantize_arrow_batch(produce(batch), bit_width=4)
    assert isinstance(result, pa.RecordBatch)
    assert result.num_rows == 1
    assert result.schema.names == EXPECTED_COLUMNS
    assert result.column("layer_name").to_pylist() == ["layer.0.weight"]
    assert result.column("bit_width").to_pylist() == [4]
    assert len(result.column("quantized_data")[0].as_py()) == 500  # 1000 codes of 4 bits


def test_02_five_layers_keep_input_order(quantizer, produce):
    names = [f"blocks.{i}.attn.weight" for i in (3, 0, 4, 1, 2)]
    batch = make_batch([(n, weights(256, seed=i)) for i, n in enumerate(names)])
    result = quantizer.quantize_arrow_batch(produce(batch))
    assert result.column("layer_name").to_pylist() == names


def test_03_two_dimensional_shape_is_kept(base_quantizer, produce):
    batch = make_batch([("conv", weights(20000, shape=(100, 200)))])
    result = base_quantizer.quantize_arrow_batch(produce(batch), bit_width=4)
    assert result.column("shape").to_pylist() == [[100, 200]]
    # groups never straddle rows: 100 rows of ceil(200 / 128) = 2 groups
    assert len(result.column("scales")[0].as_py()) == 200


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_04_bit_widths_are_reported(base_quantizer, produce, bits):
    batch = make_batch([("w", weights(1000))])
    result = base_quantizer.quantize_arrow_batch(produce(batch), bit_width=bits)
    assert result.column("bit_width").to_pylist() == [bits]
    assert len(result.column("quantized_data")[0].as_py()) == 1000 * bits // 8


def test_05_bit_width_3_is_a_value_error(quantizer, produce):
    batch = make_batch([("w", weights(1000))])
    with pytest.raises(ValueError, match="Invalid bit_width") as info:
        quantizer.quantize_arrow_batch(produce(batch), bit_width=3)
    assert str(info.value) == "Invalid bit_width: 3. Must be 2, 4, or 8"
    assert isinstance(info.value, QuantizationError)
    with pytest.raises(ValueError, match="Invalid bit_width"):
        quantizer.quantize_arrow(produce(batch), bit_width=3)


def test_06_missing_layer_name(quantizer, produce):
    batch = pa.record_batch({"weights": pa.array([weights(100)], type=pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="Missing required column 'layer_name'") as info:
        quantizer.quantize_arrow_batch(produce(batch))
    assert str(info.value) == (
        "Missing required column 'layer_name'. Expected schema: {layer_name: string, "
        "weights: list<float32>, shape: list<int64>}")
    with pytest.raises(ValueError, match="Missing required column 'layer_name'"):
        quantizer.quantize_arrow(produce(batch))


def test_07_missing_weights(quantizer, produce):
    batch = pa.record_batch({"layer_name": ["w"]})
    with pytest.raises(ValueError, match="Missing required column 'weights'") as info:
        quantizer.quantize_arrow_batch(produce(batch))
    assert str(info.value).startswith("Missing required column 'weights'. Expected schema: ")
    with pytest.raises(ValueError, match="Missing required column 'weights'"):
        quantizer.quantize_arrow(produce(batch))


def test_08_nan_names_layer_and_index(quantizer, produce):
    w = weights(1000)
    w[500] = np.nan
    batch = make_batch([("ok", weights(1000)), ("bad.weight", w)])
    with pytest.raises(ValueError, match="contains NaN or Inf") as info:
        quantizer.quantize_arrow_batch(produce(batch))
    assert str(info.value) == "Layer 'bad.weight' contains NaN or Inf at index 500"
    with pytest.raises(ValueError, match=re.escape("Layer 'bad.weight' contains NaN or Inf")):
        quantizer.quantize_arrow(produce(batch))


def test_09_inf_names_layer_and_index(quantizer, produce):
    w = weights(1000)
    w[500] = np.inf
    batch = make_batch([("bad.weight", w)])
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        quantizer.quantize_arrow_batch(produce(batch))


def test_10_without_shape_column_shape_is_length(quantizer, produce):
    batch = make_batch([("w", weights(1000))], with_shape=False)
    assert batch.schema.names == ["layer_name", "weights"]
    result = quantizer.quantize_arrow_batch(produce(batch))
    assert result.column("shape").to_pylist() == [[1000]]


def test_11_one_million_values(base_quantizer, produce):
    w = weights(1_000_000)
    result = base_quantizer.quantize_arrow_batch(produce(make_batch([("big", w)])), bit_width=4)
    assert result.num_rows == 1
    assert len(result.column("quantized_data")[0].as_py()) == 500_000
    assert len(result.column("scales")[0].as_py()) == math.ceil(1_000_000 / 128)


def test_12_empty_typed_batch_gives_zero_rows(quantizer, produce):
    batch = pa.record_batch(
        {
            "layer_name": pa.array([], type=pa.string()),
            "weights": pa.array([], type=pa.list_(pa.float32())),
            "shape": pa.array([], type=pa.list_(pa.int64())),
        }
    )
    result = quantizer.quantize_arrow_batch(produce(batch))
    assert result.num_rows == 0
    assert result.schema.names == EXPECTED_COLUMNS
    table = quantizer.quantize_arrow(produce(batch))
    assert table.num_rows == 0
    assert table.schema.names == EXPECTED_COLUMNS


def test_13_batch_and_table_api_agree(quantizer, produce):
    batch = make_batch([(f"l{i}", weights(3000 + 7 * i, seed=i)) for i in range(4)])
    a = quantizer.quantize_arrow_batch(produce(batch))
    t = quantizer.quantize_arrow(produce(batch))
    assert isinstance(t, pa.Table)
    assert a.schema.equals(t.schema, check_metadata=True)
    assert a.column("quantized_data").to_pylist() == t.column("quantized_data").to_pylist()
    assert pa.Table.from_batches([a]).equals(t.combine_chunks())


def test_14_default_bit_width_is_4(quantizer, produce):
    # A matrix: the diffusion layer rules (on by default in this mode) keep small vectors. Three
    # whole kquant super-blocks: 4 bits fit the mode's 4.5 bits per weight (a tensor that ends
    # in a partial super-block takes more than 4.5 at 4 bits, so alone it gets fewer).
    batch = make_batch([("w", weights(1536, shape=(16, 96)))])
    result = quantizer.quantize_arrow_batch(produce(batch))
    assert result.column("bit_width").to_pylist() == [4]
    explicit = quantizer.quantize_arrow_batch(produce(batch), bit_width=4)
    assert result.equals(explicit)
    assert quantizer.quantize_arrow(produce(batch)).column("bit_width").to_pylist() == [4]
    assert arrow_quant_v2.DEFAULT_BIT_WIDTH == 4


# -- Also ---------------------------------------------------------------------------------------


def test_result_column_types_are_exact(base_quantizer, produce):
    result = base_quantizer.quantize_arrow_batch(produce(make_batch([("w", weights(300))])))
    assert [f.type for f in result.schema] == EXPECTED_TYPES
    md = result.schema.metadata
    assert md[b"arrowquant.scheme"] == b"affine"
    assert md[b"arrowquant.group_size"] == b"128"
    table = base_quantizer.quantize_arrow(produce(make_batch([("w", weights(300))])))
    assert [f.type for f in table.schema] == EXPECTED_TYPES


def test_list_double_weights_are_converted(quantizer, produce):
    values = weights(500)
    inferred = pa.RecordBatch.from_pydict(
        {"layer_name": ["w"], "weights": [[float(v) for v in values]]})
    assert inferred.schema.field("weights").type == pa.list_(pa.float64())
    as_f32 = make_batch([("w", values)], with_shape=False)
    a = quantizer.quantize_arrow_batch(produce(inferred))
    b = quantizer.quantize_arrow_batch(as_f32)
    assert a.column("quantized_data").equals(b.column("quantized_data"))
    assert a.column("scales").equals(b.column("scales"))


def test_large_string_and_large_list_are_accepted(quantizer, produce):
    layers = [("a", weights(400)), ("b", weights(300, seed=1, shape=(3, 100)))]
    large = make_batch(layers, weights_type=pa.large_list(pa.float32()),
                       name_type=pa.large_string())
    plain = make_batch(layers)
    a = quantizer.quantize_arrow_batch(produce(large))
    assert a.column("layer_name").to_pylist() == ["a", "b"]
    assert a.equals(quantizer.quantize_arrow_batch(plain))


def test_extra_columns_are_ignored(quantizer, produce):
    base = make_batch([("w", weights(1000))])
    extra = base.append_column("note", pa.array(["ignored"])).append_column(
        "step", pa.array([7], type=pa.int32()))
    a = quantizer.quantize_arrow_batch(produce(extra))
    assert a.schema.names == EXPECTED_COLUMNS
    assert a.equals(quantizer.quantize_arrow_batch(base))


def test_table_of_several_chunks_is_processed_whole(quantizer, produce):
    chunks = [make_batch([(f"c{c}.l{i}", weights(500, seed=10 * c + i)) for i in range(3)])
              for c in range(4)]
    table = pa.Table.from_batches(chunks)
    assert table.column("weights").num_chunks == 4
    result = quantizer.quantize_arrow(produce(table))
    assert result.num_rows == 12
    assert result.column("layer_name").to_pylist() == [
        f"c{c}.l{i}" for c in range(4) for i in range(3)]
    one = quantizer.quantize_arrow_batch(pa.Table.from_batches(chunks).combine_chunks()
                                         .to_batches()[0])
    assert one.column("quantized_data").to_pylist() == \
        result.column("quantized_data").to_pylist()


def test_continue_on_error_skips_bad_layers(quantizer, produce):
    bad = weights(1000)
    bad[17] = np.nan
    batch = make_batch([("good.0", weights(1000)), ("bad", bad), ("good.1", weights(800))])
    for call in (quantizer.quantize_arrow_batch, quantizer.quantize_arrow):
        with pytest.warns(SkippedLayerWarning, match="'bad'.*contains NaN or Inf at index 17"):
            result = call(produce(batch), continue_on_error=True)
        assert result.column("layer_name").to_pylist() == ["good.0", "good.1"]
        with pytest.raises(ValueError, match="contains NaN or Inf"):
            call(produce(batch))


def _check_within_half_scale(original, result_row, restored):
    rows = original.shape[0] if original.ndim > 1 else 1
    flat = original.reshape(rows, -1)
    cols = flat.shape[1]
    per_row = math.ceil(cols / 128)
    scales = np.array(result_row["scales"], dtype=np.float32).reshape(rows, per_row)
    bound = np.repeat(scales, 128, axis=1)[:, :cols] / 2
    err = np.abs(restored.reshape(rows, cols) - flat)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-6)


def test_dequantize_restores_within_half_a_scale(base_quantizer, produce):
    layers = [("a", weights(1000)), ("b", weights(3000, seed=2, shape=(10, 300)))]
    batch = make_batch(layers)
    for bits in (2, 4, 8):
        result = base_quantizer.quantize_arrow_batch(produce(batch), bit_width=bits)
        restored = base_quantizer.dequantize_arrow(result)
        assert isinstance(restored, pa.RecordBatch)
        assert restored.schema.names == ["layer_name", "weights", "shape"]
        assert restored.schema.field("weights").type == pa.list_(pa.float32())
        assert restored.column("shape").to_pylist() == [[1000], [10, 300]]
        rows = result.to_pylist()
        for (name, original), row, got in zip(layers, rows, restored.column("weights")):
            _check_within_half_scale(original, row, np.array(got.as_py(), dtype=np.float32))


def test_dequantize_arrow_keeps_the_kind_of_its_input(quantizer, produce):
    batch = make_batch([("a", weights(1000)), ("b", weights(500, seed=3))])
    table = quantizer.quantize_arrow(produce(batch))
    restored = quantizer.dequantize_arrow(table)
    assert isinstance(restored, pa.Table)
    assert restored.column("layer_name").to_pylist() == ["a", "b"]
    from_batch = quantizer.dequantize_arrow(quantizer.quantize_arrow_batch(batch))
    assert isinstance(from_batch, pa.RecordBatch)
    assert from_batch.column("weights").to_pylist() == \
        restored.column("weights").combine_chunks().to_pylist()


@pytest.mark.parametrize("mode", ["diffusion", "time_aware", "base"])
def test_modes(mode):
    q = ArrowQuantV2(mode=mode)
    assert q.mode == mode
    # Rows of 96: kquant's super-blocks straddle them (docs/format.md 5.2).
    batch = make_batch([("w", weights(1536, shape=(16, 96)))])
    if mode == "time_aware":
        # The mode weighs weights by a calibration's importance: without one, an error that
        # says what to give.
        with pytest.raises(ValueError, match=r"mode='time_aware' .* needs calibration="):
            q.quantize_arrow_batch(batch)
        with pytest.raises(ValueError, match="arrow_quant_v2.calibrate"):
            q.quantize_batch({"w": weights(1000, shape=(8, 125))})
        return
    result = q.quantize_arrow_batch(batch)
    md = result.schema.metadata
    if mode == "base":
        assert md[b"arrowquant.scheme"] == b"affine"
        assert md[b"arrowquant.group_size"] == b"128"
        assert len(result.column("quantized_data")[0].as_py()) == 768
    else:
        # kquant over the flattened tensor: three super-blocks of 512 elements over rows of
        # 96, the sub-block parameters after the codes (docs/format.md 5.2).
        assert md[b"arrowquant.scheme"] == b"kquant"
        assert md[b"arrowquant.group_size"] == b"512"
        assert len(result.column("scales")[0].as_py()) == 3
        assert len(result.column("quantized_data")[0].as_py()) == 768 + 36 + 36


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="Invalid mode: 'fast'"):
        ArrowQuantV2(mode="fast")
    assert ArrowQuantV2().mode == "diffusion"


def test_group_size_and_scheme_keywords(quantizer):
    batch = make_batch([("w", weights(1000, shape=(8, 125)))])
    whole = make_batch([("w", weights(1536, shape=(16, 96)))])
    result = quantizer.quantize_arrow_batch(batch, group_size=64, scheme="affine")
    assert result.schema.metadata[b"arrowquant.group_size"] == b"64"
    assert len(result.column("scales")[0].as_py()) == 8 * math.ceil(125 / 64)
    with pytest.raises(ValueError, match="group_size"):
        quantizer.quantize_arrow_batch(batch, group_size=0)
    with pytest.raises(ValueError, match="nope"):
        quantizer.quantize_arrow_batch(batch, scheme="nope")
    with pytest.raises(TypeError):
        quantizer.quantize_arrow_batch(batch, bit_width="4")
    with pytest.raises(TypeError):
        quantizer.quantize_arrow_batch(batch, bit_width=True)
    as_numpy = quantizer.quantize_arrow_batch(whole, bit_width=np.int64(8))
    assert as_numpy.column("bit_width").to_pylist() == [8]
    with pytest.raises(ValueError, match=r"^Invalid group_size: 1180591620717411303424\. Out"):
        quantizer.quantize_arrow_batch(batch, group_size=2**70)


def test_non_arrow_input_is_a_type_error(quantizer):
    with pytest.raises(TypeError, match="__arrow_c_array__"):
        quantizer.quantize_arrow_batch({"layer_name": ["w"]})
    with pytest.raises(TypeError, match="__arrow_c_stream__"):
        quantizer.quantize_arrow([1, 2, 3])


def test_batch_api_on_a_stream_of_several_batches(quantizer, produce):
    chunks = [make_batch([(f"c{c}.l{i}", weights(700, seed=10 * c + i)) for i in range(3)])
              for c in range(3)]
    table = pa.Table.from_batches(chunks)  # a pyarrow Table has __arrow_c_stream__ only
    result = quantizer.quantize_arrow_batch(produce(table))
    assert isinstance(result, pa.RecordBatch)
    assert result.num_rows == 9
    streamed = quantizer.quantize_arrow(produce(table))
    assert pa.Table.from_batches([result]).equals(streamed.combine_chunks())
    assert result.schema.metadata == streamed.schema.metadata
    empty = pa.Table.from_batches([], schema=chunks[0].schema)
    assert quantizer.quantize_arrow_batch(produce(empty)).num_rows == 0
