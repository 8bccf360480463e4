/*
 * reactor-mux frame codec, compiled twin of reactor_mux/codec/_python.py.
 *
 * Why C here: a read of many small frames costs the pure-Python codec a loop
 * iteration, a tuple and a slice per frame.  These functions handle a whole
 * receive buffer, or fill a whole output batch, per call, so Python's work is
 * per stream and per read rather than per frame.  Every algorithm (grouping
 * order, ring and FIFO growth, round-robin order) matches the Python twin
 * exactly, because the differential tests compare them byte for byte.  One
 * difference nobody can see: a fill grows the FIFO once, up front, to what it
 * may append (so that running out of memory changes nothing), where the twin
 * grows it frame by frame; when a fill stops at its budget, that can be one
 * doubling more, never past the capacity.
 *
 * Bounds: every write is checked against the buffer it lands in; lengths are
 * validated against the protocol limits before any body byte is trusted.
 */
#include "rmux_codec.h"

#include <stdlib.h>
#include <string.h>

/* Every allocation goes through these.  csrc/tests/test_boundary.c defines them
 * before it includes this file, to make the allocation of its choice fail;
 * every other build gets the C library's. */
#ifndef RMUX_MALLOC
#define RMUX_MALLOC malloc
#endif
#ifndef RMUX_CALLOC
#define RMUX_CALLOC calloc
#endif
#ifndef RMUX_REALLOC
#define RMUX_REALLOC realloc
#endif

/* C99 has no _Static_assert: an array of negative size stops the build instead. */
#define RMUX_STATIC_ASSERT(condition, name) typedef char rmux_assert_##name[(condition) ? 1 : -1]

RMUX_STATIC_ASSERT(sizeof(rmux_frame) == 4 * sizeof(uint32_t), frame_is_four_packed_u32);
RMUX_STATIC_ASSERT(sizeof(rmux_record) == 4 * sizeof(uint32_t), record_is_four_packed_u32);

/* rmux_decode groups a run of data frames by stream in an open-addressing
 * table of 2^RMUX_GROUP_TABLE_BITS slots (a power of two, so probes wrap with a
 * mask).  A run holds at most RMUX_MAX_FRAMES_PER_SCAN streams, so at least half
 * the slots stay free: probes are short, and always reach a free slot, which is
 * what ends group_of's loop. */
#define RMUX_GROUP_TABLE_BITS 13
#define RMUX_GROUP_TABLE (1u << RMUX_GROUP_TABLE_BITS)

RMUX_STATIC_ASSERT(RMUX_GROUP_TABLE_BITS > 0 && RMUX_GROUP_TABLE_BITS < 32, group_bits_in_range);
RMUX_STATIC_ASSERT((RMUX_GROUP_TABLE & (RMUX_GROUP_TABLE - 1)) == 0, group_table_power_of_two);
RMUX_STATIC_ASSERT(RMUX_GROUP_TABLE >= 2u * RMUX_MAX_FRAMES_PER_SCAN, group_table_half_free);

struct rmux_scratch {
    rmux_frame frames[RMUX_MAX_FRAMES_PER_SCAN];
    uint32_t frame_group[RMUX_MAX_FRAMES_PER_SCAN];
    uint32_t group_sid[RMUX_MAX_FRAMES_PER_SCAN];
    uint32_t group_len[RMUX_MAX_FRAMES_PER_SCAN];
    size_t group_cursor[RMUX_MAX_FRAMES_PER_SCAN];
    uint32_t table_key[RMUX_GROUP_TABLE];
    uint32_t table_gen[RMUX_GROUP_TABLE]; /* a slot is in use if it has the current generation */
    uint32_t table_group[RMUX_GROUP_TABLE];
    uint32_t generation;
};

rmux_scratch *rmux_scratch_new(void) {
    return RMUX_CALLOC(1, sizeof(rmux_scratch));
}

void rmux_scratch_free(rmux_scratch *scratch) {
    free(scratch);
}

static uint32_t read_u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

void rmux_encode_header(uint8_t *out, uint32_t length, uint32_t stream_id, uint8_t kind) {
    out[0] = (uint8_t)(length >> 24);
    out[1] = (uint8_t)(length >> 16);
    out[2] = (uint8_t)(length >> 8);
    out[3] = (uint8_t)length;
    out[4] = (uint8_t)(stream_id >> 24);
    out[5] = (uint8_t)(stream_id >> 16);
    out[6] = (uint8_t)(stream_id >> 8);
    out[7] = (uint8_t)stream_id;
    out[8] = kind;
}

