"""The GIL is released around the C work; progress callbacks run on the calling thread and
their exceptions propagate."""
import threading
import time

import pytest

from aqmodule_util import make_batch, pa, weights

from arrow_quant_v2 import ArrowQuantV2


def test_another_thread_progresses_during_a_long_quantization():
    q = ArrowQuantV2(mode="diffusion", threads=1)
    layers = {f"l{i}": weights(1_000_000, seed=i) for i in range(24)}
    stamps = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.02)
        t0 = time.perf_counter()
        q.quantize_batch(layers)
        t1 = time.perf_counter()
    finally:
        stop.set()
        spinner.join()
    d = t1 - t0
    # Python code of the other thread ran in the middle of the C call: with the GIL held for
    # the whole call, no stamp could fall strictly inside it.
    inside = [s for s in stamps if t0 + 0.2 * d < s < t1 - 0.2 * d]
    assert d > 0.02, "the quantization was too short to tell"
    assert len(inside) > 100, (len(inside), d)


def _recorder():
    calls = []

    def callback(done, total):
        calls.append((done, total, threading.get_ident()))

    return calls, callback


def test_progress_callbacks_on_the_calling_thread(quantizer):
    me = threading.get_ident()
    batch = make_batch([(f"l{i}", weights(1000, seed=i)) for i in range(5)])

    calls, cb = _recorder()
    quantizer.quantize_arrow_batch(batch, progress_callback=cb)
    assert [(d, t) for d, t, _ in calls] == [(i, 5) for i in range(1, 6)]
    assert {tid for _, _, tid in calls} == {me}

    calls, cb = _recorder()
    quantizer.quantize_arrow(pa.Table.from_batches([batch, batch]), progress_callback=cb)
    assert [(d, t) for d, t, _ in calls] == [(i, None) for i in range(1, 11)]
    assert {tid for _, _, tid in calls} == {me}

    calls, cb = _recorder()
    quantizer.quantize_batch({"a": weights(10), "b": weights(20)}, progress_callback=cb)
    assert [(d, t) for d, t, _ in calls] == [(1, 2), (2, 2)]
    assert {tid for _, _, tid in calls} == {me}


class Stop(Exception):
    pass


def _raise_on_second(done, total):
    if done == 2:
        raise Stop(f"stopped at {done}")


def test_callback_exceptions_propagate(quantizer):
    batch = make_batch([(f"l{i}", weights(1000, seed=i)) for i in range(4)])
    with pytest.raises(Stop, match="stopped at 2"):
        quantizer.quantize_arrow_batch(batch, progress_callback=_raise_on_second)
    with pytest.raises(Stop, match="stopped at 2"):
        quantizer.quantize_arrow(pa.Table.from_batches([batch]),
                                 progress_callback=_raise_on_second)
    with pytest.raises(Stop, match="stopped at 2"):
        quantizer.quantize_batch({f"l{i}": weights(10) for i in range(3)},
                                 progress_callback=_raise_on_second)
    with pytest.raises(TypeError, match="callable"):
        quantizer.quantize_batch({"a": weights(10)}, progress_callback=3)
    # the quantizer is still usable
    assert quantizer.quantize_arrow_batch(batch).num_rows == 4


def test_concurrent_calls_from_several_threads(quantizer):
    batch = make_batch([(f"l{i}", weights(20000, seed=i)) for i in range(4)])
    expected = quantizer.quantize_arrow_batch(batch)
    results = [None] * 4

    def work(i):
        results[i] = quantizer.quantize_arrow_batch(batch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.equals(expected) for r in results)
