/*
 * libFuzzer targets for the codec (docs/fuzzing.md says how to run them).
 *
 * Input byte 0 picks the target:
 *   even: DECODE  - the rest is channel bytes, fed to rmux_decode the way the
 *                   Python wrapper does (receive buffer with tail compaction,
 *                   staging buffer), whole and in small reads, the second time
 *                   into a records array of 1 to 8 entries, allocated to that
 *                   size so that a write past it is a sanitizer report;
 *   odd:  OUTBOUND - the rest is a program of rmux_tx operations.
 * Every record, view and length is checked against the buffer it refers to;
 * a violated invariant aborts, which the fuzzer reports like a crash.
 *
 * Built with -DRMUX_REPLAY_MAIN it is a plain program that replays corpus
 * files (for gcc's sanitizers, where clang is not installed).
 */
#include "rmux_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUFFER_SIZE (256 * 1024)
#define MAX_DATA 65536
#define MAX_COMMAND 1024
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static rmux_scratch *scratch; /* allocated by the first decode input, kept for the rest */
static uint8_t buffer[BUFFER_SIZE];
static uint8_t staging[BUFFER_SIZE];

static void decode_reads(const uint8_t *data, size_t size, size_t read_size,
                         size_t records_capacity) {
    if (scratch == NULL) {
        scratch = rmux_scratch_new();
        CHECK(scratch != NULL);
    }
    rmux_record *records = malloc(records_capacity * sizeof *records);
    CHECK(records != NULL);
    size_t max_frames = records_capacity < RMUX_MAX_FRAMES_PER_SCAN ? records_capacity
                                                                    : RMUX_MAX_FRAMES_PER_SCAN;
    size_t start = 0, end = 0, offset = 0;
    size_t min_free = RMUX_HEADER_SIZE + MAX_DATA;
    while (offset < size) {
        if (start == end) {
            start = end = 0;
        } else if (BUFFER_SIZE - end < min_free) {
            memmove(buffer, buffer + start, end - start);
            end -= start;
            start = 0;
        }
        size_t n = size - offset;
        if (n > read_size) n = read_size;
        if (n > BUFFER_SIZE - end) n = BUFFER_SIZE - end;
        memcpy(buffer + end, data + offset, n);
        offset += n;
        end += n;
        size_t staged = 0, nframes = max_frames;
        rmux_status error = RMUX_OK;
        while (nframes == max_frames && error == RMUX_OK) {
            size_t before = start;
            size_t count = rmux_decode(scratch, buffer, BUFFER_SIZE, &start, end, MAX_DATA,
                                       MAX_COMMAND, staging, BUFFER_SIZE, &staged, records,
                                       records_capacity, &nframes, &error);
            CHECK(start >= before && start <= end);
            CHECK(staged <= BUFFER_SIZE);
            CHECK(count <= nframes && nframes <= max_frames);
            for (size_t i = 0; i < count; i++) {
                const rmux_record *r = &records[i];
                CHECK(r->kind == RMUX_RECORD_DATA || r->kind == RMUX_RECORD_COMMAND ||
                      r->kind == RMUX_RECORD_DATAGRAM);
                if (r->kind == RMUX_RECORD_DATA) {
                    CHECK((size_t)r->offset + r->length <= staged);
                } else if (r->kind == RMUX_RECORD_COMMAND) {
                    CHECK(r->length <= MAX_COMMAND && (size_t)r->offset + r->length <= start);
                } else { /* a datagram's body, in place like a command's */
                    CHECK(r->length <= MAX_DATA && (size_t)r->offset + r->length <= start);
                }
            }
        }
        CHECK(error == RMUX_OK || error == RMUX_ERR_DATA_TOO_LARGE ||
              error == RMUX_ERR_COMMAND_TOO_LARGE || error == RMUX_ERR_BAD_KIND ||
              error == RMUX_ERR_DATAGRAM_TOO_LARGE);
        if (error != RMUX_OK) {
            break;
        }
    }
    free(records);
}