size_t rmux_scan_frames(const uint8_t *buf, size_t buf_length, size_t start, size_t end,
                        uint32_t max_data, uint32_t max_command, size_t max_frames,
                        rmux_frame *frames, size_t *next_start, rmux_status *error) {
    size_t pos = start;
    size_t count = 0;
    *next_start = start;
    if (buf_length > RMUX_MAX_BUFFER) { /* its offsets would not fit rmux_frame's uint32_t */
        *error = RMUX_ERR_BUFFER_TOO_LARGE;
        return 0;
    }
    /* The caller's idea of end is the only thing between a bad length and a read
     * past its buffer: check it against what the buffer holds. */
    if (start > end || end > buf_length) {
        *error = RMUX_ERR_BAD_ARGUMENT;
        return 0;
    }
    *error = RMUX_OK;
    while (end - pos >= RMUX_HEADER_SIZE && count < max_frames) {
        const uint8_t *header = buf + pos;
        uint32_t length = read_u32(header);
        uint32_t stream_id = read_u32(header + 4);
        uint8_t kind = header[8];
        if (kind == RMUX_KIND_DATA) {
            if (length > max_data) {
                *error = RMUX_ERR_DATA_TOO_LARGE;
                break;
            }
        } else if (kind == RMUX_KIND_COMMAND) {
            if (length > max_command) {
                *error = RMUX_ERR_COMMAND_TOO_LARGE;
                break;
            }
        } else if (kind == RMUX_KIND_DATAGRAM) {
            if (length > max_data) {
                *error = RMUX_ERR_DATAGRAM_TOO_LARGE;
                break;
            }
        } else {
            *error = RMUX_ERR_BAD_KIND;
            break;
        }
        size_t body = pos + RMUX_HEADER_SIZE;
        if (end - body < (size_t)length) {
            break;
        }
        frames[count].stream_id = stream_id;
        frames[count].kind = kind;
        frames[count].offset = (uint32_t)body; /* <= end <= buf_length <= RMUX_MAX_BUFFER */
        frames[count].length = length;
        count++;
        pos = body + length;
    }
    *next_start = pos;
    return count;
}

static uint32_t group_of(rmux_scratch *s, uint32_t stream_id, uint32_t *ngroups) {
    /* Fibonacci hashing: multiply by 2^32 / golden ratio and keep the top
     * RMUX_GROUP_TABLE_BITS bits of the 32-bit product, which mix every bit of
     * the id (stream ids differ mostly in their low bits). */
    uint32_t product = stream_id * 2654435761u;
    uint32_t slot = product >> (32 - RMUX_GROUP_TABLE_BITS);
    for (;;) {
        if (s->table_gen[slot] != s->generation) {
            s->table_gen[slot] = s->generation;
            s->table_key[slot] = stream_id;
            s->table_group[slot] = *ngroups;
            s->group_sid[*ngroups] = stream_id;
            s->group_len[*ngroups] = 0;
            return (*ngroups)++;
        }
        if (s->table_key[slot] == stream_id) {
            return s->table_group[slot];
        }
        slot = (slot + 1) & (RMUX_GROUP_TABLE - 1);
    }
}

static void next_generation(rmux_scratch *s) {
    if (++s->generation == 0) { /* wrapped: every stale stamp must go */
        memset(s->table_gen, 0, sizeof s->table_gen);
        s->generation = 1;
    }
}

