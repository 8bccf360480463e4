/*
 * reactor-mux frame codec: the compiled twin of reactor_mux/codec/_python.py.
 *
 * Plain C99, no Python.h: build_codec.py wraps it with cffi.  Every function
 * mirrors a Python one and must produce the same bytes, records and errors
 * (tests/test_codec_differential.py checks this).  Nothing here allocates
 * per frame or calls back into Python; one call handles a whole buffer.
 *
 * Frame layout: len (u32 BE, body only) | stream id (u32 BE) | kind (u8: 0
 * data, 1 command, 2 datagram) | body.  See docs/protocol.md.
 */
#ifndef RMUX_CODEC_H
#define RMUX_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin
 * build_codec.py hands everything from here to cdef-end to cffi's cdef(), so
 * this is the one declaration of the API for both C and Python.  Keep it to
 * what cffi parses: no #include or #if, and #define only with a plain number
 * (other constants go in an enum, or in rmux_codec.c if Python needn't see
 * them).  _c.py checks the numbers _python.py also has against these. */

#define RMUX_HEADER_SIZE 9
#define RMUX_MAX_FRAMES_PER_SCAN 4096

/* The largest buffer rmux_scan_frames and rmux_decode accept, in bytes: the
 * receive buffer (buf_length) and the staging buffer (staging_capacity).  They
 * return offsets into those buffers as uint32_t (rmux_frame, rmux_record), so
 * past 4 GiB an offset would be silently truncated and name the wrong bytes;
 * a larger buffer is refused with RMUX_ERR_BUFFER_TOO_LARGE instead.  2 GiB
 * leaves every offset, and offset + length, a bit to spare in 32 bits, and is
 * thousands of times the 256 KiB receive buffer a channel grows to. */
#define RMUX_MAX_BUFFER 2147483648

/* A new send ring's size, and the output FIFO's smallest allocation. */
#define RMUX_INITIAL_RING 16384
#define RMUX_INITIAL_OUTPUT 2048

/* The kind byte of a frame header. */
typedef enum rmux_kind {
    RMUX_KIND_DATA = 0,
    RMUX_KIND_COMMAND = 1,
    RMUX_KIND_DATAGRAM = 2 /* one UDP datagram of a mapping: its body within max_data */
} rmux_kind;

/* What rmux_scan_frames and rmux_decode report in *error. */
typedef enum rmux_status {
    RMUX_OK = 0,
    RMUX_ERR_DATA_TOO_LARGE = 1,
    RMUX_ERR_COMMAND_TOO_LARGE = 2,
    RMUX_ERR_BAD_KIND = 3,
    /* The rest are the caller's mistakes, never the peer's: the wrapper treats them as bugs. */
    RMUX_ERR_STAGING_FULL = 4, /* the staging buffer cannot take this run of data */
    RMUX_ERR_BAD_ARGUMENT = 5, /* start/end outside the buffer, or no room for a record */
    RMUX_ERR_BUFFER_TOO_LARGE = 6, /* a buffer longer than RMUX_MAX_BUFFER */
    /* The peer's again. */
    RMUX_ERR_DATAGRAM_TOO_LARGE = 7
} rmux_status;

typedef enum rmux_record_kind {
    RMUX_RECORD_DATA = 0,
    RMUX_RECORD_COMMAND = 1,
    RMUX_RECORD_DATAGRAM = 2 /* a datagram frame's body, in the receive buffer */
} rmux_record_kind;

/* A complete frame in the receive buffer: its body is buf[offset, offset + length).
 * Four uint32s, no padding: _c.py unpacks an array of them in one struct call. */
typedef struct rmux_frame {
    uint32_t stream_id;
    uint32_t kind; /* rmux_kind */
    uint32_t offset;
    uint32_t length;
} rmux_frame;

/* What the caller handles: a command (body in the receive buffer) or a stream's
 * spliced data (in the staging buffer).  Same layout rule as rmux_frame. */
typedef struct rmux_record {
    uint32_t kind; /* rmux_record_kind */
    uint32_t stream_id;
    uint32_t offset;
    uint32_t length;
} rmux_record;

/* Scratch space for rmux_decode, reused across calls (single-threaded use). */
typedef struct rmux_scratch rmux_scratch;

rmux_scratch *rmux_scratch_new(void);
void rmux_scratch_free(rmux_scratch *scratch);

void rmux_encode_header(uint8_t *out, uint32_t length, uint32_t stream_id, uint8_t kind);

