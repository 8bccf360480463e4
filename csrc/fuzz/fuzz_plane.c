/*
 * libFuzzer target for the data plane (rmux_plane.c), over real socket pairs.
 *
 * The input is a program: each operation takes a byte and its arguments from
 * the input.  Four streams are attached to one plane, each on a Unix socket
 * pair with small buffers so that sockets fill; the other end plays the local
 * application.  Operations deliver data records (within the window or beyond
 * it), pump, let an application read or write, acknowledge sent bytes (what
 * Python's SendWindow.acknowledge does), pause and resume, pass the peer's FIN
 * on, and detach a stream.  Every byte is a known function of its stream and
 * offset, so what each application reads, and what each stream puts in the
 * send queue, is checked byte for byte; the flow counters are checked against
 * what was delivered and read.  A violated invariant aborts.
 *
 * Built with -DRMUX_REPLAY_MAIN it is a plain program (for gcc's sanitizers,
 * where clang is not installed): with file arguments it replays them, with
 * "--random N SEED" it runs N programs from a seeded generator.
 */
#define _GNU_SOURCE
#include "rmux_codec.h"
#include "rmux_plane.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define STREAMS 4
#define WINDOW 65536
#define FRAME 16384
#define MAX_EVENTS 256
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

typedef struct {
    int app;            /* the application's end */
    int mine;           /* the plane's end */
    int32_t handle;
    int32_t slot;
    uint32_t id;
    uint64_t delivered; /* bytes the plane accepted for the application */
    uint64_t read;      /* bytes the application read (checked) */
    uint64_t written;   /* bytes the application wrote */
    uint64_t framed;    /* bytes of this stream seen in data frames (checked) */
    uint64_t acked;     /* bytes the ACK events gave back to the peer */
    int attached;
    int failed;
    int finished;       /* the peer's FIN was passed on to the plane */
} fstream;

static uint8_t pattern(uint32_t stream, uint64_t offset, int outbound) {
    return (uint8_t)((offset * 131u) ^ (stream * 29u) ^ (outbound ? 0x5au : 0xa5u) ^ (offset >> 9));
}

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t at;
} program;

static unsigned next(program *p) {
    return p->at < p->size ? p->data[p->at++] : 0;
}

static unsigned next16(program *p) {
    unsigned high = next(p);
    return (high << 8) | next(p);
}

static fstream streams[STREAMS];
static rmux_tx *tx;
static rmux_plane *plane;
static rmux_engine *engine;
static rmux_event events[MAX_EVENTS];
static uint8_t staging[2 * WINDOW];

static fstream *by_id(uint32_t id) {
    for (int i = 0; i < STREAMS; i++) {
        if (streams[i].id == id) {
            return &streams[i];
        }
    }
    CHECK(!"an event for an unknown stream");
    return NULL;
}

static void handle_events(size_t n) {
    for (size_t i = 0; i < n; i++) {
        rmux_event *event = &events[i];
        CHECK(event->plane == 7);
        fstream *s = by_id(event->stream_id);
        switch (event->kind) {
        case RMUX_EVENT_ACK:
            CHECK(event->value >= rmux_plane_flow(plane, s->handle)->recv_threshold);
            s->acked += event->value;
            break;
        case RMUX_EVENT_FAILED:
            s->failed = 1;
            break;
        case RMUX_EVENT_BLOCKED:
            CHECK(event->value == rmux_plane_flow(plane, s->handle)->send_size);
            break;
        case RMUX_EVENT_WRITE_CLOSED:
            CHECK(s->finished);
            break;
        case RMUX_EVENT_RING_FREED:
            CHECK(rmux_plane_inbound_buffered(plane, s->handle) == 0);
            break;
        case RMUX_EVENT_READ_EOF:
        case RMUX_EVENT_OUTPUT:
            break;
        default:
            CHECK(!"an unknown event");
        }
    }
}

/* Drain the send queue, checking every data frame against what its stream's
 * application wrote. */