size_t rmux_decode(rmux_scratch *s, const uint8_t *buf, size_t buf_length, size_t *start,
                   size_t end, uint32_t max_data, uint32_t max_command, uint8_t *staging,
                   size_t staging_capacity, size_t *staged, rmux_record *records,
                   size_t records_capacity, size_t *nframes, rmux_status *error) {
    *nframes = 0;
    if (staging_capacity > RMUX_MAX_BUFFER) { /* its offsets would not fit rmux_record's uint32_t */
        *error = RMUX_ERR_BUFFER_TOO_LARGE;
        return 0;
    }
    if (records_capacity == 0) { /* no progress possible: a caller looping on nframes would spin */
        *error = RMUX_ERR_BAD_ARGUMENT;
        return 0;
    }
    /* A frame makes at most one record (a command one, a run of data frames one
     * per stream in it), so scanning no more frames than records[] holds is what
     * keeps every write below inside it. */
    size_t max_frames = records_capacity;
    if (max_frames > RMUX_MAX_FRAMES_PER_SCAN) {
        max_frames = RMUX_MAX_FRAMES_PER_SCAN; /* the size of the scratch arrays */
    }
    size_t count = rmux_scan_frames(buf, buf_length, *start, end, max_data, max_command,
                                    max_frames, s->frames, start, error);
    size_t nrecords = 0;
    size_t index = 0;
    *nframes = count;
    while (index < count) {
        const rmux_frame *frame = &s->frames[index];
        if (frame->kind != RMUX_KIND_DATA) { /* a command or a datagram: its body in place */
            records[nrecords].kind =
                frame->kind == RMUX_KIND_COMMAND ? RMUX_RECORD_COMMAND : RMUX_RECORD_DATAGRAM;
            records[nrecords].stream_id = frame->stream_id;
            records[nrecords].offset = frame->offset;
            records[nrecords].length = frame->length;
            nrecords++;
            index++;
            continue;
        }
        /* A run of data frames: group by stream, then copy each group contiguously. */
        size_t run_start = index;
        uint32_t ngroups = 0;
        size_t total = 0;
        next_generation(s);
        while (index < count && s->frames[index].kind == RMUX_KIND_DATA) {
            const rmux_frame *data = &s->frames[index];
            uint32_t group = group_of(s, data->stream_id, &ngroups);
            s->frame_group[index] = group;
            s->group_len[group] += data->length;
            total += data->length;
            index++;
        }
        if (*staged > staging_capacity || total > staging_capacity - *staged) {
            *error = RMUX_ERR_STAGING_FULL;
            return nrecords;
        }
        size_t cursor = *staged;
        for (uint32_t g = 0; g < ngroups; g++) {
            s->group_cursor[g] = cursor;
            records[nrecords].kind = RMUX_RECORD_DATA;
            records[nrecords].stream_id = s->group_sid[g];
            /* cursor <= staging_capacity <= RMUX_MAX_BUFFER: it fits. */
            records[nrecords].offset = (uint32_t)cursor;
            records[nrecords].length = s->group_len[g];
            nrecords++;
            cursor += s->group_len[g];
        }
        for (size_t i = run_start; i < index; i++) {
            const rmux_frame *data = &s->frames[i];
            size_t *at = &s->group_cursor[s->frame_group[i]];
            memcpy(staging + *at, buf + data->offset, data->length);
            *at += data->length;
        }
        *staged += total;
    }
    return nrecords;
}

/* ------------------------------------------------------------------ outbound */

typedef struct {
    uint32_t stream_id;
    uint32_t limit;
    uint8_t *ring;
    uint32_t capacity;
    uint32_t head;
    uint32_t size;
    uint32_t retained; /* sent, not yet acknowledged: the bytes just behind head */
    uint8_t open;
    uint8_t fin_pending;
    uint8_t in_ready;
    uint8_t grow_next; /* the last read filled the ring: offer twice as much next */
} tx_stream;

struct rmux_tx {
    uint32_t frame_size;
    uint32_t budget;
    uint32_t capacity;
    uint8_t *out;
    size_t out_capacity;
    size_t start;
    size_t end;
    tx_stream *streams;
    uint32_t nstreams;
    uint32_t streams_capacity;
    uint32_t *free_slots; /* a stack, like the Python twin's list */
    uint32_t nfree;
    uint32_t *ready; /* circular queue of slots */
    uint32_t ready_head;
    uint32_t ready_count;
    uint32_t ready_capacity;
    uint64_t buffered; /* sum of every open stream's size */
    uint64_t held;     /* sum of every open stream's ring capacity */
    uint8_t retain;    /* keep sent bytes until acknowledged (resume) */
};

static const uint8_t FIN_BODY[3] = {'F', 'I', 'N'};
_Static_assert(RMUX_GATHER_HEADER_SIZE >= RMUX_HEADER_SIZE + sizeof FIN_BODY,
               "a gather's header slot holds a whole FIN frame");

rmux_tx *rmux_tx_new(uint32_t frame_size, uint32_t budget, uint32_t capacity) {
    if ((uint64_t)capacity < (uint64_t)budget + 2 * RMUX_HEADER_SIZE + frame_size + sizeof FIN_BODY) {
        return NULL;
    }
    rmux_tx *tx = RMUX_CALLOC(1, sizeof *tx);
    if (tx != NULL) {
        tx->frame_size = frame_size;
        tx->budget = budget;
        tx->capacity = capacity;
    }
    return tx;
}

