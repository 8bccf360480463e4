/*
 * C-level tests of the codec's boundary with its caller (issue 21 item 6): the
 * cases the Python tests cannot reach, because the wrapper never makes them.
 *
 * tests/test_sanitizers.py builds this with -fsanitize=address,undefined and
 * runs each case by name (`test_boundary CASE`), so a write or read past a
 * buffer is a sanitizer report even where the values would look right.
 *
 * It includes rmux_codec.c itself rather than linking it, for two reasons: the
 * codec's allocator macros can then name a wrapper that fails the allocation
 * a test chooses, and the allocation test can compare an rmux_tx's whole
 * internal state before and after a call that failed.
 *
 * Exit status: 0 passed, 1 failed (what failed on stderr), 2 no such case,
 * 77 skipped (why on stdout).
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS and MAP_NORESERVE under -std=c99 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The codec's allocator here: the C library's, except that after
 * fail_allocation(k) the k-th allocation from then on (counting from 0) returns
 * NULL.  Only the codec's own allocations are counted; this file's go straight
 * to malloc. */
static long alloc_fail_at = -1; /* -1: none fails */
static long alloc_count;
static int alloc_failed;

static void fail_allocation(long k) {
    alloc_fail_at = k;
    alloc_count = 0;
    alloc_failed = 0;
}

/* Whether the chosen allocation was reached (and failed); stops failing any. */
static int allocation_failed(void) {
    alloc_fail_at = -1;
    return alloc_failed;
}

static int fail_this_one(void) {
    if (alloc_fail_at >= 0 && alloc_count++ == alloc_fail_at) {
        alloc_failed = 1;
        return 1;
    }
    return 0;
}

static void *test_malloc(size_t size) {
    return fail_this_one() ? NULL : malloc(size);
}

static void *test_calloc(size_t count, size_t size) {
    return fail_this_one() ? NULL : calloc(count, size);
}

static void *test_realloc(void *p, size_t size) {
    return fail_this_one() ? NULL : realloc(p, size);
}

#define RMUX_MALLOC test_malloc
#define RMUX_CALLOC test_calloc
#define RMUX_REALLOC test_realloc
#include "../rmux_codec.c"

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: failed: %s\n  ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Heap memory of exactly `size` bytes, so that ASan reports a byte past it. */
static void *exact(size_t size) {
    void *p = malloc(size ? size : 1);
    CHECK(p != NULL, "out of memory");
    return p;
}

static size_t put_frame(uint8_t *at, uint32_t stream_id, uint8_t kind, uint8_t fill,
                        uint32_t length) {
    rmux_encode_header(at, length, stream_id, kind);
    memset(at + RMUX_HEADER_SIZE, fill, length);
    return RMUX_HEADER_SIZE + (size_t)length;
}

/* ------------------------------------------------------------ decode bounds */

enum { FRAMES = 40, BODY = 5, STREAMS = 3, COMMANDS = FRAMES / 4 };

/* 40 frames: every fourth a command, the rest data frames of streams 1 to 3 in
 * turn.  A data body is its stream id repeated, a command body 0xC0 + its index,
 * so every record's bytes can be checked against where they came from. */
static size_t channel_bytes(uint8_t *buf) {
    size_t end = 0;
    for (uint32_t i = 0; i < FRAMES; i++) {
        uint32_t stream_id = 1 + i % STREAMS;
        if (i % 4 == 3) {
            end += put_frame(buf + end, stream_id, RMUX_KIND_COMMAND, (uint8_t)(0xC0 + i), BODY);
        } else {
            end += put_frame(buf + end, stream_id, RMUX_KIND_DATA, (uint8_t)stream_id, BODY);
        }
    }
    return end;
}

/* rmux_decode writes no more records than the caller's array holds, however many
 * frames the buffer has: it scans no more frames than that per call. */
