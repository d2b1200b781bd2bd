"""The shared library loads from Python and reports its version and statuses."""
import ctypes


def test_version_and_status_names(libaq):
    libaq.aq_version_string.restype = ctypes.c_char_p
    libaq.aq_status_name.restype = ctypes.c_char_p
    libaq.aq_status_name.argtypes = [ctypes.c_int]
    assert libaq.aq_version_string().decode().count(".") == 2
    assert libaq.aq_status_name(0) == b"AQ_OK"
    assert libaq.aq_status_name(1) == b"AQ_INVALID_ARGUMENT"