void rmux_tx_free(rmux_tx *tx) {
    if (tx == NULL) {
        return;
    }
    for (uint32_t i = 0; i < tx->nstreams; i++) {
        free(tx->streams[i].ring);
    }
    free(tx->streams);
    free(tx->free_slots);
    free(tx->ready);
    free(tx->out);
    free(tx);
}

uint64_t rmux_tx_buffered_total(const rmux_tx *tx) {
    return tx->buffered;
}

uint64_t rmux_tx_held_total(const rmux_tx *tx) {
    return tx->held;
}

rmux_tx_status rmux_tx_set_frame_size(rmux_tx *tx, uint32_t frame_size) {
    if (frame_size == 0 || frame_size > tx->frame_size) {
        return RMUX_TX_INVALID;
    }
    tx->frame_size = frame_size;
    return RMUX_TX_OK;
}

static tx_stream *get_stream(rmux_tx *tx, int32_t slot) {
    if (slot < 0 || (uint32_t)slot >= tx->nstreams || !tx->streams[slot].open) {
        return NULL;
    }
    return &tx->streams[slot];
}

static rmux_tx_status ready_push_back(rmux_tx *tx, uint32_t slot) {
    if (tx->ready_count == tx->ready_capacity) {
        uint32_t capacity = tx->ready_capacity ? tx->ready_capacity * 2 : 64;
        uint32_t *grown = RMUX_MALLOC((size_t)capacity * sizeof *grown);
        if (grown == NULL) {
            return RMUX_TX_NO_MEMORY;
        }
        for (uint32_t i = 0; i < tx->ready_count; i++) {
            grown[i] = tx->ready[(tx->ready_head + i) % tx->ready_capacity];
        }
        free(tx->ready);
        tx->ready = grown;
        tx->ready_capacity = capacity;
        tx->ready_head = 0;
    }
    tx->ready[(tx->ready_head + tx->ready_count) % tx->ready_capacity] = slot;
    tx->ready_count++;
    return RMUX_TX_OK;
}

static uint32_t ready_pop_front(rmux_tx *tx) {
    uint32_t slot = tx->ready[tx->ready_head];
    tx->ready_head = (tx->ready_head + 1) % tx->ready_capacity;
    tx->ready_count--;
    return slot;
}

static void ready_remove(rmux_tx *tx, uint32_t slot) {
    uint32_t kept = 0;
    for (uint32_t i = 0; i < tx->ready_count; i++) {
        uint32_t value = tx->ready[(tx->ready_head + i) % tx->ready_capacity];
        if (value != slot) {
            tx->ready[(tx->ready_head + kept) % tx->ready_capacity] = value;
            kept++;
        }
    }
    tx->ready_count = kept;
}

int32_t rmux_tx_open(rmux_tx *tx, uint32_t stream_id, uint32_t limit) {
    uint32_t slot;
    if (tx->nfree > 0) {
        slot = tx->free_slots[--tx->nfree];
    } else {
        if (tx->nstreams == tx->streams_capacity) {
            uint32_t capacity = tx->streams_capacity ? tx->streams_capacity * 2 : 16;
            tx_stream *grown = RMUX_REALLOC(tx->streams, (size_t)capacity * sizeof *grown);
            if (grown == NULL) {
                return RMUX_TX_NO_MEMORY;
            }
            uint32_t *free_grown =
                RMUX_REALLOC(tx->free_slots, (size_t)capacity * sizeof *free_grown);
            if (free_grown == NULL) {
                /* The old streams array is gone: keep the larger one, same contents,
                 * and the same count, so nothing the caller can see has changed. */
                tx->streams = grown;
                return RMUX_TX_NO_MEMORY;
            }
            tx->streams = grown;
            tx->free_slots = free_grown;
            tx->streams_capacity = capacity;
        }
        slot = tx->nstreams++;
        tx->streams[slot].ring = NULL;
    }
    tx_stream *stream = &tx->streams[slot];
    free(stream->ring);
    memset(stream, 0, sizeof *stream);
    stream->stream_id = stream_id;
    stream->limit = limit;
    stream->open = 1;
    return (int32_t)slot;
}

rmux_tx_status rmux_tx_set_limit(rmux_tx *tx, int32_t slot, uint32_t limit) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL || limit < stream->limit) {
        return RMUX_TX_INVALID;
    }
    stream->limit = limit;
    return RMUX_TX_OK;
}