static void decode_records_capacity(void) {
    size_t length = FRAMES * (RMUX_HEADER_SIZE + BODY);
    uint8_t *buf = exact(length);
    uint8_t *staging = exact(length);
    size_t end = channel_bytes(buf);
    rmux_scratch *scratch = rmux_scratch_new();
    CHECK(scratch != NULL, "out of memory");
    for (size_t capacity = 1; capacity <= 5; capacity++) {
        rmux_record *records = exact(capacity * sizeof *records);
        size_t start = 0, staged = 0, frames = 0, commands = 0;
        size_t data[STREAMS + 1] = {0};
        while (start < end) {
            size_t nframes = 0, before = start;
            rmux_status error = RMUX_OK;
            size_t n = rmux_decode(scratch, buf, length, &start, end, 1024, 1024, staging, length,
                                   &staged, records, capacity, &nframes, &error);
            CHECK(error == RMUX_OK, "capacity %zu: error %d", capacity, (int)error);
            CHECK(n <= capacity && nframes <= capacity && n <= nframes,
                  "capacity %zu: %zu records from %zu frames", capacity, n, nframes);
            CHECK(start > before && nframes > 0, "capacity %zu: no progress", capacity);
            frames += nframes;
            for (size_t i = 0; i < n; i++) {
                const rmux_record *r = &records[i];
                if (r->kind == RMUX_RECORD_COMMAND) {
                    CHECK(r->length == BODY && buf[r->offset] >= 0xC0, "bad command record");
                    commands++;
                    continue;
                }
                CHECK(r->stream_id >= 1 && r->stream_id <= STREAMS, "bad stream %u", r->stream_id);
                CHECK((size_t)r->offset + r->length <= staged, "record past the staged bytes");
                for (uint32_t b = 0; b < r->length; b++) {
                    CHECK(staging[r->offset + b] == r->stream_id, "stream %u got another's byte",
                          r->stream_id);
                }
                data[r->stream_id] += r->length;
            }
        }
        CHECK(frames == FRAMES && commands == COMMANDS,
              "capacity %zu: %zu frames, %zu commands", capacity, frames, commands);
        for (uint32_t sid = 1; sid <= STREAMS; sid++) {
            CHECK(data[sid] == (FRAMES - COMMANDS) / STREAMS * BODY,
                  "capacity %zu: stream %u got %zu bytes", capacity, sid, data[sid]);
        }
        free(records);
    }
    /* Nowhere to put a record: refused, rather than a call that can never progress. */
    size_t start = 0, staged = 0, nframes = 99;
    rmux_status error = RMUX_OK;
    size_t n = rmux_decode(scratch, buf, length, &start, end, 1024, 1024, staging, length, &staged,
                           NULL, 0, &nframes, &error);
    CHECK(error == RMUX_ERR_BAD_ARGUMENT && n == 0 && nframes == 0 && start == 0 && staged == 0,
          "records_capacity 0: error %d, %zu records, %zu frames", (int)error, n, nframes);
    rmux_scratch_free(scratch);
    free(staging);
    free(buf);
}

/* rmux_decode and rmux_scan_frames read nothing past buf_length, whatever end
 * the caller claims: a header whose length runs past the buffer is not trusted. */