static void check_output(void) {
    uint32_t fins[STREAMS];
    while (rmux_tx_has_data(tx)) {
        CHECK(rmux_tx_fill(tx, fins, STREAMS) >= 0);
        size_t length;
        uint8_t *wire = rmux_tx_pending(tx, &length);
        rmux_frame frames[256];
        size_t start = 0;
        while (start < length) {
            size_t next_start;
            rmux_status error;
            size_t count = rmux_scan_frames(wire, length, start, length, FRAME, 1024, 256,
                                            frames, &next_start, &error);
            CHECK(error == RMUX_OK && count > 0);
            for (size_t i = 0; i < count; i++) {
                CHECK(frames[i].kind == RMUX_KIND_DATA);
                CHECK(frames[i].length <= FRAME);
                fstream *s = by_id(frames[i].stream_id);
                for (uint32_t j = 0; j < frames[i].length; j++) {
                    CHECK(wire[frames[i].offset + j] == pattern(s->id, s->framed + j, 1));
                }
                s->framed += frames[i].length;
                CHECK(s->framed <= s->written);
            }
            start = next_start;
        }
        CHECK(rmux_tx_sent(tx, length) == RMUX_TX_OK);
    }
}

static void app_read(fstream *s, size_t limit) {
    uint8_t buffer[8192];
    while (limit > 0) {
        ssize_t n = recv(s->app, buffer, limit < sizeof buffer ? limit : sizeof buffer,
                         MSG_DONTWAIT);
        if (n <= 0) {
            return; /* nothing yet, or the FIN passed on */
        }
        for (ssize_t j = 0; j < n; j++) {
            CHECK(buffer[j] == pattern(s->id, s->read + (uint64_t)j, 0));
        }
        s->read += (uint64_t)n;
        CHECK(s->read <= s->delivered);
        limit -= (size_t)n;
    }
}

static void app_write(fstream *s, size_t count) {
    uint8_t buffer[8192];
    if (count > sizeof buffer) {
        count = sizeof buffer;
    }
    for (size_t j = 0; j < count; j++) {
        buffer[j] = pattern(s->id, s->written + j, 1);
    }
    ssize_t n = send(s->app, buffer, count, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        s->written += (uint64_t)n;
    }
}

static void deliver(fstream *s, unsigned length, int extra_records) {
    rmux_record records[3];
    size_t count = 0, used = 0;
    for (int r = 0; r <= extra_records && count < 3; r++) {
        uint32_t n = length > WINDOW ? WINDOW : length;
        if (used + n > sizeof staging) {
            break;
        }
        for (uint32_t j = 0; j < n; j++) {
            staging[used + j] = pattern(s->id, s->delivered + used + j, 0);
        }
        records[count].kind = RMUX_RECORD_DATA;
        records[count].stream_id = s->id;
        records[count].offset = (uint32_t)used;
        records[count].length = n;
        used += n;
        count++;
    }
    size_t index = 0;
    rmux_flow *flow = rmux_plane_flow(plane, s->handle);
    uint64_t before = flow->recv_total;
    size_t n = rmux_plane_deliver(plane, staging, used, records, count, &index, events,
                                  MAX_EVENTS);
    handle_events(n);
    uint64_t taken = 0;
    for (size_t i = 0; i < index; i++) {
        taken += records[i].length;
    }
    CHECK(flow->recv_total == before + taken);
    if (index < count) { /* only a record beyond the window, or a stream that may not receive */
        CHECK(!s->attached || s->finished ||
              (uint64_t)flow->recv_unacked + records[index].length > flow->recv_size);
    }
    s->delivered += taken;
}

/* The channel's receive buffer, as Python's decoder holds it (rmux_rx). */
#define RX_SIZE (4 * FRAME)
static uint8_t rx_buffer[RX_SIZE];
static rmux_rx rx;

/* A read of the channel Python made (rmux_plane_input): frames of data for s,
 * cut anywhere, then maybe a command or a malformed header.  Checks that the
 * plane took exactly the leading data it may take, and left the rest whole. */
