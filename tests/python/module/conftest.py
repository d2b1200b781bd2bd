"""Fixtures of the arrow_quant_v2 module tests (helpers are in aqmodule_util.py)."""
import pytest

from aqmodule_util import PRODUCERS


@pytest.fixture(params=sorted(PRODUCERS))
def produce(request):
    """Converts a pyarrow RecordBatch into the same data as the producer under test gives it."""
    return PRODUCERS[request.param]


@pytest.fixture
def quantizer():
    from arrow_quant_v2 import ArrowQuantV2

    return ArrowQuantV2(mode="diffusion")



@pytest.fixture
def base_quantizer():
    """Plain affine (mode 'base'), for the tests that check the affine format's sizes."""
    from arrow_quant_v2 import ArrowQuantV2

    return ArrowQuantV2(mode="base")
