/*
 * C-level tests of the codec's boundary with its caller (issue 21 item 6): the
 * cases the Python tests cannot reach, because the wrapper never makes them.
 *
 * tests/test_sanitizers.py builds this with -fsanitize=address,undefined and
 * runs each case by name (`test_boundary CASE`), so a write or read past a
 * buffer is a sanitizer report even where the values would look right.
 *
 * Exit status: 0 passed, 1 failed (what failed on stderr), 2 no such case.
 */
#include "rmux_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*run)(void);
} CASES[] = {
    {"decode_records_capacity", decode_records_capacity},
    {"decode_buffer_length", decode_buffer_length},
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