/* Parse up to max_frames complete frames of buf[start, end) into frames[]
 * (which holds max_frames).  buf holds buf_length bytes, at most
 * RMUX_MAX_BUFFER (else RMUX_ERR_BUFFER_TOO_LARGE); start <= end <=
 * buf_length (else RMUX_ERR_BAD_ARGUMENT); either error reads nothing.
 * Returns the count; *next_start is the first unparsed offset (the offending
 * header on error); *error is RMUX_OK or the first violation. */
size_t rmux_scan_frames(const uint8_t *buf, size_t buf_length, size_t start, size_t end,
                        uint32_t max_data, uint32_t max_command, size_t max_frames,
                        rmux_frame *frames, size_t *next_start, rmux_status *error);

/* Scan frames from buf[*start, end) and turn them into records[]: a command
 * frame is (COMMAND, id, body_offset, length); a run of data frames is one
 * (DATA, id, staging_offset, length) per stream, in order of first appearance,
 * whose payloads are copied contiguously into staging starting at *staged.
 *
 * buf holds buf_length bytes, staging staging_capacity and records
 * records_capacity entries, and nothing is read or written past them: each
 * frame makes at most one record, so a call scans at most records_capacity
 * (and RMUX_MAX_FRAMES_PER_SCAN) frames, and a caller with more calls again.
 * start <= end <= buf_length and records_capacity > 0, or nothing happens and
 * *error is RMUX_ERR_BAD_ARGUMENT; a buf_length or staging_capacity over
 * RMUX_MAX_BUFFER is refused the same way with RMUX_ERR_BUFFER_TOO_LARGE.
 *
 * Returns the record count; advances *start and *staged; *nframes is the
 * number of frames scanned; *error as above. */
size_t rmux_decode(rmux_scratch *scratch, const uint8_t *buf, size_t buf_length, size_t *start,
                   size_t end, uint32_t max_data, uint32_t max_command, uint8_t *staging,
                   size_t staging_capacity, size_t *staged, rmux_record *records,
                   size_t records_capacity, size_t *nframes, rmux_status *error);

/* ---- outbound: per-stream rings and the channel's output FIFO ---- */

/* What the rmux_tx functions return.  Those that return a count or a slot
 * instead use the negative values for their failures.  Every one that
 * allocates does so before it changes any state, so after RMUX_TX_NO_MEMORY
 * the rmux_tx is exactly as it was and the call can simply be tried again. */
typedef enum rmux_tx_status {
    RMUX_TX_OK = 0,
    RMUX_TX_INVALID = -1,   /* a slot not open, or an argument the call refuses */
    RMUX_TX_NO_MEMORY = -2, /* an allocation failed, and the call changed nothing */
    RMUX_TX_NO_ROOM = -3    /* rmux_tx_append: the frame would exceed the capacity */
} rmux_tx_status;

typedef struct rmux_tx rmux_tx;

rmux_tx *rmux_tx_new(uint32_t frame_size, uint32_t budget, uint32_t capacity);
void rmux_tx_free(rmux_tx *tx);
/* Shrink the largest data frame (the peer announced a smaller maximum); INVALID if not smaller. */
rmux_tx_status rmux_tx_set_frame_size(rmux_tx *tx, uint32_t frame_size);
/* Bytes waiting in all send rings (not counting the output FIFO). */
uint64_t rmux_tx_buffered_total(const rmux_tx *tx);
/* Bytes of storage the send rings hold (their capacities: what the cap bounds). */
uint64_t rmux_tx_held_total(const rmux_tx *tx);

/* Returns a slot (>= 0), or RMUX_TX_NO_MEMORY. */
int32_t rmux_tx_open(rmux_tx *tx, uint32_t stream_id, uint32_t limit);
/* INVALID if the slot is not open. */
rmux_tx_status rmux_tx_close(rmux_tx *tx, int32_t slot);
/* Raise a ring's limit (the peer grew the stream's window); INVALID for a bad
 * slot or a lower limit. */
rmux_tx_status rmux_tx_set_limit(rmux_tx *tx, int32_t slot, uint32_t limit);
void rmux_tx_drop_streams(rmux_tx *tx);
/* Buffered bytes, or RMUX_TX_INVALID if the slot is not open. */
int64_t rmux_tx_buffered(rmux_tx *tx, int32_t slot);
/* Free the storage of every empty ring (they start small again); returns the bytes freed. */
uint64_t rmux_tx_release_idle(rmux_tx *tx);
/* A quiet channel: free the output FIFO if it holds nothing and grew past
 * RMUX_INITIAL_OUTPUT (it starts small again). */