static void outbound_program(const uint8_t *data, size_t size) {
    uint32_t frame_size = 32768, budget = 262144, capacity = budget + 65536 + 64;
    rmux_tx *tx = rmux_tx_new(frame_size, budget, capacity);
    CHECK(tx != NULL);
    int32_t slots[8];
    size_t nslots = 0;
    uint32_t fins[64];
    uint8_t frame[1033];
    size_t i = 0;
    while (i + 3 <= size) {
        uint8_t op = data[i] % 8;
        uint32_t arg = ((uint32_t)data[i + 1] << 8) | data[i + 2];
        i += 3;
        int32_t slot = nslots ? slots[arg % nslots] : -1;
        switch (op) {
        case 0:
            if (nslots < 8) {
                int32_t s = rmux_tx_open(tx, arg * 7 + 1, (arg % 64 + 1) * 4096);
                CHECK(s >= 0);
                slots[nslots++] = s;
            }
            break;
        case 1: {
            uint8_t *first, *second;
            uint32_t n1, n2, count = arg * 2;
            rmux_tx_status reserved = rmux_tx_reserve(tx, slot, count, &first, &n1, &second, &n2);
            if (reserved == RMUX_TX_OK && count) {
                CHECK(n1 + n2 > 0 && n1 + n2 <= count);  /* a small ring offers less */
                memset(first, (int)arg, n1);
                if (n2) memset(second, (int)arg + 1, n2);
                CHECK(rmux_tx_commit(tx, slot, n1 + n2) == RMUX_TX_OK);
            }
            break;
        }
        case 2:
            rmux_tx_finish(tx, slot);
            break;
        case 3:
            if (rmux_tx_close(tx, slot) == RMUX_TX_OK) {
                size_t index = arg % nslots;
                nslots--;
                slots[index] = slots[nslots];
            }
            break;
        case 4: {
            size_t length = arg % sizeof frame + 1;
            memset(frame, (int)op, length);
            rmux_tx_status appended = rmux_tx_append(tx, frame, length);
            CHECK(appended == RMUX_TX_OK || appended == RMUX_TX_NO_ROOM);
            break;
        }
        case 5: {
            int64_t nfins;
            if (arg % 2) { /* gathered in place and sent in part: the rest goes to the FIFO */
                static rmux_gather gather;
                size_t before = rmux_tx_unsent(tx);
                nfins = rmux_tx_gather(tx, fins, 64, &gather);
                if (nfins >= 0) {
                    size_t total = 0;
                    for (uint32_t i = 0; i < gather.nspans; i++) {
                        const rmux_span *span = &gather.spans[i];
                        volatile uint8_t sink = span->base[0] ^ span->base[span->length - 1];
                        (void)sink;
                        total += span->length;
                    }
                    CHECK(total == gather.length && gather.fifo == before);
                    size_t sent = (size_t)(arg / 2) % (gather.length + 1);
                    rmux_tx_gathered(tx, &gather, sent);
                    CHECK(rmux_tx_unsent(tx) == gather.length - sent);
                }
            } else {
                nfins = rmux_tx_fill(tx, fins, 64);
            }
            CHECK(nfins >= 0 && nfins <= 64);
            break;
        }
        case 6: {
            size_t length;
            uint8_t *pending = rmux_tx_pending(tx, &length);
            CHECK(length <= capacity);
            if (length) {
                volatile uint8_t sink = pending[0] ^ pending[length - 1];
                (void)sink;
            }
            CHECK(rmux_tx_sent(tx, arg < length ? arg : length) == RMUX_TX_OK);
            CHECK(rmux_tx_sent(tx, length + 1) == RMUX_TX_INVALID);
            break;
        }
        default:
            if (arg % 2) {
                uint64_t held = rmux_tx_held_total(tx);
                CHECK(rmux_tx_release_idle(tx) <= held);
            } else {
                rmux_tx_drop_streams(tx);
                nslots = 0;
                CHECK(rmux_tx_held_total(tx) == 0);
            }
            break;
        }
        CHECK(rmux_tx_unsent(tx) <= capacity);
    }
    rmux_tx_free(tx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    if (data[0] % 2 == 0) {
        decode_reads(data + 1, size - 1, size, RMUX_MAX_FRAMES_PER_SCAN);
        decode_reads(data + 1, size - 1, (size_t)data[0] % 61 + 1, (size_t)data[0] / 2 % 8 + 1);
    } else {
        outbound_program(data + 1, size - 1);
    }
    return 0;
}

#ifdef RMUX_REPLAY_MAIN
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 2;
        }
        static uint8_t input[1 << 20];
        size_t n = fread(input, 1, sizeof input, f);
        fclose(f);
        LLVMFuzzerTestOneInput(input, n);
    }
    printf("replayed %d inputs\n", argc - 1);
    return 0;
}
#endif