rmux_tx_status rmux_tx_close(rmux_tx *tx, int32_t slot) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL) {
        return RMUX_TX_INVALID;
    }
    if (stream->in_ready) {
        ready_remove(tx, (uint32_t)slot);
    }
    tx->buffered -= stream->size;
    tx->held -= stream->capacity;
    free(stream->ring);
    stream->ring = NULL;
    stream->open = 0;
    stream->in_ready = 0;
    tx->free_slots[tx->nfree++] = (uint32_t)slot;
    return RMUX_TX_OK;
}

void rmux_tx_drop_streams(rmux_tx *tx) {
    for (uint32_t i = 0; i < tx->nstreams; i++) {
        free(tx->streams[i].ring);
        tx->streams[i].ring = NULL;
        tx->streams[i].open = 0;
    }
    tx->nstreams = 0;
    tx->nfree = 0;
    tx->buffered = 0;
    tx->held = 0;
    tx->ready_count = 0;
    tx->ready_head = 0;
}

int64_t rmux_tx_buffered(rmux_tx *tx, int32_t slot) {
    tx_stream *stream = get_stream(tx, slot);
    return stream == NULL ? RMUX_TX_INVALID : (int64_t)stream->size;
}

uint64_t rmux_tx_release_idle(rmux_tx *tx) {
    uint64_t released = 0;
    for (uint32_t i = 0; i < tx->nstreams; i++) {
        tx_stream *stream = &tx->streams[i];
        if (stream->open && stream->size == 0 && stream->retained == 0 && stream->capacity) {
            released += stream->capacity;
            free(stream->ring);
            stream->ring = NULL;
            stream->capacity = 0;
            stream->head = 0;
            stream->grow_next = 0;
        }
    }
    tx->held -= released;
    return released;
}

void rmux_tx_release_output(rmux_tx *tx) {
    if (tx->start == tx->end && tx->out_capacity > RMUX_INITIAL_OUTPUT) {
        free(tx->out);
        tx->out = NULL;
        tx->out_capacity = 0;
        tx->start = tx->end = 0;
    }
}

rmux_tx_status rmux_tx_reserve(rmux_tx *tx, int32_t slot, uint32_t count, uint8_t **first,
                               uint32_t *first_length, uint8_t **second,
                               uint32_t *second_length) {
    tx_stream *stream = get_stream(tx, slot);
    *first = *second = NULL;
    *first_length = *second_length = 0;
    if (stream == NULL) {
        return RMUX_TX_INVALID;
    }
    if (count == 0) {
        return RMUX_TX_OK;
    }
    /* Retained bytes lie just behind head and count against the ring like unsent ones. */
    uint64_t held = (uint64_t)stream->size + stream->retained;
    if (stream->fin_pending || held + count > stream->limit) {
        return RMUX_TX_INVALID;
    }
    /* Grow only on evidence (the Python twin's rule): a new ring starts small and
     * doubles when the previous read filled it, up to the stream's limit. */
    uint64_t target;
    if (stream->capacity == 0) {
        target = RMUX_INITIAL_RING;
    } else if (stream->grow_next || held == stream->capacity) {
        target = 2 * (uint64_t)stream->capacity;
    } else {
        target = stream->capacity;
    }
    if (target > stream->limit) {
        target = stream->limit;
    }
    if (target > stream->capacity) {
        uint64_t capacity = target;
        uint8_t *grown = RMUX_MALLOC((size_t)capacity);
        if (grown == NULL) {
            return RMUX_TX_NO_MEMORY; /* before any change: the ring still wants to grow */
        }
        uint32_t start = 0;
        if (stream->capacity) {
            start = (uint32_t)(((uint64_t)stream->head + stream->capacity - stream->retained) %
                               stream->capacity);
        }
        uint32_t start_part = stream->capacity - start;
        uint32_t first_part = held < start_part ? (uint32_t)held : start_part;
        if (first_part) {
            memcpy(grown, stream->ring + start, first_part);
        }
        if (held > first_part) {
            memcpy(grown + first_part, stream->ring, (size_t)held - first_part);
        }
        free(stream->ring);
        stream->ring = grown;
        tx->held += capacity - stream->capacity;
        stream->capacity = (uint32_t)capacity;
        stream->head = stream->retained;
    }
    stream->grow_next = 0;
    if (count > stream->capacity - held) {
        count = stream->capacity - (uint32_t)held;
    }
    uint32_t tail = (uint32_t)(((uint64_t)stream->head + stream->size) % stream->capacity);
    uint32_t room = stream->capacity - tail;
    uint32_t part = count < room ? count : room;
    *first = stream->ring + tail;
    *first_length = part;
    if (part < count) {
        *second = stream->ring;
        *second_length = count - part;
    }
    return RMUX_TX_OK;
}