void rmux_tx_release_output(rmux_tx *tx);
/* Free space for up to count bytes (fewer while the ring may not grow yet: see
 * the growth rule in rmux_codec.c), in up to two regions.  INVALID for a bad
 * slot, a stream already finished or count beyond the limit. */
rmux_tx_status rmux_tx_reserve(rmux_tx *tx, int32_t slot, uint32_t count, uint8_t **first,
                               uint32_t *first_length, uint8_t **second,
                               uint32_t *second_length);
/* INVALID for a bad slot or count beyond the reserved space. */
rmux_tx_status rmux_tx_commit(rmux_tx *tx, int32_t slot, uint32_t count);
rmux_tx_status rmux_tx_finish(rmux_tx *tx, int32_t slot);
/* Keep sent bytes in their rings until acknowledged (resume); off by default. */
void rmux_tx_set_retain(rmux_tx *tx, int retain);
int rmux_tx_retains(const rmux_tx *tx);
/* Retained bytes, or RMUX_TX_INVALID if the slot is not open. */
int64_t rmux_tx_retained(rmux_tx *tx, int32_t slot);
/* Forget the oldest count retained bytes; INVALID beyond what is retained. */
rmux_tx_status rmux_tx_acknowledge(rmux_tx *tx, int32_t slot, uint32_t count);
/* Make the newest count retained bytes unsent again; INVALID beyond what is retained. */
rmux_tx_status rmux_tx_rewind(rmux_tx *tx, int32_t slot, uint32_t count);
/* Append a whole frame to the FIFO if it fits within the capacity (else NO_ROOM, for
 * any length). */
rmux_tx_status rmux_tx_append(rmux_tx *tx, const uint8_t *frame, size_t length);
/* Data frames round-robin, and FINs, into the FIFO.  Writes the ids of
 * streams whose FIN was appended to fins[] (at most max_fins); returns their
 * count, or RMUX_TX_NO_MEMORY (nothing was moved: the FIFO grows first, to
 * what the call may append). */
int64_t rmux_tx_fill(rmux_tx *tx, uint32_t *fins, size_t max_fins);
size_t rmux_tx_unsent(const rmux_tx *tx);
int rmux_tx_has_data(const rmux_tx *tx);
uint8_t *rmux_tx_pending(rmux_tx *tx, size_t *length);
/* INVALID if count exceeds the unsent bytes. */
rmux_tx_status rmux_tx_sent(rmux_tx *tx, size_t count);
/* Forget the FIFO's unsent bytes and keep the rings (the channel broke: what was
 * in the FIFO is retained, and a rewind sends it again on the next channel). */
void rmux_tx_drop_output(rmux_tx *tx);

/* What rmux_tx_gather describes: the FIFO's unsent bytes, then whole frames
 * whose headers are here and whose data stays in the rings, for one sendmsg. */
#define RMUX_GATHER_SPANS 64
#define RMUX_GATHER_HEADERS 32
#define RMUX_GATHER_HEADER_SIZE 12 /* a header, or a whole FIN frame */
typedef struct rmux_span {
    const uint8_t *base;
    size_t length;
} rmux_span;
typedef struct rmux_gather {
    rmux_span spans[RMUX_GATHER_SPANS];
    uint32_t nspans;
    size_t length; /* all the spans' bytes */
    size_t fifo;   /* of which the FIFO's, in spans[0] */
    uint8_t headers[RMUX_GATHER_HEADERS][RMUX_GATHER_HEADER_SIZE];
} rmux_gather;

/* rmux_tx_fill without the copy: frames taken round-robin exactly as it takes
 * them (the streams advance as if they were in the FIFO) are described in
 * *gather after the FIFO's unsent bytes.  rmux_tx_gathered must follow before
 * any other call on tx: the spans point into the rings.  Returns the FINs' count
 * or RMUX_TX_NO_MEMORY (nothing taken), as rmux_tx_fill. */
int64_t rmux_tx_gather(rmux_tx *tx, uint32_t *fins, size_t max_fins, rmux_gather *gather);
/* count of the gather's bytes were sent: the rest moves into the FIFO (the room
 * was made by rmux_tx_gather), so the next send starts where this one stopped. */
void rmux_tx_gathered(rmux_tx *tx, const rmux_gather *gather, size_t count);

/* cdef-end */

#endif
