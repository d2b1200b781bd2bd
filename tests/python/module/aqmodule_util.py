"""Helpers of the arrow_quant_v2 module tests: input batches built with pyarrow, and the same
data handed over by other Arrow producers (polars, duckdb) through the PyCapsule interface."""
import numpy as np
import pytest

try:
    import pyarrow as pa
except ImportError:  # the .venv-nopyarrow run collects only test_no_pyarrow.py
    pa = None

EXPECTED_COLUMNS = ["layer_name", "quantized_data", "scales", "zero_points", "shape", "bit_width"]
EXPECTED_TYPES = [
    pa.string(),
    pa.binary(),
    pa.list_(pa.float32()),
    pa.list_(pa.float32()),
    pa.list_(pa.int64()),
    pa.uint8(),
] if pa is not None else None


def weights(n, seed=0, shape=None):
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return w if shape is None else w.reshape(shape)


def make_batch(layers, with_shape=True, weights_type=None, name_type=None):
    """layers: list of (name, numpy array). A RecordBatch with columns layer_name, weights
    (list<float32> unless told) and shape (list<int64>)."""
    weights_type = weights_type or pa.list_(pa.float32())
    cols = {
        "layer_name": pa.array([n for n, _ in layers], type=name_type or pa.string()),
        "weights": pa.array([np.asarray(a).ravel() for _, a in layers], type=weights_type),
    }
    if with_shape:
        cols["shape"] = pa.array([list(np.shape(a)) for _, a in layers],
                                 type=pa.list_(pa.int64()))
    return pa.record_batch(cols)


def _to_polars(batch):
    pl = pytest.importorskip("polars")
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    return pl.from_arrow(table)


def _to_duckdb(batch):
    duckdb = pytest.importorskip("duckdb")
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    return duckdb.from_arrow(table)  # a DuckDBPyRelation on the default connection


PRODUCERS = {
    "pyarrow": lambda b: b,
    "polars": _to_polars,
    "duckdb": _to_duckdb,
}