rmux_tx_status rmux_tx_commit(rmux_tx *tx, int32_t slot, uint32_t count) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL) {
        return RMUX_TX_INVALID;
    }
    uint32_t room = stream->limit < stream->capacity ? stream->limit : stream->capacity;
    uint64_t held = (uint64_t)stream->size + stream->retained;
    if (held + count > room) {
        return RMUX_TX_INVALID;
    }
    if (count == 0) {
        return RMUX_TX_OK;
    }
    /* Queue it first: that may allocate, and a failure must find nothing changed. */
    if (!stream->in_ready) {
        if (ready_push_back(tx, (uint32_t)slot) != RMUX_TX_OK) {
            return RMUX_TX_NO_MEMORY;
        }
        stream->in_ready = 1;
    }
    stream->size += count;
    tx->buffered += count;
    stream->grow_next = held + count == stream->capacity;
    return RMUX_TX_OK;
}

void rmux_tx_set_retain(rmux_tx *tx, int retain) {
    tx->retain = retain ? 1 : 0;
}

int rmux_tx_retains(const rmux_tx *tx) {
    return tx->retain;
}

int64_t rmux_tx_retained(rmux_tx *tx, int32_t slot) {
    tx_stream *stream = get_stream(tx, slot);
    return stream == NULL ? RMUX_TX_INVALID : (int64_t)stream->retained;
}

rmux_tx_status rmux_tx_acknowledge(rmux_tx *tx, int32_t slot, uint32_t count) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL || count > stream->retained) {
        return RMUX_TX_INVALID;
    }
    stream->retained -= count;
    if (stream->size == 0 && stream->retained == 0) {
        stream->head = 0;
    }
    return RMUX_TX_OK;
}

rmux_tx_status rmux_tx_rewind(rmux_tx *tx, int32_t slot, uint32_t count) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL || count > stream->retained) {
        return RMUX_TX_INVALID;
    }
    if (count == 0) {
        return RMUX_TX_OK;
    }
    if (!stream->in_ready) {
        if (ready_push_back(tx, (uint32_t)slot) != RMUX_TX_OK) {
            return RMUX_TX_NO_MEMORY;
        }
        stream->in_ready = 1;
    }
    stream->head = (uint32_t)(((uint64_t)stream->head + stream->capacity - count) % stream->capacity);
    stream->size += count;
    stream->retained -= count;
    tx->buffered += count;
    return RMUX_TX_OK;
}

rmux_tx_status rmux_tx_finish(rmux_tx *tx, int32_t slot) {
    tx_stream *stream = get_stream(tx, slot);
    if (stream == NULL) {
        return RMUX_TX_INVALID;
    }
    if (stream->fin_pending) {
        return RMUX_TX_OK;
    }
    if (!stream->in_ready) {
        if (ready_push_back(tx, (uint32_t)slot) != RMUX_TX_OK) {
            return RMUX_TX_NO_MEMORY;
        }
        stream->in_ready = 1;
    }
    stream->fin_pending = 1;
    return RMUX_TX_OK;
}

/* Make room for `extra` more bytes at the FIFO's end: the Python twin's
 * _make_room (same growth rule, same compaction), except that it allocates
 * before it moves anything, so on RMUX_TX_NO_MEMORY the FIFO is as it was. */
static rmux_tx_status make_room(rmux_tx *tx, size_t extra) {
    size_t unsent = tx->end - tx->start;
    if (unsent + extra > tx->out_capacity) {
        /* Not even with the unsent bytes moved to the front: a larger FIFO. */
        size_t size = tx->out_capacity > RMUX_INITIAL_OUTPUT ? tx->out_capacity : RMUX_INITIAL_OUTPUT;
        while (size < unsent + extra) {
            size *= 2;
        }
        if (size > tx->capacity) {
            size = tx->capacity;
        }
        if (size < unsent + extra) {
            return RMUX_TX_NO_MEMORY; /* cannot happen when callers respect the capacity checks */
        }
        uint8_t *grown = RMUX_MALLOC(size);
        if (grown == NULL) {
            return RMUX_TX_NO_MEMORY;
        }
        if (unsent) {
            memcpy(grown, tx->out + tx->start, unsent);
        }
        free(tx->out);
        tx->out = grown;
        tx->out_capacity = size;
        tx->start = 0;
        tx->end = unsent;
    } else if (tx->start && (tx->start == tx->end || tx->end + extra > tx->out_capacity)) {
        memmove(tx->out, tx->out + tx->start, unsent);
        tx->start = 0;
        tx->end = unsent;
    }
    return RMUX_TX_OK;
}