static void channel_input(fstream *s, program *p) {
    /* A partial frame left by the last read is dropped (as a fresh channel would):
     * the new frames start at this stream's next byte, so the pattern stays right. */
    rx.start = rx.end = next(p) % 64; /* and the buffer's free tail starts anywhere */
    uint8_t *at = rx_buffer + rx.end;
    size_t room = RX_SIZE - rx.end, used = 0;
    unsigned frames = next(p) % 4, tail = next(p) % 5;
    uint64_t offset = s->delivered;
    for (unsigned f = 0; f < frames; f++) {
        uint32_t length = next16(p) % (FRAME + 1);
        if (used + 9 + length > room) {
            break;
        }
        rmux_encode_header(at + used, length, s->id, 0);
        for (uint32_t j = 0; j < length; j++) {
            at[used + 9 + j] = pattern(s->id, offset + j, 0);
        }
        offset += length;
        used += 9 + length;
    }
    if (tail == 1 && used + 12 <= room) { /* a command: Python's */
        rmux_encode_header(at + used, 3, s->id, 1);
        memcpy(at + used + 9, "FIN", 3);
        used += 12;
    } else if (tail == 2 && used + 9 <= room) { /* a frame beyond every limit */
        rmux_encode_header(at + used, 0x7fffffff, s->id, 0);
        used += 9;
    } else if (tail >= 3 && used + 9 + 24 <= room) {
        /* The peer's ACK (within what is outstanding, 0, or beyond it) or BLOCKED
         * (any window): the plane takes what the session would only count. */
        uint32_t outstanding = rmux_plane_flow(plane, s->handle)->send_unacked;
        uint32_t value = tail == 3 ? next16(p) % (outstanding + 2) : next16(p) * 64u;
        int body = snprintf((char *)at + used + 9, 24, "%s %u", tail == 3 ? "ACK" : "BLOCKED",
                            value);
        rmux_encode_header(at + used, (uint32_t)body, s->id, 1);
        used += 9 + (size_t)body;
    }
    size_t cut = used ? next16(p) % (used + 1) : 0; /* the read ends anywhere */
    rmux_flow *flow = rmux_plane_flow(plane, s->handle);
    uint64_t before = flow->recv_total, start = rx.start;
    rx.offered = room;
    uint64_t left = 0;
    uint32_t unacked = flow->send_unacked;
    size_t n = rmux_plane_input(plane, &rx, cut, &left, events, MAX_EVENTS);
    handle_events(n);
    uint64_t commands = rmux_plane_take_commands(plane);
    CHECK(commands <= 1 && flow->send_unacked <= unacked);
    CHECK(commands || flow->send_unacked == unacked); /* an ACK changes it only when taken */
    uint64_t taken = flow->recv_total - before;
    s->delivered += taken;
    CHECK(rx.start <= rx.end && rx.end <= RX_SIZE);
    if (left) { /* Python's rest starts at a frame boundary right after the cursor */
        CHECK(rx.start == rx.end && rx.end + left == start + cut);
        rx.start = rx.end = 0; /* Python decodes it (and drops the channel on garbage) */
    } else {
        /* all taken (the buffer reset, as writable() does), or a partial frame waits */
        CHECK((rx.start == 0 && rx.end == 0) || rx.end == start + cut);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    program p = {data, size, 0};
    engine = rmux_engine_new();
    CHECK(engine != NULL);
    tx = rmux_tx_new(FRAME, 65536, 1 << 20);
    CHECK(tx != NULL);
    plane = rmux_plane_new(engine, tx, 7);
    CHECK(plane != NULL);
    memset(streams, 0, sizeof streams);
    memset(&rx, 0, sizeof rx);
    rx.buffer = rx_buffer;
    rx.buffer_length = RX_SIZE;
    rx.capacity = RX_SIZE;
    rx.max_data = FRAME;
    rx.max_command = 1024;
    for (int i = 0; i < STREAMS; i++) {
        fstream *s = &streams[i];
        int pair[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
        int small = 4096;
        setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(pair[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        fcntl(pair[0], F_SETFL, O_NONBLOCK);
        s->mine = pair[0];
        s->app = pair[1];
        s->id = (uint32_t)(2 * i + 1);
        s->handle = rmux_plane_add(plane, s->id, WINDOW, WINDOW);
        CHECK(s->handle >= 0);
        s->slot = rmux_tx_open(tx, s->id, WINDOW);
        CHECK(s->slot >= 0);
        CHECK(rmux_plane_attach(plane, s->handle, s->mine, s->slot) == RMUX_PLANE_OK);
        CHECK(rmux_plane_set_receiving(plane, s->handle, 1) == RMUX_PLANE_OK);
        CHECK(rmux_plane_set_sending(plane, s->handle, 1) == RMUX_PLANE_OK);
        s->attached = 1;
    }
    while (p.at < p.size) {
        unsigned op = next(&p);
        fstream *s = &streams[next(&p) % STREAMS];
        rmux_flow *flow = rmux_plane_flow(plane, s->handle);
        switch (op % 11) {
        case 0:
        case 1:
            deliver(s, next16(&p), (int)(op >> 4) % 3);
            break;
        case 2:
            handle_events(rmux_engine_pump(engine, events, MAX_EVENTS));
            break;
        case 3:
            app_read(s, next16(&p) + 1);
            break;
        case 4:
            app_write(s, next16(&p) + 1);
            break;
        case 5: { /* the peer acknowledges sent bytes */
            check_output();
            uint32_t ack = next16(&p) % (flow->send_unacked + 1);
            flow->send_unacked -= ack;
            flow->blocked_reported = 0;
            CHECK(rmux_plane_wake(plane, s->handle) == RMUX_PLANE_OK);
            break;
        }
        case 6:
            rmux_plane_set_paused(plane, next(&p) & 1);
            break;
        case 7:
            rmux_plane_set_inbound_paused(plane, next(&p) & 1);
            break;
        case 8:
            if (s->attached && !s->finished) {
                s->finished = 1;
                rmux_plane_set_receiving(plane, s->handle, 0);
                CHECK(rmux_plane_peer_finished(plane, s->handle) >= 0);
            }
            break;
        case 10:
            channel_input(s, &p);
            break;
        case 9:
            if (s->attached && next(&p) % 8 == 0) {
                CHECK(rmux_plane_detach(plane, s->handle) == RMUX_PLANE_OK);
                s->attached = 0;
            }
            break;
        }
        CHECK(flow->recv_unacked <= flow->recv_size);
        CHECK(flow->recv_undelivered <= flow->recv_unacked);
        CHECK(flow->send_unacked <= flow->send_size);
        CHECK(flow->bytes_down + flow->recv_undelivered == flow->recv_total);
        CHECK(flow->recv_total == s->delivered);
        CHECK(flow->recv_unacked == s->delivered - s->acked);
        CHECK(flow->recv_delivered_unacked == flow->bytes_down - s->acked);
        CHECK(flow->recv_delivered_unacked < flow->recv_threshold);
    }
    /* Let every attached, healthy stream finish: whatever was delivered arrives. */
    rmux_plane_set_paused(plane, 0);
    rmux_plane_set_inbound_paused(plane, 0);
    for (int round = 0; round < 10000; round++) {
        int waiting = 0;
        for (int i = 0; i < STREAMS; i++) {
            fstream *s = &streams[i];
            app_read(s, 1 << 20);
            if (s->attached && !s->failed && s->read < s->delivered) {
                waiting = 1;
            }
        }
        handle_events(rmux_engine_pump(engine, events, MAX_EVENTS));
        if (!waiting) {
            break;
        }
    }
    check_output();
    for (int i = 0; i < STREAMS; i++) {
        fstream *s = &streams[i];
        if (s->attached && !s->failed) {
            CHECK(s->read == s->delivered);
        }
        CHECK(rmux_plane_remove(plane, s->handle) == RMUX_PLANE_OK);
        close(s->app);
        close(s->mine);
    }
    CHECK(rmux_plane_inbound_held(plane) == 0);
    rmux_plane_free(plane);
    rmux_tx_free(tx);
    rmux_engine_free(engine);
    return 0;
}

#ifdef RMUX_REPLAY_MAIN
int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--random") == 0) {
        long runs = strtol(argv[2], NULL, 10);
        srandom((unsigned)strtoul(argv[3], NULL, 10));
        static uint8_t input[4096];
        for (long run = 0; run < runs; run++) {
            size_t n = 16 + (size_t)random() % (sizeof input - 16);
            for (size_t i = 0; i < n; i++) {
                input[i] = (uint8_t)random();
            }
            LLVMFuzzerTestOneInput(input, n);
        }
        printf("ran %ld random programs\n", runs);
        return 0;
    }
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
