"""Build the compiled codec (reactor_mux.codec._ccodec) from csrc/ with cffi.

cffi's out-of-line API mode: ``cdef`` declares what Python may call,
``set_source`` compiles csrc/rmux_codec.c into an extension module.  setup.py
wires it in through ``cffi_modules``; the extension is ``optional``, so where no
compiler works ``pip install .`` still succeeds and the pure-Python backend is
used (``REACTOR_MUX_CODEC=c`` then refuses to start, which is how CI notices).

Standalone: ``python build_codec.py`` builds the module in place (extra
compiler flags, e.g. sanitizers, come from CFLAGS/LDFLAGS).
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

CDEF = """
typedef struct { uint32_t a, b, c, d; } rmux_quad;
typedef struct rmux_scratch rmux_scratch;
typedef struct rmux_tx rmux_tx;

#define RMUX_MAX_FRAMES_PER_SCAN ...

rmux_scratch *rmux_scratch_new(void);
void rmux_scratch_free(rmux_scratch *scratch);
void rmux_encode_header(uint8_t *out, uint32_t length, uint32_t stream_id, uint8_t kind);
size_t rmux_scan_frames(const uint8_t *buf, size_t start, size_t end, uint32_t max_data,
                        uint32_t max_command, size_t max_frames, rmux_quad *frames,
                        size_t *next_start, int *error);
size_t rmux_decode(rmux_scratch *scratch, const uint8_t *buf, size_t *start, size_t end,
                   uint32_t max_data, uint32_t max_command, uint8_t *staging,
                   size_t staging_capacity, size_t *staged, rmux_quad *records,
                   size_t *nframes, int *error);

rmux_tx *rmux_tx_new(uint32_t frame_size, uint32_t budget, uint32_t capacity);
void rmux_tx_free(rmux_tx *tx);
int rmux_tx_set_frame_size(rmux_tx *tx, uint32_t frame_size);
uint64_t rmux_tx_buffered_total(const rmux_tx *tx);
uint64_t rmux_tx_held_total(const rmux_tx *tx);
int32_t rmux_tx_open(rmux_tx *tx, uint32_t stream_id, uint32_t limit);
int rmux_tx_close(rmux_tx *tx, int32_t slot);
void rmux_tx_drop_streams(rmux_tx *tx);
int64_t rmux_tx_buffered(rmux_tx *tx, int32_t slot);
uint64_t rmux_tx_release_idle(rmux_tx *tx);
int rmux_tx_reserve(rmux_tx *tx, int32_t slot, uint32_t count, uint8_t **first,
                    uint32_t *first_length, uint8_t **second, uint32_t *second_length);
int rmux_tx_commit(rmux_tx *tx, int32_t slot, uint32_t count);
int rmux_tx_finish(rmux_tx *tx, int32_t slot);
int rmux_tx_append(rmux_tx *tx, const uint8_t *frame, size_t length);
int64_t rmux_tx_fill(rmux_tx *tx, uint32_t *fins, size_t max_fins);
size_t rmux_tx_unsent(const rmux_tx *tx);
int rmux_tx_has_data(const rmux_tx *tx);
uint8_t *rmux_tx_pending(rmux_tx *tx, size_t *length);
int rmux_tx_sent(rmux_tx *tx, size_t count);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "reactor_mux.codec._ccodec",
    '#include "rmux_codec.h"\n'
    "#include <stdlib.h>\n"
    "static rmux_scratch *rmux_scratch_new(void) { return calloc(1, sizeof(rmux_scratch)); }\n"
    "static void rmux_scratch_free(rmux_scratch *s) { free(s); }\n",
    sources=["csrc/rmux_codec.c"],  # relative to setup.py, as setuptools wants
    include_dirs=[str(CSRC)],
    extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
    optional=True,
    py_limited_api=True,  # stable ABI: _ccodec.abi3.so, and setup.py tags the wheel cp310-abi3
)

if __name__ == "__main__":
    import os

    os.chdir(HERE)
    ffibuilder.compile(tmpdir=str(HERE), verbose=True)