rmux_tx_status rmux_tx_append(rmux_tx *tx, const uint8_t *frame, size_t length) {
    /* unsent <= capacity always; written this way a huge length cannot wrap the sum. */
    if (length > tx->capacity - (tx->end - tx->start)) {
        return RMUX_TX_NO_ROOM;
    }
    if (make_room(tx, length) != RMUX_TX_OK) {
        return RMUX_TX_NO_MEMORY;
    }
    memcpy(tx->out + tx->end, frame, length);
    tx->end += length;
    return RMUX_TX_OK;
}

/* The most one rmux_tx_fill can append.  No more than the budget allows: it
 * stops once the FIFO holds the budget, so at most one data frame and one FIN
 * past it (rmux_tx_new keeps that within the capacity).  And no more than the
 * ready streams have: each frame of their bytes, and each FIN, with its header. */
static size_t fill_bound(const rmux_tx *tx) {
    size_t unsent = tx->end - tx->start;
    if (tx->ready_count == 0 || unsent >= tx->budget) {
        return 0;
    }
    uint64_t by_budget = (uint64_t)(tx->budget - 1 - unsent) + 2 * RMUX_HEADER_SIZE +
                         tx->frame_size + sizeof FIN_BODY;
    uint64_t by_data = 0;
    /* Stops once the budget is the smaller: no longer a walk than the fill's own. */
    for (uint32_t i = 0; i < tx->ready_count && by_data < by_budget; i++) {
        uint32_t slot = tx->ready[(tx->ready_head + i) % tx->ready_capacity];
        const tx_stream *stream = &tx->streams[slot];
        uint64_t frames = 0;
        if (tx->frame_size) {
            frames = ((uint64_t)stream->size + tx->frame_size - 1) / tx->frame_size;
        }
        by_data += stream->size + frames * RMUX_HEADER_SIZE;
        if (stream->fin_pending) {
            by_data += RMUX_HEADER_SIZE + sizeof FIN_BODY;
        }
    }
    return (size_t)(by_data < by_budget ? by_data : by_budget);
}

/* Put back a slot just popped from the ready queue: its place is free, so
 * unlike ready_push_back this never allocates. */
static void ready_requeue(rmux_tx *tx, uint32_t slot) {
    tx->ready[(tx->ready_head + tx->ready_count) % tx->ready_capacity] = slot;
    tx->ready_count++;
}

static void add_span(rmux_gather *gather, const uint8_t *base, size_t length) {
    gather->spans[gather->nspans].base = base;
    gather->spans[gather->nspans].length = length;
    gather->nspans++;
    gather->length += length;
}

/* rmux_tx_fill and rmux_tx_gather: frames round-robin, copied into the FIFO
 * (gather NULL) or described in *gather. */
