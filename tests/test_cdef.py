"""build_codec.py gives cffi the header's own declarations, so C and Python
cannot disagree about a signature: there is no second copy to drift."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

pytestmark = pytest.mark.codec_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["rmux_codec.h", "rmux_plane.h"])
def test_cdef_is_the_headers_public_region(name):
    """Every declaration of each header lies between its cdef-begin and cdef-end
    markers; outside them there are only comments and preprocessor lines."""
    spec = importlib.util.spec_from_file_location("build_codec", ROOT / "build_codec.py")
    assert spec is not None and spec.loader is not None
    build_codec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_codec)  # runs cffi's cdef() on the regions: they must parse
    header = (ROOT / "csrc" / name).read_text()
    region = build_codec.header_cdef(ROOT / "csrc" / name)
    assert region in build_codec.CDEF
    outside = header.replace(region, "")
    outside = re.sub(r"/\*.*?\*/", "", outside, flags=re.DOTALL)
    stray = [line for line in outside.splitlines() if line.strip() and not line.startswith("#")]
    assert not stray, "declarations outside the cdef region are hidden from Python"
    for function in ("rmux_decode", "rmux_tx_sent", "rmux_engine_pump", "rmux_plane_deliver"):
        assert function in build_codec.CDEF