static void decode_buffer_length(void) {
    enum { LENGTH = 20, CLAIMED = 100 };
    uint8_t *buf = exact(LENGTH);
    uint8_t *staging = exact(4 * CLAIMED);
    rmux_record records[4];
    rmux_frame frames[4];
    /* A data frame whose header says 100 bytes; the buffer has room for 11 of them. */
    rmux_encode_header(buf, CLAIMED, 7, RMUX_KIND_DATA);
    memset(buf + RMUX_HEADER_SIZE, 'x', LENGTH - RMUX_HEADER_SIZE);
    rmux_scratch *scratch = rmux_scratch_new();
    CHECK(scratch != NULL, "out of memory");

    size_t start = 0, staged = 0, nframes = 99;
    rmux_status error = RMUX_OK;
    size_t n = rmux_decode(scratch, buf, LENGTH, &start, RMUX_HEADER_SIZE + CLAIMED, 65536, 1024,
                           staging, 4 * CLAIMED, &staged, records, 4, &nframes, &error);
    CHECK(error == RMUX_ERR_BAD_ARGUMENT && n == 0 && nframes == 0 && start == 0 && staged == 0,
          "end past the buffer: error %d, %zu records, start %zu", (int)error, n, start);

    size_t next = 99;
    n = rmux_scan_frames(buf, LENGTH, 0, RMUX_HEADER_SIZE + CLAIMED, 65536, 1024, 4, frames, &next,
                         &error);
    CHECK(error == RMUX_ERR_BAD_ARGUMENT && n == 0 && next == 0,
          "scan, end past the buffer: error %d, %zu frames, next %zu", (int)error, n, next);

    start = 10;
    n = rmux_decode(scratch, buf, LENGTH, &start, 5, 65536, 1024, staging, 4 * CLAIMED, &staged,
                    records, 4, &nframes, &error);
    CHECK(error == RMUX_ERR_BAD_ARGUMENT && n == 0 && start == 10,
          "start past end: error %d, %zu records, start %zu", (int)error, n, start);

    /* The same header in a buffer as long as end: fine, and the frame is whole. */
    uint8_t *whole = exact(RMUX_HEADER_SIZE + CLAIMED);
    put_frame(whole, 7, RMUX_KIND_DATA, 'x', CLAIMED);
    start = 0;
    n = rmux_decode(scratch, whole, RMUX_HEADER_SIZE + CLAIMED, &start, RMUX_HEADER_SIZE + CLAIMED,
                    65536, 1024, staging, 4 * CLAIMED, &staged, records, 4, &nframes, &error);
    CHECK(error == RMUX_OK && n == 1 && records[0].length == CLAIMED &&
              start == RMUX_HEADER_SIZE + CLAIMED,
          "a whole buffer: error %d, %zu records", (int)error, n);

    free(whole);
    rmux_scratch_free(scratch);
    free(staging);
    free(buf);
}

/* ------------------------------------------------------------ buffer sizes */

#define GIB ((uint64_t)1 << 30)

/* Offsets in rmux_frame and rmux_record are uint32_t: a buffer past
 * RMUX_MAX_BUFFER is refused, rather than answered with offsets that wrapped.
 * The test needs a buffer past 4 GiB, where they would wrap: one mapping of
 * address space of which only the pages written are ever backed by memory. */