static int64_t take_frames(rmux_tx *tx, uint32_t *fins, size_t max_fins, rmux_gather *gather) {
    /* The one allocation, first: the FIFO grows to hold whatever this call may
     * append before anything moves, so running out of memory changes nothing
     * (the loop below then has nothing left that can fail).  A gather needs the
     * same room: what the socket does not take is copied there. */
    if (make_room(tx, fill_bound(tx)) != RMUX_TX_OK) {
        return RMUX_TX_NO_MEMORY;
    }
    size_t end = tx->end; /* where the FIFO (or the gather, as if in it) ends */
    uint32_t nheaders = 0;
    if (gather != NULL) {
        gather->nspans = 0;
        gather->length = 0;
        gather->fifo = tx->end - tx->start;
        if (gather->fifo) {
            add_span(gather, tx->out + tx->start, gather->fifo);
        }
    }
    size_t nfins = 0;
    while (tx->ready_count > 0 && end - tx->start < tx->budget) {
        uint32_t slot = tx->ready[tx->ready_head];
        tx_stream *stream = &tx->streams[slot];
        uint32_t count = stream->size < tx->frame_size ? stream->size : tx->frame_size;
        size_t need = count ? RMUX_HEADER_SIZE + (size_t)count : 0;
        if (stream->size == count && stream->fin_pending) {
            need += RMUX_HEADER_SIZE + sizeof FIN_BODY;
        }
        if (need > tx->out_capacity - end) {
            break; /* cannot happen (fill_bound made the room); the rest would wait, not overflow */
        }
        if (gather != NULL && (gather->nspans + 4 > RMUX_GATHER_SPANS ||
                               nheaders + 2 > RMUX_GATHER_HEADERS)) {
            break; /* the rest goes in the next gather */
        }
        ready_pop_front(tx);
        stream->in_ready = 0;
        if (count) {
            uint32_t head_part = stream->capacity - stream->head;
            uint32_t first = count < head_part ? count : head_part;
            if (gather == NULL) {
                rmux_encode_header(tx->out + end, count, stream->stream_id, RMUX_KIND_DATA);
                memcpy(tx->out + end + RMUX_HEADER_SIZE, stream->ring + stream->head, first);
                if (first < count) {
                    memcpy(tx->out + end + RMUX_HEADER_SIZE + first, stream->ring, count - first);
                }
            } else {
                uint8_t *header = gather->headers[nheaders++];
                rmux_encode_header(header, count, stream->stream_id, RMUX_KIND_DATA);
                add_span(gather, header, RMUX_HEADER_SIZE);
                add_span(gather, stream->ring + stream->head, first);
                if (first < count) {
                    add_span(gather, stream->ring, count - first);
                }
            }
            end += RMUX_HEADER_SIZE + count;
            tx->buffered -= count;
            stream->size -= count;
            if (tx->retain) {
                stream->retained += count;
            }
            if (stream->size == 0 && stream->retained == 0) {
                stream->head = 0;
            } else {
                stream->head = (stream->head + count) % stream->capacity;
            }
        }
        if (stream->size) {
            stream->in_ready = 1;
            ready_requeue(tx, slot);
        } else if (stream->fin_pending) {
            if (nfins == max_fins) {
                /* No room to report it: keep it for the next fill. */
                stream->in_ready = 1;
                ready_requeue(tx, slot);
                break;
            }
            stream->fin_pending = 0;
            uint8_t *fin = gather == NULL ? tx->out + end : gather->headers[nheaders++];
            rmux_encode_header(fin, sizeof FIN_BODY, stream->stream_id, RMUX_KIND_COMMAND);
            memcpy(fin + RMUX_HEADER_SIZE, FIN_BODY, sizeof FIN_BODY);
            if (gather != NULL) {
                add_span(gather, fin, RMUX_HEADER_SIZE + sizeof FIN_BODY);
            }
            end += RMUX_HEADER_SIZE + sizeof FIN_BODY;
            fins[nfins++] = stream->stream_id;
        }
    }
    if (gather == NULL) {
        tx->end = end;
    }
    return (int64_t)nfins;
}

int64_t rmux_tx_fill(rmux_tx *tx, uint32_t *fins, size_t max_fins) {
    return take_frames(tx, fins, max_fins, NULL);
}

int64_t rmux_tx_gather(rmux_tx *tx, uint32_t *fins, size_t max_fins, rmux_gather *gather) {
    return take_frames(tx, fins, max_fins, gather);
}

void rmux_tx_gathered(rmux_tx *tx, const rmux_gather *gather, size_t count) {
    size_t skip = count;
    uint32_t first = 0;
    if (gather->fifo) {
        size_t sent = skip < gather->fifo ? skip : gather->fifo;
        tx->start += sent;
        skip -= sent;
        first = 1;
    }
    for (uint32_t i = first; i < gather->nspans; i++) {
        const rmux_span *span = &gather->spans[i];
        if (skip >= span->length) {
            skip -= span->length;
            continue;
        }
        memcpy(tx->out + tx->end, span->base + skip, span->length - skip);
        tx->end += span->length - skip;
        skip = 0;
    }
    if (tx->start == tx->end) {
        tx->start = tx->end = 0;
    }
}

size_t rmux_tx_unsent(const rmux_tx *tx) {
    return tx->end - tx->start;
}

int rmux_tx_has_data(const rmux_tx *tx) {
    return tx->end > tx->start || tx->ready_count > 0;
}

uint8_t *rmux_tx_pending(rmux_tx *tx, size_t *length) {
    *length = tx->end - tx->start;
    return tx->out == NULL ? NULL : tx->out + tx->start;
}

void rmux_tx_drop_output(rmux_tx *tx) {
    tx->start = tx->end = 0;
}

rmux_tx_status rmux_tx_sent(rmux_tx *tx, size_t count) {
    if (count > tx->end - tx->start) {
        return RMUX_TX_INVALID;
    }
    tx->start += count;
    if (tx->start == tx->end) {
        tx->start = tx->end = 0;
    }
    return RMUX_TX_OK;
}
