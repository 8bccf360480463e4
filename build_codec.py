"""Build the compiled codec (reactor_mux.codec._ccodec) from csrc/ with cffi.

cffi's out-of-line API mode: ``cdef`` declares what Python may call (the
part of each header between its cdef-begin and cdef-end comments, so the
headers stay the one declaration), ``set_source`` compiles csrc/rmux_codec.c
(the frame codec) and csrc/rmux_plane.c (the data plane) into one extension
module.  setup.py wires it in through
``cffi_modules``; the extension is ``optional``, so where no compiler works
``pip install .`` still succeeds and the pure-Python backend is used
(``REACTOR_MUX_CODEC=c`` then refuses to start, which is how CI notices).

Standalone: ``python build_codec.py`` builds the module in place (extra
compiler flags, e.g. sanitizers, come from CFLAGS/LDFLAGS).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

HEADER = CSRC / "rmux_codec.h"
PLANE_HEADER = CSRC / "rmux_plane.h"
TLS_HEADER = CSRC / "rmux_tls.h"
CDEF_BEGIN = "/* cdef-begin"
CDEF_END = "/* cdef-end */"


def header_cdef(header: pathlib.Path = HEADER) -> str:
    """The public API for cffi: the header's text from its cdef-begin comment to cdef-end.

    The header is the one declaration of the API, for the C compiler and for
    cffi alike; the include guard and #includes (which cffi cannot parse) stay
    outside the markers.
    """
    text = header.read_text()
    begin = text.find(CDEF_BEGIN)
    end = text.find(CDEF_END)
    if begin < 0 or end < begin:
        raise RuntimeError(f"{header}: no {CDEF_BEGIN} ... {CDEF_END} region")
    return text[begin:end]


CDEF = header_cdef() + header_cdef(PLANE_HEADER) + header_cdef(TLS_HEADER)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "reactor_mux.codec._ccodec",
    '#include "rmux_codec.h"\n#include "rmux_plane.h"\n#include "rmux_tls.h"\n',
    # relative to setup.py, as setuptools wants
    sources=["csrc/rmux_codec.c", "csrc/rmux_plane.c", "csrc/rmux_tls.c"],
    include_dirs=[str(CSRC)],
    libraries=["dl"],  # rmux_tls.c finds OpenSSL in Python's own _ssl (dlopen, dlsym)
    extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
    optional=True,
    py_limited_api=True,  # stable ABI: _ccodec.abi3.so, and setup.py tags the wheel cp310-abi3
)

if __name__ == "__main__":
    import os

    os.chdir(HERE)
    ffibuilder.compile(tmpdir=str(HERE), verbose=True)