static void max_buffer(void) {
    if (sizeof(size_t) < 8) {
        printf("skip: a 32-bit size_t cannot describe a buffer past 4 GiB\n");
        exit(77);
    }
    size_t length = (size_t)(4 * GIB + 65536);
    uint8_t *big = mmap(NULL, length, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (big == MAP_FAILED) {
        printf("skip: cannot map %zu bytes of address space\n", length);
        exit(77);
    }
    rmux_scratch *scratch = rmux_scratch_new();
    CHECK(scratch != NULL, "out of memory");
    rmux_frame frames[2];
    rmux_record records[2];
    size_t next, nframes, staged;
    rmux_status error;

    /* A command frame 4 GiB + 7 bytes in: its body's offset does not fit 32 bits. */
    size_t at = (size_t)(4 * GIB + 7);
    size_t end = at + put_frame(big + at, 5, RMUX_KIND_COMMAND, 'c', 3);
    size_t n = rmux_scan_frames(big, length, at, end, 1024, 1024, 2, frames, &next, &error);
    CHECK(error == RMUX_ERR_BUFFER_TOO_LARGE && n == 0 && next == at,
          "scan of a %zu-byte buffer: error %d, %zu frames, the first's body at offset %u "
          "(it is at %zu)", length, (int)error, n, n ? frames[0].offset : 0, at + 9);
    size_t start = at;
    staged = 0;
    uint8_t staging[64];
    n = rmux_decode(scratch, big, length, &start, end, 1024, 1024, staging, sizeof staging,
                    &staged, records, 2, &nframes, &error);
    CHECK(error == RMUX_ERR_BUFFER_TOO_LARGE && n == 0 && nframes == 0 && start == at,
          "decode of a %zu-byte buffer: error %d, %zu records, the first at offset %u "
          "(it is at %zu)", length, (int)error, n, n ? records[0].offset : 0, at + 9);

    /* A staging buffer past 4 GiB, already filled that far: the next record's
     * offset would not fit either. */
    uint8_t wire[RMUX_HEADER_SIZE + 3];
    end = put_frame(wire, 5, RMUX_KIND_DATA, 'd', 3);
    start = 0;
    staged = at;
    n = rmux_decode(scratch, wire, sizeof wire, &start, end, 1024, 1024, big, length, &staged,
                    records, 2, &nframes, &error);
    CHECK(error == RMUX_ERR_BUFFER_TOO_LARGE && n == 0 && start == 0 && staged == at,
          "decode into a %zu-byte staging buffer: error %d, %zu records, the first at offset %u "
          "(it is at %zu)", length, (int)error, n, n ? records[0].offset : 0, at);

    /* Exactly RMUX_MAX_BUFFER is accepted, and its last offsets come back whole. */
    size_t limit = (size_t)RMUX_MAX_BUFFER;
    at = limit - (RMUX_HEADER_SIZE + 3);
    put_frame(big + at, 5, RMUX_KIND_COMMAND, 'c', 3);
    n = rmux_scan_frames(big, limit, at, limit, 1024, 1024, 2, frames, &next, &error);
    CHECK(error == RMUX_OK && n == 1 && frames[0].offset == limit - 3 && next == limit,
          "scan at the limit: error %d, %zu frames", (int)error, n);
    n = rmux_scan_frames(big, limit + 1, at, limit, 1024, 1024, 2, frames, &next, &error);
    CHECK(error == RMUX_ERR_BUFFER_TOO_LARGE && n == 0,
          "scan one past the limit: error %d, %zu frames", (int)error, n);
    start = 0;
    staged = limit - 3;
    n = rmux_decode(scratch, wire, sizeof wire, &start, end, 1024, 1024, big, limit, &staged,
                    records, 2, &nframes, &error);
    CHECK(error == RMUX_OK && n == 1 && records[0].offset == limit - 3 && staged == limit &&
              memcmp(big + limit - 3, "ddd", 3) == 0,
          "decode at the limit: error %d, %zu records", (int)error, n);

    rmux_scratch_free(scratch);
    munmap(big, length);
}

/* rmux_tx_append takes a size_t length: one so large that unsent + length
 * wraps is still refused as not fitting, not appended. */
static void append_length(void) {
    rmux_tx *tx = rmux_tx_new(4096, 8192, 8192 + 2 * RMUX_HEADER_SIZE + 4096 + 3);
    CHECK(tx != NULL, "out of memory");
    uint8_t frame[16] = {0};
    CHECK(rmux_tx_append(tx, frame, sizeof frame) == RMUX_TX_OK, "a small frame does not fit");
    rmux_tx_status status = rmux_tx_append(tx, frame, SIZE_MAX - 7);
    CHECK(status == RMUX_TX_NO_ROOM, "a length of SIZE_MAX - 7: status %d", (int)status);
    CHECK(rmux_tx_unsent(tx) == sizeof frame, "unsent %zu", rmux_tx_unsent(tx));
    rmux_tx_free(tx);
}

/* ------------------------------------------------------ allocation failures */

/* An rmux_tx by value: its fields, and the contents of what they point to. */
typedef struct {
    rmux_tx tx;
    tx_stream *streams;   /* streams[0, nstreams) */
    uint8_t **held;       /* per open stream: its retained, then its unsent bytes */
    uint32_t *free_slots; /* free_slots[0, nfree) */
    uint32_t *ready;      /* the ready queue, front first */
    uint8_t *unsent;      /* the FIFO's out[start, end) */
} snapshot;

static void *copy_of(const void *from, size_t size) {
    void *copy = exact(size);
    if (size) {
        memcpy(copy, from, size);
    }
    return copy;
}

static uint8_t *held_bytes(const tx_stream *s) {
    size_t count = (size_t)s->retained + s->size;
    uint8_t *copy = exact(count);
    size_t from = count ? ((size_t)s->head + s->capacity - s->retained) % s->capacity : 0;
    for (size_t i = 0; i < count; i++) {
        copy[i] = s->ring[(from + i) % s->capacity];
    }
    return copy;
}

static void snapshot_take(snapshot *s, const rmux_tx *tx) {
    s->tx = *tx;
    s->streams = copy_of(tx->streams, tx->nstreams * sizeof *tx->streams);
    s->held = exact(tx->nstreams * sizeof *s->held);
    for (uint32_t i = 0; i < tx->nstreams; i++) {
        /* A closed slot keeps a stale size and no ring: only open ones hold bytes. */
        s->held[i] = tx->streams[i].open ? held_bytes(&tx->streams[i]) : NULL;
    }
    s->free_slots = copy_of(tx->free_slots, tx->nfree * sizeof *tx->free_slots);
    s->ready = exact(tx->ready_count * sizeof *s->ready);
    for (uint32_t i = 0; i < tx->ready_count; i++) {
        s->ready[i] = tx->ready[(tx->ready_head + i) % tx->ready_capacity];
    }
    size_t unsent = tx->end - tx->start;
    s->unsent = unsent ? copy_of(tx->out + tx->start, unsent) : exact(0);
}

static void snapshot_free(snapshot *s) {
    for (uint32_t i = 0; i < s->tx.nstreams; i++) {
        free(s->held[i]);
    }
    free(s->held);
    free(s->streams);
    free(s->free_slots);
    free(s->ready);
    free(s->unsent);
}

#define SAME(field)                                                                  \
    CHECK(before->field == after.field, "%s, with allocation %ld failing, changed %s", \
          call, k, #field)
#define SAME_BYTES(a, b, size)                                                       \
    CHECK((size) == 0 || memcmp((a), (b), (size)) == 0,                              \
          "%s, with allocation %ld failing, changed %s", call, k, #a)

/* tx is exactly as `before` was: every field and every byte they point to.  The
 * streams and free_slots arrays alone may have moved (rmux_tx_open may grow one
 * and fail on the other; the larger array is kept, with the same contents). */
static void snapshot_same(const snapshot *before, const rmux_tx *tx, const char *call, long k) {
    snapshot after;
    snapshot_take(&after, tx);
    SAME(tx.frame_size);
    SAME(tx.budget);
    SAME(tx.capacity);
    SAME(tx.out);
    SAME(tx.out_capacity);
    SAME(tx.start);
    SAME(tx.end);
    SAME(tx.nstreams);
    SAME(tx.streams_capacity);
    SAME(tx.nfree);
    SAME(tx.ready);
    SAME(tx.ready_head);
    SAME(tx.ready_count);
    SAME(tx.ready_capacity);
    SAME(tx.buffered);
    SAME(tx.held);
    SAME(tx.retain);
    for (uint32_t i = 0; i < before->tx.nstreams; i++) {
        SAME(streams[i].stream_id);
        SAME(streams[i].limit);
        SAME(streams[i].ring);
        SAME(streams[i].capacity);
        SAME(streams[i].head);
        SAME(streams[i].size);
        SAME(streams[i].retained);
        SAME(streams[i].open);
        SAME(streams[i].fin_pending);
        SAME(streams[i].in_ready);
        SAME(streams[i].grow_next);
        if (before->streams[i].open) {
            SAME_BYTES(before->held[i], after.held[i],
                       (size_t)before->streams[i].retained + before->streams[i].size);
        }
    }
    SAME_BYTES(before->free_slots, after.free_slots, before->tx.nfree * sizeof(uint32_t));
    SAME_BYTES(before->ready, after.ready, before->tx.ready_count * sizeof(uint32_t));
    SAME_BYTES(before->unsent, after.unsent, before->tx.end - before->tx.start);
    snapshot_free(&after);
}

static int failed_runs; /* how many runs of a call STEP made fail */

/* Run `call` on tx.  With `sweep`, run it first with its first allocation
 * failing, then with its second failing, and so on, until a run reaches no
 * failing allocation: that run is the one that takes effect.  Each run that
 * failed must have returned RMUX_TX_NO_MEMORY and left tx exactly as it was. */
#define STEP(tx, sweep, call)                                                        \
    do {                                                                             \
        for (long k_ = (sweep) ? 0 : -1;; k_++) {                                    \
            snapshot before_;                                                        \
            snapshot_take(&before_, (tx));                                           \
            fail_allocation(k_);                                                     \
            int64_t result_ = (int64_t)(call);                                       \
            int failed_ = allocation_failed();                                       \
            if (failed_) {                                                           \
                CHECK(result_ == RMUX_TX_NO_MEMORY, "%s, with allocation %ld failing, " \
                      "returned %lld", #call, k_, (long long)result_);               \
                snapshot_same(&before_, (tx), #call, k_);                            \
                failed_runs++;                                                       \
            } else {                                                                 \
                CHECK(result_ >= 0, "%s returned %lld", #call, (long long)result_);  \
            }                                                                        \
            snapshot_free(&before_);                                                 \
            if (!failed_) {                                                          \
                break;                                                               \
            }                                                                        \
        }                                                                            \
    } while (0)

typedef struct {
    uint8_t *bytes;
    size_t length;
} wire_log;

static void log_bytes(wire_log *log, const void *bytes, size_t count) {
    log->bytes = realloc(log->bytes, log->length + count);
    CHECK(log->bytes != NULL, "out of memory");
    memcpy(log->bytes + log->length, bytes, count);
    log->length += count;
}

/* What a socket would take: the FIFO's bytes, and the FINs fill reported. */
static void drain(rmux_tx *tx, wire_log *log, const uint32_t *fins, int64_t nfins) {
    size_t length;
    uint8_t *pending = rmux_tx_pending(tx, &length);
    if (length) {
        log_bytes(log, pending, length);
    }
    log_bytes(log, fins, (size_t)nfins * sizeof *fins);
    CHECK(rmux_tx_sent(tx, length) == RMUX_TX_OK, "cannot send what is pending");
}

static void write_stream(rmux_tx *tx, int sweep, int32_t slot, uint32_t count, uint8_t fill) {
    uint8_t *first, *second;
    uint32_t first_length, second_length;
    STEP(tx, sweep,
         rmux_tx_reserve(tx, slot, count, &first, &first_length, &second, &second_length));
    CHECK(first_length + second_length == count, "reserved %u of %u", first_length + second_length,
          count);
    memset(first, fill, first_length);
    if (second_length) {
        memset(second, fill + 1, second_length);
    }
    STEP(tx, sweep, rmux_tx_commit(tx, slot, count));
}

/* A session's worth of outbound calls, every one that allocates through STEP:
 * opening streams, rings made and grown (one whose last read filled it, so it
 * grows), the ready queue made, the FIFO made and then grown in the middle of
 * a fill, retained bytes acknowledged and rewound.  Returns what went out. */
static wire_log outbound_session(int sweep) {
    enum { FRAME = 4096, BUDGET = 40000 };
    rmux_tx *tx = rmux_tx_new(FRAME, BUDGET, BUDGET + 2 * RMUX_HEADER_SIZE + FRAME + 3);
    CHECK(tx != NULL, "out of memory");
    rmux_tx_set_retain(tx, 1);
    wire_log log = {NULL, 0};
    uint32_t fins[8];
    int64_t nfins = 0;
    int32_t slot[3];
    for (int i = 0; i < 3; i++) {
        STEP(tx, sweep, slot[i] = rmux_tx_open(tx, 2 * (uint32_t)i + 1, 65536));
    }
    write_stream(tx, sweep, slot[0], RMUX_INITIAL_RING, 'a'); /* fills its ring */
    write_stream(tx, sweep, slot[1], 1000, 'b');
    STEP(tx, sweep, rmux_tx_finish(tx, slot[1]));
    STEP(tx, sweep, rmux_tx_finish(tx, slot[2]));
    uint8_t control[20];
    rmux_encode_header(control, sizeof control - RMUX_HEADER_SIZE, 0, RMUX_KIND_COMMAND);
    memset(control + RMUX_HEADER_SIZE, 'k', sizeof control - RMUX_HEADER_SIZE);
    STEP(tx, sweep, rmux_tx_append(tx, control, sizeof control)); /* the FIFO's first 16 KiB */
    STEP(tx, sweep, nfins = rmux_tx_fill(tx, fins, 8)); /* 17 KiB of frames: the FIFO grows */
    drain(tx, &log, fins, nfins);

    /* Stream 1's ring is empty once acknowledged, but its last read filled it:
     * the next reserve doubles it. */
    CHECK(rmux_tx_acknowledge(tx, slot[0], RMUX_INITIAL_RING) == RMUX_TX_OK, "acknowledge");
    write_stream(tx, sweep, slot[0], 2 * RMUX_INITIAL_RING, 'c');
    STEP(tx, sweep, rmux_tx_rewind(tx, slot[1], 500));
    STEP(tx, sweep, nfins = rmux_tx_fill(tx, fins, 8)); /* 33 KiB: the FIFO grows again */
    drain(tx, &log, fins, nfins);
    STEP(tx, sweep, nfins = rmux_tx_fill(tx, fins, 8));
    drain(tx, &log, fins, nfins);
    CHECK(rmux_tx_buffered_total(tx) == 0, "%llu bytes left unsent",
          (unsigned long long)rmux_tx_buffered_total(tx));
    rmux_tx_free(tx);
    return log;
}

/* An allocation that fails leaves the rmux_tx exactly as it was before the call
 * (allocate first, then change state), so the caller can go on: what is sent
 * in the end is what a run with no failures sends. */
static void allocation_failure(void) {
    fail_allocation(0);
    CHECK(rmux_tx_new(4096, 8192, 65536) == NULL, "rmux_tx_new without memory");
    CHECK(allocation_failed(), "rmux_tx_new allocated nothing");
    fail_allocation(0);
    CHECK(rmux_scratch_new() == NULL, "rmux_scratch_new without memory");
    CHECK(allocation_failed(), "rmux_scratch_new allocated nothing");

    wire_log plain = outbound_session(0);
    wire_log swept = outbound_session(1);
    /* One for each allocation the session makes: the first open's two arrays,
     * three rings made or grown, the ready queue, the FIFO made, grown twice. */
    CHECK(failed_runs == 9, "%d runs failed an allocation, not 9: the session lost some",
          failed_runs);
    CHECK(plain.length > 2 * RMUX_INITIAL_RING, "only %zu bytes went out", plain.length);
    CHECK(swept.length == plain.length && memcmp(swept.bytes, plain.bytes, plain.length) == 0,
          "after failed allocations, %zu bytes went out instead of the same %zu", swept.length,
          plain.length);
    free(plain.bytes);
    free(swept.bytes);
}

/* ------------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*run)(void);
} CASES[] = {
    {"decode_records_capacity", decode_records_capacity},
    {"decode_buffer_length", decode_buffer_length},
    {"max_buffer", max_buffer},
    {"append_length", append_length},
    {"allocation_failure", allocation_failure},
};

int main(int argc, char **argv) {
    size_t ncases = sizeof CASES / sizeof CASES[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < ncases; i++) {
            printf("%s\n", CASES[i].name);
        }
        return 0;
    }
    for (size_t i = 0; argc == 2 && i < ncases; i++) {
        if (strcmp(argv[1], CASES[i].name) == 0) {
            CASES[i].run();
            printf("ok %s\n", CASES[i].name);
            return 0;
        }
    }
    fprintf(stderr, "usage: %s --list | CASE\n", argv[0]);
    return 2;
}
