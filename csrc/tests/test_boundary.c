/*
 * C-level tests of the codec's boundary with its caller (issue 21 item 6): the
 * cases the Python tests cannot reach, because the wrapper never makes them.
 *
 * tests/test_sanitizers.py builds this with -fsanitize=address,undefined and
 * runs each case by name (`test_boundary CASE`), so a write or read past a
 * buffer is a sanitizer report even where the values would look right.
 *
 * Exit status: 0 passed, 1 failed (what failed on stderr), 2 no such case,
 * 77 skipped (why on stdout).
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS and MAP_NORESERVE under -std=c99 */

#include "rmux_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* ------------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*run)(void);
} CASES[] = {
    {"decode_records_capacity", decode_records_capacity},
    {"decode_buffer_length", decode_buffer_length},
    {"max_buffer", max_buffer},
    {"append_length", append_length},
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
