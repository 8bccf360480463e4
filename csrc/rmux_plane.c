/*
 * reactor-mux data plane (see rmux_plane.h and docs/design-dataplane.md).
 *
 * Sockets are registered once, edge-triggered, and never modified: a stream
 * remembers that its socket may have bytes to read (can_read) or room to write
 * (can_write) until a read or write says otherwise, and sits on the engine's
 * work list while it has something it may do.  A window that opens, or a plane
 * that stops pausing, puts its streams back on the list; no epoll_ctl is paid
 * per window change, and an idle stream costs nothing per pump.
 *
 * The flow-control arithmetic mirrors reactor_mux/protocol/windows.py exactly;
 * tests/test_plane.py checks the two against each other.
 */
#define _GNU_SOURCE
#include "rmux_plane.h"
#include "rmux_tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef RMUX_MALLOC
#define RMUX_MALLOC malloc
#endif
#ifndef RMUX_CALLOC
#define RMUX_CALLOC calloc
#endif

#define INBOUND_INITIAL 16384u /* an inbound ring's first allocation (RingBuffer's) */
#define EPOLL_BATCH 256
/* Records one channel read may decode in the plane; a read with more goes to Python. */
#define INPUT_FRAMES 1024
/* Frames of one stream written with one sendmsg (consecutive frames of a stream). */
#define DELIVERY_PARTS 64
/* Events one stream can produce in one pump: ACK, RING_FREED, WRITE_CLOSED or
 * FAILED, READ_EOF or FAILED, BLOCKED, and its plane's OUTPUT. */
#define EVENTS_PER_STREAM 6
/* Planes one pump sends for; more wait for Python's flush (OUTPUT). */
#define SENDING_PLANES 64
/* FINs one send step reports; a plane with more stops there, for the next pump. */
#define FINS_PER_SEND 64
/* Rounds one pump call makes while streams have work and nothing needs Python:
 * a bulk stream's next read waits for no trip through the selectors loop. */
#define PUMP_ROUNDS 4
/* Ciphertext one recv of a TLS channel takes (io/tls.py's CIPHER_READ): one
 * buffer per engine, taken when a TLS channel is first read. */
#define CIPHER_READ 262144

#ifdef __linux__

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef struct plane_stream plane_stream;

struct plane_stream {
    rmux_flow flow;
    rmux_plane *plane;
    plane_stream *work_prev;
    plane_stream *work_next;
    uint8_t *ring; /* inbound: what the socket has not taken yet */
    uint32_t ring_capacity;
    uint32_t ring_head;
    uint32_t ring_size;
    uint32_t stream_id;
    int32_t handle;
    int32_t tx_slot;
    int fd; /* -1 while detached */
    uint8_t receiving;
    uint8_t sending;
    uint8_t can_read;
    uint8_t can_write;
    uint8_t hung_up; /* the socket reported RDHUP, HUP or ERR: reads end in EOF or an error */
    uint8_t is_channel; /* the plane's channel socket (input), not a stream */
    uint8_t read_eof;
    uint8_t peer_eof;
    uint8_t write_closed;
    uint8_t failed;
    uint8_t in_work;
    uint32_t gather_head; /* this read's first and last frame for it (index + 1; 0: none) */
    uint32_t gather_tail;
};

struct rmux_engine {
    int epfd;
    plane_stream *work_head;
    plane_stream *work_tail;
    size_t backlog;
    uint32_t planes;
    uint32_t generation; /* counts pumps: a plane reports OUTPUT once per pump */
    uint8_t pumping;     /* inside rmux_engine_pump: what is queued is sent before it returns */
    rmux_plane *sending[SENDING_PLANES]; /* planes to send for at the end of this pump */
    uint32_t nsending;
    uint32_t sending_cap; /* how many this pump may take (its events must have room) */
    rmux_frame frames[INPUT_FRAMES]; /* one channel read's frames, scanned in place */
    uint32_t next_frame[INPUT_FRAMES]; /* the next frame of the same stream (index + 1; 0: none) */
    plane_stream *receivers[INPUT_FRAMES]; /* the read's streams, by their first frame */
    rmux_gather gather;              /* one send's frames, in place in the rings */
    uint8_t *cipher;                 /* a TLS channel's ciphertext on its way in (CIPHER_READ) */
    uint8_t outer_ready;             /* the selector's epoll set was ready this round */
    uint8_t interrupted;             /* a signal cut the wait short */
    int wait_error;                  /* errno of an epoll_wait that failed otherwise */
    struct epoll_event ready[EPOLL_BATCH];
};

/* stream id -> handle, open addressing with linear probing. */
enum { SLOT_EMPTY = 0, SLOT_USED = 1, SLOT_DELETED = 2 };

struct rmux_plane {
    rmux_engine *engine;
    rmux_tx *tx;
    uint32_t tag;
    plane_stream **streams; /* by handle; NULL where free */
    uint32_t nhandles;
    uint32_t handles_capacity;
    int32_t *free_handles;
    uint32_t nfree;
    uint32_t *table_ids;
    int32_t *table_handles;
    uint8_t *table_state;
    uint32_t table_capacity; /* a power of two, or 0 */
    uint32_t table_filled;   /* used and deleted slots */
    uint64_t inbound_held;
    uint8_t paused;
    uint8_t inbound_paused;
    uint32_t output_generation; /* the pump that last reported OUTPUT for it */
    int channel_fd;             /* the channel's socket, or -1 */
    uintptr_t tls_out;          /* its TLS session (rmux_tls.h) where it sends through one */
    uintptr_t tls_in;           /* the same for reads (set with the input) */
    int tls_stop;               /* a TLS read's end seen behind plaintext: reported next turn */
    uint32_t tls_detail;
    plane_stream input;         /* the channel socket as the engine reads it */
    rmux_rx *rx;                /* the decoder's buffer and cursor, while the plane reads */
    uint64_t channel_reads;
    double last_read_at;        /* the last one's time (CLOCK_MONOTONIC_COARSE seconds) */
    uint64_t inbound_limit;
    uint8_t send_ok;            /* Python has nothing of its own to send first */
    uint64_t sends_unreported;  /* sends made since the last SENT */
    uint32_t answers_queued;    /* bytes of PONGs the plane queued since the last send:
                                 * a send of those alone is not reported (nothing in it
                                 * is logged or retained: nothing to confirm) */
    uint64_t report_sends_at;   /* SENT once this many are unreported (Python's barrier count) */
    uint64_t report_held_at;    /* or once the send rings hold this much (the outbound cap); 0: off */
    uint64_t commands_taken;    /* the peer's commands taken here, not yet counted by the session */
    uint32_t max_window;        /* the largest receive window this side grants (0: unknown) */
    uint32_t nacks;             /* ACKs the plane sent itself, not yet in the session's log */
    uint32_t ack_ids[RMUX_PLANE_ACKS];
    uint32_t ack_counts[RMUX_PLANE_ACKS];
    uint64_t growth_left;       /* window growth the channel may still grant (Session's budget) */
    uint64_t pongs;             /* keepalive PONGs taken since Python last asked */
    uint32_t pong_token;        /* the last one's token */
    double pong_at;             /* and when it came (CLOCK_MONOTONIC seconds) */
};

/* ------------------------------------------------------------ work list */

static void work_push(rmux_engine *engine, plane_stream *stream) {
    if (stream->in_work) {
        return;
    }
    stream->in_work = 1;
    stream->work_next = NULL;
    stream->work_prev = engine->work_tail;
    if (engine->work_tail != NULL) {
        engine->work_tail->work_next = stream;
    } else {
        engine->work_head = stream;
    }
    engine->work_tail = stream;
    engine->backlog++;
}

static void work_unlink(rmux_engine *engine, plane_stream *stream) {
    if (!stream->in_work) {
        return;
    }
    if (stream->work_prev != NULL) {
        stream->work_prev->work_next = stream->work_next;
    } else {
        engine->work_head = stream->work_next;
    }
    if (stream->work_next != NULL) {
        stream->work_next->work_prev = stream->work_prev;
    } else {
        engine->work_tail = stream->work_prev;
    }
    stream->in_work = 0;
    stream->work_prev = stream->work_next = NULL;
    engine->backlog--;
}

/* ---------------------------------------------------------------- engine */

rmux_engine *rmux_engine_new(void) {
    rmux_engine *engine = RMUX_CALLOC(1, sizeof *engine);
    if (engine == NULL) {
        return NULL;
    }
    engine->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (engine->epfd < 0) {
        free(engine);
        return NULL;
    }
    return engine;
}

void rmux_engine_free(rmux_engine *engine) {
    if (engine == NULL) {
        return;
    }
    close(engine->epfd);
    free(engine->cipher);
    free(engine);
}

int rmux_engine_fd(const rmux_engine *engine) {
    return engine->epfd;
}

size_t rmux_engine_backlog(const rmux_engine *engine) {
    return engine->backlog;
}

/* --------------------------------------------------------- id -> handle */

static uint32_t hash_id(uint32_t id) {
    /* Stream ids count up by two from each side: spread them over the table. */
    return id * 2654435761u;
}

static int32_t lookup(const rmux_plane *plane, uint32_t stream_id) {
    if (plane->table_capacity == 0) {
        return -1;
    }
    uint32_t mask = plane->table_capacity - 1;
    for (uint32_t i = hash_id(stream_id) & mask;; i = (i + 1) & mask) {
        if (plane->table_state[i] == SLOT_EMPTY) {
            return -1;
        }
        if (plane->table_state[i] == SLOT_USED && plane->table_ids[i] == stream_id) {
            return plane->table_handles[i];
        }
    }
}

static void table_put(rmux_plane *plane, uint32_t stream_id, int32_t handle) {
    uint32_t mask = plane->table_capacity - 1;
    uint32_t i = hash_id(stream_id) & mask;
    while (plane->table_state[i] == SLOT_USED) {
        i = (i + 1) & mask;
    }
    if (plane->table_state[i] == SLOT_EMPTY) {
        plane->table_filled++;
    }
    plane->table_state[i] = SLOT_USED;
    plane->table_ids[i] = stream_id;
    plane->table_handles[i] = handle;
}

static void table_delete(rmux_plane *plane, uint32_t stream_id) {
    uint32_t mask = plane->table_capacity - 1;
    for (uint32_t i = hash_id(stream_id) & mask;; i = (i + 1) & mask) {
        if (plane->table_state[i] == SLOT_EMPTY) {
            return;
        }
        if (plane->table_state[i] == SLOT_USED && plane->table_ids[i] == stream_id) {
            plane->table_state[i] = SLOT_DELETED;
            return;
        }
    }
}

/* Make room for one more id (rehashing away deleted slots), keeping the table at
 * most three quarters full so that every probe ends.  Nothing changes on failure. */
static int table_reserve(rmux_plane *plane, uint32_t live) {
    if ((uint64_t)(plane->table_filled + 1) * 4 <= (uint64_t)plane->table_capacity * 3) {
        return 1;
    }
    uint32_t capacity = 16;
    while ((uint64_t)(live + 1) * 2 > capacity) {
        capacity *= 2;
    }
    uint32_t *ids = RMUX_MALLOC((size_t)capacity * sizeof *ids);
    int32_t *handles = RMUX_MALLOC((size_t)capacity * sizeof *handles);
    uint8_t *state = RMUX_CALLOC(capacity, 1);
    if (ids == NULL || handles == NULL || state == NULL) {
        free(ids);
        free(handles);
        free(state);
        return 0;
    }
    uint32_t *old_ids = plane->table_ids;
    int32_t *old_handles = plane->table_handles;
    uint8_t *old_state = plane->table_state;
    uint32_t old_capacity = plane->table_capacity;
    plane->table_ids = ids;
    plane->table_handles = handles;
    plane->table_state = state;
    plane->table_capacity = capacity;
    plane->table_filled = 0;
    for (uint32_t i = 0; i < old_capacity; i++) {
        if (old_state[i] == SLOT_USED) {
            table_put(plane, old_ids[i], old_handles[i]);
        }
    }
    free(old_ids);
    free(old_handles);
    free(old_state);
    return 1;
}

/* ----------------------------------------------------------------- plane */

rmux_plane *rmux_plane_new(rmux_engine *engine, rmux_tx *tx, uint32_t tag) {
    rmux_plane *plane = RMUX_CALLOC(1, sizeof *plane);
    if (plane == NULL) {
        return NULL;
    }
    plane->engine = engine;
    plane->tx = tx;
    plane->tag = tag;
    plane->channel_fd = -1;
    plane->tls_stop = -1;
    plane->report_sends_at = 1; /* every send, until Python says otherwise */
    plane->growth_left = UINT64_MAX; /* unknown: every BLOCKED at the window is Python's */
    plane->input.plane = plane;
    plane->input.is_channel = 1;
    plane->input.fd = -1;
    plane->input.handle = -1;
    engine->planes++;
    return plane;
}

static plane_stream *get(rmux_plane *plane, int32_t handle) {
    if (handle < 0 || (uint32_t)handle >= plane->nhandles) {
        return NULL;
    }
    return plane->streams[handle];
}

static void free_ring(plane_stream *stream) {
    stream->plane->inbound_held -= stream->ring_capacity;
    free(stream->ring);
    stream->ring = NULL;
    stream->ring_capacity = stream->ring_head = stream->ring_size = 0;
}

static void detach(plane_stream *stream) {
    if (stream->fd >= 0) {
        /* Fails only for a descriptor already closed, which took itself out of the set. */
        (void)epoll_ctl(stream->plane->engine->epfd, EPOLL_CTL_DEL, stream->fd, NULL);
        stream->fd = -1;
    }
    work_unlink(stream->plane->engine, stream);
    stream->can_read = stream->can_write = 0;
}

void rmux_plane_free(rmux_plane *plane) {
    if (plane == NULL) {
        return;
    }
    for (uint32_t i = 0; i < plane->nhandles; i++) {
        plane_stream *stream = plane->streams[i];
        if (stream != NULL) {
            detach(stream);
            free_ring(stream);
            free(stream);
        }
    }
    detach(&plane->input);
    plane->engine->planes--;
    free(plane->streams);
    free(plane->free_handles);
    free(plane->table_ids);
    free(plane->table_handles);
    free(plane->table_state);
    free(plane);
}

static int may_read(const plane_stream *stream) {
    return stream->fd >= 0 && stream->sending && !stream->read_eof && !stream->failed &&
           !stream->plane->paused && stream->tx_slot >= 0 &&
           stream->flow.send_unacked < stream->flow.send_size;
}

static int has_work(const plane_stream *stream) {
    if (stream->fd < 0 || stream->failed) {
        return 0;
    }
    if (stream->is_channel) {
        return stream->can_read && stream->plane->rx != NULL;
    }
    if (stream->can_read && may_read(stream)) {
        return 1;
    }
    if (stream->can_write && stream->ring_size > 0) {
        return 1;
    }
    return stream->peer_eof && !stream->write_closed && stream->ring_size == 0;
}

static void wake(plane_stream *stream) {
    if (has_work(stream)) {
        work_push(stream->plane->engine, stream);
    }
}

void rmux_plane_set_channel(rmux_plane *plane, int fd, uintptr_t tls) {
    plane->channel_fd = fd;
    plane->tls_out = fd >= 0 ? tls : 0;
}

rmux_plane_status rmux_plane_set_input(rmux_plane *plane, rmux_rx *rx, int fd, uintptr_t tls) {
    plane_stream *input = &plane->input;
    if (fd >= 0 && tls && plane->engine->cipher == NULL) {
        plane->engine->cipher = RMUX_MALLOC(CIPHER_READ);
        if (plane->engine->cipher == NULL) {
            return RMUX_PLANE_NO_MEMORY;
        }
    }
    if (input->fd != fd || plane->tls_in != (fd >= 0 ? tls : 0)) {
        plane->tls_stop = -1; /* another connection: nothing seen on it yet */
    }
    plane->tls_in = fd >= 0 ? tls : 0;
    if (input->fd >= 0 && input->fd != fd) {
        detach(input);
    }
    if (fd >= 0 && input->fd != fd) {
        struct epoll_event event;
        memset(&event, 0, sizeof event);
        event.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
        event.data.ptr = input;
        if (epoll_ctl(plane->engine->epfd, EPOLL_CTL_ADD, fd, &event) != 0) {
            plane->rx = NULL;
            return RMUX_PLANE_SYSTEM;
        }
        input->fd = fd;
        input->can_read = 1; /* bytes may be waiting already: try at the next pump */
        input->hung_up = 0;
    }
    plane->rx = fd >= 0 ? rx : NULL;
    if (plane->rx != NULL) {
        wake(input);
    }
    return RMUX_PLANE_OK;
}

void rmux_plane_wake_input(rmux_plane *plane) {
    plane->input.can_read = 1;
    wake(&plane->input);
}

uint64_t rmux_plane_channel_reads(const rmux_plane *plane) {
    return plane->channel_reads;
}

double rmux_plane_last_read_at(const rmux_plane *plane) {
    return plane->last_read_at;
}

void rmux_plane_set_inbound_limit(rmux_plane *plane, uint64_t limit) {
    plane->inbound_limit = limit;
}

void rmux_plane_set_send_ok(rmux_plane *plane, int ok) {
    plane->send_ok = ok ? 1 : 0;
}

void rmux_plane_set_send_reports(rmux_plane *plane, uint64_t every, uint64_t held) {
    plane->report_sends_at = every ? every : 1;
    plane->report_held_at = held;
}

void rmux_plane_set_max_window(rmux_plane *plane, uint32_t max_window) {
    plane->max_window = max_window;
}

void rmux_plane_set_growth_left(rmux_plane *plane, uint64_t growth_left) {
    plane->growth_left = growth_left;
}

size_t rmux_plane_take_acks(rmux_plane *plane, uint32_t *stream_ids, uint32_t *counts,
                            size_t max) {
    size_t taken = plane->nacks < max ? plane->nacks : max;
    memcpy(stream_ids, plane->ack_ids, taken * sizeof *stream_ids);
    memcpy(counts, plane->ack_counts, taken * sizeof *counts);
    memmove(plane->ack_ids, plane->ack_ids + taken, (plane->nacks - taken) * sizeof *stream_ids);
    memmove(plane->ack_counts, plane->ack_counts + taken, (plane->nacks - taken) * sizeof *counts);
    plane->nacks -= (uint32_t)taken;
    return taken;
}

uint64_t rmux_plane_take_pongs(rmux_plane *plane, uint32_t *token, double *at) {
    uint64_t count = plane->pongs;
    plane->pongs = 0;
    *token = plane->pong_token;
    *at = plane->pong_at;
    return count;
}

uint64_t rmux_plane_take_commands(rmux_plane *plane) {
    uint64_t count = plane->commands_taken;
    plane->commands_taken = 0;
    return count;
}

uint64_t rmux_plane_take_sends(rmux_plane *plane) {
    uint64_t count = plane->sends_unreported;
    plane->sends_unreported = 0;
    return count;
}

void rmux_plane_set_paused(rmux_plane *plane, int paused) {
    plane->paused = paused ? 1 : 0;
    if (!paused) {
        for (uint32_t i = 0; i < plane->nhandles; i++) {
            if (plane->streams[i] != NULL) {
                wake(plane->streams[i]);
            }
        }
    }
}

uint64_t rmux_plane_release_idle_inbound(rmux_plane *plane) {
    uint64_t released = 0;
    for (uint32_t i = 0; i < plane->nhandles; i++) {
        plane_stream *stream = plane->streams[i];
        if (stream != NULL && stream->ring_size == 0 && stream->ring_capacity) {
            released += stream->ring_capacity;
            free_ring(stream);
        }
    }
    return released;
}

void rmux_plane_set_inbound_paused(rmux_plane *plane, int paused) {
    plane->inbound_paused = paused ? 1 : 0;
    if (paused) {
        rmux_plane_release_idle_inbound(plane);
    }
}

uint64_t rmux_plane_inbound_held(const rmux_plane *plane) {
    return plane->inbound_held;
}

int32_t rmux_plane_add(rmux_plane *plane, uint32_t stream_id, uint32_t send_window,
                       uint32_t recv_window) {
    if (lookup(plane, stream_id) >= 0) {
        return RMUX_PLANE_INVALID;
    }
    plane_stream *stream = RMUX_CALLOC(1, sizeof *stream);
    if (stream == NULL) {
        return RMUX_PLANE_NO_MEMORY;
    }
    if (plane->nfree == 0 && plane->nhandles == plane->handles_capacity) {
        uint32_t capacity = plane->handles_capacity ? 2 * plane->handles_capacity : 16;
        plane_stream **streams = RMUX_MALLOC((size_t)capacity * sizeof *streams);
        int32_t *free_handles = RMUX_MALLOC((size_t)capacity * sizeof *free_handles);
        if (streams == NULL || free_handles == NULL) {
            free(streams);
            free(free_handles);
            free(stream);
            return RMUX_PLANE_NO_MEMORY;
        }
        if (plane->nhandles) {
            memcpy(streams, plane->streams, (size_t)plane->nhandles * sizeof *streams);
        }
        free(plane->streams);
        free(plane->free_handles);
        plane->streams = streams;
        plane->free_handles = free_handles;
        plane->handles_capacity = capacity;
    }
    uint32_t live = plane->nhandles - plane->nfree;
    if (!table_reserve(plane, live)) {
        free(stream);
        return RMUX_PLANE_NO_MEMORY;
    }
    int32_t handle = plane->nfree ? plane->free_handles[--plane->nfree] : (int32_t)plane->nhandles++;
    stream->plane = plane;
    stream->stream_id = stream_id;
    stream->handle = handle;
    stream->tx_slot = -1;
    stream->fd = -1;
    stream->flow.send_size = send_window;
    stream->flow.recv_size = recv_window;
    stream->flow.recv_threshold = recv_window / 4 ? recv_window / 4 : 1;
    plane->streams[handle] = stream;
    table_put(plane, stream_id, handle);
    return handle;
}

rmux_flow *rmux_plane_flow(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    return stream == NULL ? NULL : &stream->flow;
}

rmux_plane_status rmux_plane_attach(rmux_plane *plane, int32_t handle, int fd, int32_t tx_slot) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL || stream->fd >= 0 || fd < 0) {
        return RMUX_PLANE_INVALID;
    }
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.ptr = stream;
    if (epoll_ctl(plane->engine->epfd, EPOLL_CTL_ADD, fd, &event) != 0) {
        return RMUX_PLANE_SYSTEM;
    }
    stream->fd = fd;
    stream->tx_slot = tx_slot;
    /* Registration reports the socket's state as a first edge; until then,
     * assume it can be written (a new socket can) and wait to read. */
    stream->can_write = 1;
    return RMUX_PLANE_OK;
}

rmux_plane_status rmux_plane_detach(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL) {
        return RMUX_PLANE_INVALID;
    }
    detach(stream);
    return RMUX_PLANE_OK;
}

rmux_plane_status rmux_plane_remove(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL) {
        return RMUX_PLANE_INVALID;
    }
    detach(stream);
    free_ring(stream);
    table_delete(plane, stream->stream_id);
    plane->streams[handle] = NULL;
    plane->free_handles[plane->nfree++] = handle;
    free(stream);
    return RMUX_PLANE_OK;
}

rmux_plane_status rmux_plane_set_receiving(rmux_plane *plane, int32_t handle, int receiving) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL) {
        return RMUX_PLANE_INVALID;
    }
    stream->receiving = receiving ? 1 : 0;
    return RMUX_PLANE_OK;
}

rmux_plane_status rmux_plane_set_sending(rmux_plane *plane, int32_t handle, int sending) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL) {
        return RMUX_PLANE_INVALID;
    }
    stream->sending = sending ? 1 : 0;
    wake(stream);
    return RMUX_PLANE_OK;
}

rmux_plane_status rmux_plane_wake(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL) {
        return RMUX_PLANE_INVALID;
    }
    wake(stream);
    return RMUX_PLANE_OK;
}

int64_t rmux_plane_inbound_buffered(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    return stream == NULL ? RMUX_PLANE_INVALID : (int64_t)stream->ring_size;
}

/* ------------------------------------------------------------ the bytes */

static void emit(rmux_event *events, size_t *count, uint32_t kind, const plane_stream *stream,
                 uint32_t value) {
    rmux_event *event = &events[(*count)++];
    event->kind = kind;
    event->plane = stream->plane->tag;
    event->stream_id = stream->stream_id;
    event->value = value;
}

static void fail(plane_stream *stream, int error, rmux_event *events, size_t *count) {
    stream->failed = 1;
    work_unlink(stream->plane->engine, stream);
    emit(events, count, RMUX_EVENT_FAILED, stream, (uint32_t)error);
}

/* windows.py ReceiveWindow.delivered: count bytes written to the socket; an
 * ACK is due once a threshold's worth was written. */
/* The plane's output has bytes: sent at the end of this pump where the plane
 * sends itself, else Python hears OUTPUT (once per pump). */
static void output_added(rmux_plane *plane, const plane_stream *stream, rmux_event *events,
                         size_t *nevents) {
    rmux_engine *engine = plane->engine;
    if (plane->output_generation == engine->generation) {
        return;
    }
    plane->output_generation = engine->generation;
    if (plane->channel_fd >= 0 && plane->send_ok && engine->nsending < engine->sending_cap) {
        engine->sending[engine->nsending++] = plane; /* sent at the end of the pump */
    } else {
        emit(events, nevents, RMUX_EVENT_OUTPUT, stream, 0);
    }
}

/* Our "ACK n", sent by the plane itself: only inside a pump of a plane that sends
 * its own output and has nothing of Python's queued (so the ACK goes out after
 * every command the session logged before it, and before any it logs after,
 * which is the order Session._fold_plane_acks logs it in), only while the
 * stream takes ACKs from us (not after the peer's FIN: none is owed), and not
 * while the inbound cap pauses the channel's reads (the events are how Python
 * learns the rings drained).  Returns 0 where Python must send it (the ACK event). */
static int send_ack(plane_stream *stream, uint32_t ack, rmux_event *events, size_t *nevents) {
    rmux_plane *plane = stream->plane;
    uint32_t sent = ack;
    if (!plane->engine->pumping || plane->channel_fd < 0 || !plane->send_ok ||
        plane->inbound_paused || /* Python's ACK event is when it sees the rings drain */
        !stream->receiving || plane->nacks == RMUX_PLANE_ACKS ||
        plane->engine->nsending >= plane->engine->sending_cap) {
        return 0;
    }
    uint8_t frame[RMUX_HEADER_SIZE + 16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 'A', 'C', 'K', ' '};
    uint8_t digits[10];
    uint32_t ndigits = 0;
    do { /* the canonical decimal: no sign, no leading zero (ack >= 1) */
        digits[ndigits++] = (uint8_t)('0' + ack % 10);
        ack /= 10;
    } while (ack);
    uint32_t body = 4 + ndigits;
    for (uint32_t i = 0; i < ndigits; i++) {
        frame[RMUX_HEADER_SIZE + 4 + i] = digits[ndigits - 1 - i];
    }
    rmux_encode_header(frame, body, stream->stream_id, RMUX_KIND_COMMAND);
    if (rmux_tx_append(plane->tx, frame, RMUX_HEADER_SIZE + body) != RMUX_TX_OK) {
        return 0;
    }
    plane->ack_ids[plane->nacks] = stream->stream_id;
    plane->ack_counts[plane->nacks] = sent;
    plane->nacks++;
    output_added(plane, stream, events, nevents);
    return 1;
}

static void delivered(plane_stream *stream, uint32_t count, rmux_event *events, size_t *nevents) {
    rmux_flow *flow = &stream->flow;
    flow->recv_undelivered -= count;
    flow->recv_delivered_unacked += count;
    flow->bytes_down += count;
    if (flow->recv_delivered_unacked >= flow->recv_threshold) {
        uint32_t ack = flow->recv_delivered_unacked;
        flow->recv_delivered_unacked = 0;
        flow->recv_unacked -= ack;
        if (!send_ack(stream, ack, events, nevents)) {
            emit(events, nevents, RMUX_EVENT_ACK, stream, ack);
        }
    }
}

/* Append to the inbound ring, growing it by doubling from INBOUND_INITIAL up to
 * the receive window (RingBuffer's rule); the window bounds what can be waiting. */
static int ring_append(plane_stream *stream, const uint8_t *data, uint32_t length) {
    uint64_t needed = (uint64_t)stream->ring_size + length;
    if (needed > stream->ring_capacity) {
        uint64_t capacity = stream->ring_capacity > INBOUND_INITIAL ? stream->ring_capacity
                                                                    : INBOUND_INITIAL;
        while (capacity < needed) {
            capacity *= 2;
        }
        if (capacity > stream->flow.recv_size) {
            capacity = stream->flow.recv_size;
        }
        if (capacity < needed) {
            return EOVERFLOW; /* beyond the window: the caller checked, so never */
        }
        uint8_t *ring = RMUX_MALLOC((size_t)capacity);
        if (ring == NULL) {
            return ENOMEM;
        }
        uint32_t first = stream->ring_capacity - stream->ring_head;
        if (first > stream->ring_size) {
            first = stream->ring_size;
        }
        if (stream->ring_size) {
            memcpy(ring, stream->ring + stream->ring_head, first);
            memcpy(ring + first, stream->ring, stream->ring_size - first);
        }
        stream->plane->inbound_held += capacity - stream->ring_capacity;
        free(stream->ring);
        stream->ring = ring;
        stream->ring_capacity = (uint32_t)capacity;
        stream->ring_head = 0;
    }
    uint32_t tail = (stream->ring_head + stream->ring_size) % stream->ring_capacity;
    uint32_t first = stream->ring_capacity - tail;
    if (first > length) {
        first = length;
    }
    memcpy(stream->ring + tail, data, first);
    memcpy(stream->ring, data + first, length - first);
    stream->ring_size += length;
    return 0;
}

/* Write what the inbound ring holds; returns the bytes written, or -errno. */
static int64_t ring_write(plane_stream *stream) {
    struct iovec parts[2];
    uint32_t first = stream->ring_capacity - stream->ring_head;
    if (first > stream->ring_size) {
        first = stream->ring_size;
    }
    parts[0].iov_base = stream->ring + stream->ring_head;
    parts[0].iov_len = first;
    parts[1].iov_base = stream->ring;
    parts[1].iov_len = stream->ring_size - first;
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = parts;
    message.msg_iovlen = parts[1].iov_len ? 2 : 1;
    ssize_t sent;
    do {
        sent = sendmsg(stream->fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -(int64_t)errno;
    }
    stream->ring_size -= (uint32_t)sent;
    stream->ring_head = stream->ring_size ? (uint32_t)((stream->ring_head + sent) % stream->ring_capacity)
                                          : 0;
    return sent;
}

static void pass_eof_on(plane_stream *stream) {
    stream->write_closed = 1;
    (void)shutdown(stream->fd, SHUT_WR); /* a socket already reset says so on its next read */
}

int rmux_plane_peer_finished(rmux_plane *plane, int32_t handle) {
    plane_stream *stream = get(plane, handle);
    if (stream == NULL || stream->fd < 0) {
        return RMUX_PLANE_INVALID;
    }
    stream->peer_eof = 1;
    if (stream->ring_size == 0 && !stream->write_closed && !stream->failed) {
        pass_eof_on(stream);
        return 1;
    }
    return 0;
}

static void write_side(plane_stream *stream, rmux_event *events, size_t *nevents) {
    if (stream->can_write && stream->ring_size > 0) {
        uint32_t before = stream->ring_size;
        int64_t sent = ring_write(stream);
        if (sent < 0) {
            fail(stream, (int)-sent, events, nevents);
            return;
        }
        if (stream->ring_size > 0) {
            stream->can_write = 0; /* the socket is full: its next edge says when it is not */
        }
        if (sent > 0) {
            delivered(stream, before - stream->ring_size, events, nevents);
        }
        if (stream->ring_size == 0 && stream->plane->inbound_paused) {
            free_ring(stream);
            /* Python lifts the cap when it sees the rings drained; an ACK event
             * would tell it, but a ring smaller than the ACK step owes none. */
            emit(events, nevents, RMUX_EVENT_RING_FREED, stream, 0);
        }
    }
    if (stream->peer_eof && !stream->write_closed && stream->ring_size == 0) {
        pass_eof_on(stream);
        emit(events, nevents, RMUX_EVENT_WRITE_CLOSED, stream, 0);
    }
}

static void read_side(plane_stream *stream, rmux_event *events, size_t *nevents) {
    if (!stream->can_read || !may_read(stream)) {
        return;
    }
    rmux_plane *plane = stream->plane;
    rmux_flow *flow = &stream->flow;
    uint32_t count = flow->send_size - flow->send_unacked;
    if (count > RMUX_PLANE_READ_CHUNK) {
        count = RMUX_PLANE_READ_CHUNK;
    }
    uint8_t *regions[2];
    uint32_t lengths[2];
    rmux_tx_status status = rmux_tx_reserve(plane->tx, stream->tx_slot, count, &regions[0],
                                            &lengths[0], &regions[1], &lengths[1]);
    if (status != RMUX_TX_OK) {
        fail(stream, status == RMUX_TX_NO_MEMORY ? ENOMEM : EINVAL, events, nevents);
        return;
    }
    struct iovec parts[2];
    parts[0].iov_base = regions[0];
    parts[0].iov_len = lengths[0];
    parts[1].iov_base = regions[1];
    parts[1].iov_len = lengths[1];
    size_t offered = (size_t)lengths[0] + lengths[1];
    ssize_t got;
    do {
        got = readv(stream->fd, parts, lengths[1] ? 2 : 1);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            stream->can_read = 0;
        } else {
            fail(stream, errno, events, nevents);
        }
        return;
    }
    if (got == 0) {
        stream->read_eof = 1;
        stream->can_read = 0;
        emit(events, nevents, RMUX_EVENT_READ_EOF, stream, 0);
        return;
    }
    if ((size_t)got < offered && !stream->hung_up) {
        /* Drained: bytes that arrive later raise a new edge.  An EOF or error that
         * came with these bytes raises none, so a hung-up socket is read again. */
        stream->can_read = 0;
    }
    rmux_tx_commit(plane->tx, stream->tx_slot, (uint32_t)got);
    flow->send_unacked += (uint32_t)got;
    flow->send_total += (uint64_t)got;
    flow->bytes_up += (uint64_t)got;
    output_added(plane, stream, events, nevents);
    if (flow->send_unacked >= flow->send_size && !flow->blocked_reported) {
        flow->blocked_reported = 1;
        emit(events, nevents, RMUX_EVENT_BLOCKED, stream, flow->send_size);
    }
}

static void emit_plane(rmux_event *events, size_t *count, uint32_t kind, const rmux_plane *plane,
                       uint32_t stream_id, uint32_t value) {
    rmux_event *event = &events[(*count)++];
    event->kind = kind;
    event->plane = plane->tag;
    event->stream_id = stream_id;
    event->value = value;
}

static void write_received(plane_stream *stream, const uint8_t *data, uint32_t length,
                           rmux_event *events, size_t *nevents);

/* The plane's stream for a frame it can deliver whole now (data within the
 * window, as rmux_plane_deliver checks), or NULL: the frame is Python's. */
static plane_stream *deliverable(rmux_plane *plane, const rmux_frame *frame) {
    if (frame->kind != RMUX_KIND_DATA) {
        return NULL;
    }
    int32_t handle = lookup(plane, frame->stream_id);
    plane_stream *stream = handle < 0 ? NULL : plane->streams[handle];
    if (stream == NULL || !stream->receiving || stream->fd < 0 ||
        (uint64_t)stream->flow.recv_unacked + frame->length > stream->flow.recv_size) {
        return NULL;
    }
    return stream;
}

/* Write bytes the session counted as received, in parts (bodies that lie apart in
 * the receive buffer): one sendmsg while nothing waits before them, the rest (if
 * the socket took less) to the stream's inbound ring.  At most two events. */
static void write_parts(plane_stream *stream, const struct iovec *parts, int nparts,
                        uint32_t length, rmux_event *events, size_t *nevents) {
    if (stream->failed || length == 0) {
        return;
    }
    uint32_t sent = 0;
    int tried = stream->ring_size == 0; /* else bytes wait in order: only append */
    if (tried) {
        struct msghdr message;
        memset(&message, 0, sizeof message);
        message.msg_iov = (struct iovec *)parts;
        message.msg_iovlen = (size_t)nparts;
        ssize_t n;
        do {
            n = sendmsg(stream->fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            fail(stream, errno, events, nevents);
            return;
        }
        sent = n > 0 ? (uint32_t)n : 0;
    }
    if (sent < length) {
        uint32_t skip = sent;
        for (int i = 0; i < nparts; i++) {
            uint32_t part = (uint32_t)parts[i].iov_len;
            if (skip >= part) {
                skip -= part;
                continue;
            }
            int error = ring_append(stream, (const uint8_t *)parts[i].iov_base + skip, part - skip);
            if (error) {
                fail(stream, error, events, nevents);
                return;
            }
            skip = 0;
        }
        if (tried) {
            stream->can_write = 0; /* the socket is full: its next edge says when it is not */
        } else {
            wake(stream); /* a writable socket's ring stays on the work list */
        }
    }
    if (sent) {
        delivered(stream, sent, events, nevents);
    }
}

/* Hand the channel's input to Python until it wakes the plane's reads again. */
static void hand_over(plane_stream *input, uint32_t kind, uint32_t value, rmux_event *events,
                      size_t *nevents) {
    input->can_read = 0;
    emit_plane(events, nevents, kind, input->plane, 0, value);
}

static int consume(rmux_plane *plane, rmux_rx *rx, uint64_t got, rmux_event *events,
                   size_t *nevents, size_t room, uint64_t *left_out);

/* A canonical decimal (no sign, no leading zero) of at most ten digits, or -1. */
static int64_t parse_count(const uint8_t *digits, uint32_t length) {
    if (length == 0 || length > 10 || digits[0] == '0') {
        return -1;
    }
    int64_t value = 0;
    for (uint32_t i = 0; i < length; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return -1;
        }
        value = value * 10 + (digits[i] - '0');
    }
    return value;
}

/* The plane's stream for a command naming it, in a state that takes ACK and
 * BLOCKED (they are the states that receive or send), or NULL. */
static plane_stream *command_stream(rmux_plane *plane, uint32_t stream_id) {
    int32_t handle = lookup(plane, stream_id);
    plane_stream *stream = handle < 0 ? NULL : plane->streams[handle];
    if (stream == NULL || !(stream->receiving || stream->sending) || stream->tx_slot < 0) {
        return NULL;
    }
    return stream;
}

/* The peer's "ACK n", applied as Session._on_stream_command applies it: n comes
 * off the send window, and with resume on the ring frees what the peer now has. */
static int take_ack(rmux_plane *plane, plane_stream *stream, int64_t count) {
    rmux_flow *flow = &stream->flow;
    if (count < 1 || (uint64_t)count > flow->send_unacked) {
        return 0;
    }
    if (rmux_tx_retains(plane->tx)) {
        uint64_t acked = flow->acked + (uint64_t)count;
        if (acked > flow->released) {
            int64_t retained = rmux_tx_retained(plane->tx, stream->tx_slot);
            if (retained < 0 || acked - flow->released > (uint64_t)retained) {
                return 0;
            }
            rmux_tx_acknowledge(plane->tx, stream->tx_slot, (uint32_t)(acked - flow->released));
            flow->released = acked;
        }
        flow->acked = acked;
    }
    flow->send_unacked -= (uint32_t)count;
    flow->blocked_reported = 0;
    wake(stream);
    return 1;
}

/* The peer's "BLOCKED w" where the session would do nothing: w is no longer the
 * window (a WINDOW crossed it), or Session.grow_window would grant no growth:
 * the window is as large as this side lets one grow, or doubling it would pass
 * the growth the channel has left. */
static int take_blocked(rmux_plane *plane, plane_stream *stream, int64_t window) {
    if (!stream->receiving || window < RMUX_PLANE_MIN_WINDOW || window > RMUX_PLANE_MAX_WINDOW) {
        return 0;
    }
    uint32_t size = stream->flow.recv_size;
    if ((uint64_t)window != size) {
        return 1;
    }
    if (plane->max_window == 0) {
        return 0; /* not told: the session decides */
    }
    uint64_t grown = 2 * (uint64_t)size < plane->max_window ? 2 * (uint64_t)size : plane->max_window;
    uint64_t extra = grown > size ? grown - size : 0;
    return extra == 0 || extra > plane->growth_left;
}

/* The peer's keepalive "PING n" (n below the barrier bit; a barrier's answer
 * orders the resume log: Python's), answered "PONG n" by the plane itself under
 * send_ack's conditions, so an idle fleet's keepalives cost Python nothing.  Not
 * a logged command either way.  Returns 0 where Python must answer. */
static int answer_ping(rmux_plane *plane, const uint8_t *digits, uint32_t ndigits,
                       rmux_event *events, size_t *nevents) {
    int64_t token = parse_count(digits, ndigits);
    if (token < 1 || token >= RMUX_PLANE_BARRIER_TOKEN || !plane->engine->pumping ||
        plane->channel_fd < 0 || !plane->send_ok ||
        plane->engine->nsending >= plane->engine->sending_cap) {
        return 0;
    }
    uint8_t frame[RMUX_HEADER_SIZE + 16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 'P', 'O', 'N', 'G', ' '};
    memcpy(frame + RMUX_HEADER_SIZE + 5, digits, ndigits); /* canonical: parse_count said so */
    rmux_encode_header(frame, 5 + ndigits, 0, RMUX_KIND_COMMAND);
    if (rmux_tx_append(plane->tx, frame, RMUX_HEADER_SIZE + 5 + ndigits) != RMUX_TX_OK) {
        return 0;
    }
    plane->answers_queued += RMUX_HEADER_SIZE + 5 + ndigits;
    output_added(plane, &plane->input, events, nevents);
    return 1;
}

/* Apply a command the session would only count (the common ACK and BLOCKED of
 * a bulk stream), or answer (a keepalive's PING, answer_ping).  Returns 0,
 * changing nothing, for any other command and every case the session must
 * judge or act on itself: a violation, another state, the outbound cap paused
 * (an ACK may release it). */
static int take_command(rmux_plane *plane, const uint8_t *body, uint32_t length,
                        uint32_t stream_id, rmux_event *events, size_t *nevents) {
    static const char ack[4] = {'A', 'C', 'K', ' '};
    static const char blocked[8] = {'B', 'L', 'O', 'C', 'K', 'E', 'D', ' '};
    static const char pong[5] = {'P', 'O', 'N', 'G', ' '};
    static const char ping[5] = {'P', 'I', 'N', 'G', ' '};
    if (stream_id == 0) { /* a keepalive's answer; a barrier's frees the log: Python's */
        if (length > 5 && memcmp(body, ping, 5) == 0) {
            return answer_ping(plane, body + 5, length - 5, events, nevents);
        }
        if (length <= 5 || memcmp(body, pong, 5) != 0) {
            return 0;
        }
        int64_t token = parse_count(body + 5, length - 5);
        if (token < 1 || token >= RMUX_PLANE_BARRIER_TOKEN) {
            return 0;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        plane->pongs++;
        plane->pong_token = (uint32_t)token;
        plane->pong_at = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
        return 1; /* not a logged command: commands_taken stays */
    }
    if (plane->paused) {
        return 0;
    }
    plane_stream *stream;
    int taken;
    if (length > 4 && memcmp(body, ack, 4) == 0) {
        int64_t count = parse_count(body + 4, length - 4);
        stream = command_stream(plane, stream_id);
        taken = stream != NULL && take_ack(plane, stream, count);
    } else if (length > 8 && memcmp(body, blocked, 8) == 0) {
        int64_t window = parse_count(body + 8, length - 8);
        stream = command_stream(plane, stream_id);
        taken = stream != NULL && take_blocked(plane, stream, window);
    } else {
        return 0;
    }
    if (taken) {
        plane->commands_taken++; /* both are logged commands (resume's count) */
    }
    return taken;
}

/* One read of the channel socket into the decoder's free tail.  Handled here
 * when every complete frame in the buffer is data the plane delivers whole;
 * else left for Python (CHANNEL_INPUT), as are a buffer that must grow or move
 * (CHANNEL_READABLE), EOF and errors. */
/* How a TLS read ended, for Python: the peer's close_notify is the channel's EOF;
 * the socket's own end Python's transport reads again (it says whether TLS was
 * ended first); a failed recv or record is the channel's failure. */
static void tls_stopped(plane_stream *input, int stop, uint32_t detail, rmux_event *events,
                        size_t *nevents) {
    switch (stop) {
    case RMUX_TLS_CLOSED:
        hand_over(input, RMUX_EVENT_CHANNEL_EOF, 0, events, nevents);
        break;
    case RMUX_TLS_SOCKET_EOF:
        hand_over(input, RMUX_EVENT_CHANNEL_READABLE, 0, events, nevents);
        break;
    case RMUX_TLS_SOCKET_ERROR:
        hand_over(input, RMUX_EVENT_CHANNEL_READ_FAILED, detail, events, nevents);
        break;
    default:
        hand_over(input, RMUX_EVENT_CHANNEL_TLS_FAILED, detail, events, nevents);
        break;
    }
}

/* Decrypt a TLS channel's records into the free tail of rx (free_tail bytes).
 * Returns the plaintext count; 0 where there was none (drained, or the read's
 * end was handed to Python).  An end seen behind plaintext is kept (tls_stop),
 * reported once that plaintext is consumed, and again whenever the plane is
 * asked to read the session after it. */
static ssize_t read_tls(rmux_plane *plane, plane_stream *input, uint64_t free_tail,
                        rmux_event *events, size_t *nevents) {
    rmux_rx *rx = plane->rx;
    size_t got = 0;
    uint32_t detail = 0;
    rmux_tls_stop stop = rmux_tls_receive(plane->tls_in, input->fd, input->hung_up,
                                          plane->engine->cipher, CIPHER_READ,
                                          rx->buffer + rx->end, (size_t)free_tail, &got, &detail);
    if (rmux_tls_unsent(plane->tls_in) > 0) { /* reading made protocol data (a key update) */
        int64_t sent = rmux_tls_flush(plane->tls_in, input->fd);
        if (sent < 0 || rmux_tls_unsent(plane->tls_in) > 0) {
            emit_plane(events, nevents, RMUX_EVENT_OUTPUT_LEFT, plane, 0, 0);
        }
    }
    if (stop == RMUX_TLS_DRAINED) {
        input->can_read = 0; /* the next bytes raise a new edge */
    } else if (stop != RMUX_TLS_FULL) {
        if (got == 0) {
            tls_stopped(input, stop, detail, events, nevents);
        } else {
            plane->tls_stop = stop;
            plane->tls_detail = detail;
        }
    }
    return (ssize_t)got;
}

static void read_channel(plane_stream *input, rmux_event *events, size_t *nevents,
                         size_t room) {
    rmux_plane *plane = input->plane;
    rmux_rx *rx = plane->rx;
    if (rx == NULL || !input->can_read) {
        return;
    }
    if (plane->tls_in && plane->tls_stop >= 0) {
        /* Before any hand-over: Python's own read of a failed session would
         * only find it failed, not why. */
        tls_stopped(input, plane->tls_stop, plane->tls_detail, events, nevents);
        return;
    }
    if (rx->start == rx->end) {
        rx->start = rx->end = 0; /* nothing pending: the whole buffer is free (writable()'s rule) */
    }
    uint64_t pending = rx->end - rx->start;
    int grow = rx->filled && rx->buffer_length < rx->capacity;
    int full = plane->inbound_limit && plane->inbound_held >= plane->inbound_limit;
    if (pending >= RMUX_HEADER_SIZE) { /* a partial frame: the buffer must hold all of it */
        uint32_t body = (uint32_t)rx->buffer[rx->start] << 24 |
                        (uint32_t)rx->buffer[rx->start + 1] << 16 |
                        (uint32_t)rx->buffer[rx->start + 2] << 8 | rx->buffer[rx->start + 3];
        grow |= (uint64_t)RMUX_HEADER_SIZE + body > rx->buffer_length;
    }
    if (rx->buffer == NULL || grow || full) {
        hand_over(input, RMUX_EVENT_CHANNEL_READABLE, 0, events, nevents);
        return;
    }
    uint64_t free_tail = rx->buffer_length - rx->end;
    uint64_t least = rx->buffer_length / 4 > RMUX_HEADER_SIZE ? rx->buffer_length / 4
                                                              : RMUX_HEADER_SIZE;
    if (free_tail < least && rx->start) { /* writable()'s rule: the partial frame to the front */
        memmove(rx->buffer, rx->buffer + rx->start, (size_t)pending);
        rx->start = 0;
        rx->end = pending;
        free_tail = rx->buffer_length - rx->end;
    }
    if (free_tail < RMUX_HEADER_SIZE) {
        hand_over(input, RMUX_EVENT_CHANNEL_READABLE, 0, events, nevents);
        return;
    }
    ssize_t got;
    if (plane->tls_in) {
        got = read_tls(plane, input, free_tail, events, nevents);
        if (got <= 0) {
            return;
        }
    } else {
        do {
            got = recv(input->fd, rx->buffer + rx->end, (size_t)free_tail, MSG_DONTWAIT);
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                input->can_read = 0;
            } else {
                hand_over(input, RMUX_EVENT_CHANNEL_READ_FAILED, (uint32_t)errno, events, nevents);
            }
            return;
        }
        if (got == 0) {
            hand_over(input, RMUX_EVENT_CHANNEL_EOF, 0, events, nevents);
            return;
        }
        if ((uint64_t)got < free_tail && !input->hung_up) {
            input->can_read = 0; /* drained: the next bytes raise a new edge */
        }
    }
    plane->channel_reads++;
    struct timespec now; /* the coarse clock: a few ns, within a tick of time.monotonic */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    plane->last_read_at = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    rx->offered = free_tail;
    rx->filled = (uint64_t)got >= free_tail;
    uint64_t left;
    if (consume(plane, rx, (uint64_t)got, events, nevents, room, &left)) {
        hand_over(input, RMUX_EVENT_CHANNEL_INPUT, (uint32_t)left, events, nevents);
    }
    if (plane->tls_in && plane->tls_stop >= 0) {
        /* The session ended behind this plaintext: Python acts on the end after
         * the batch's other events, and before any flush of its own could meet
         * the failed session first. */
        tls_stopped(input, plane->tls_stop, plane->tls_detail, events, nevents);
    }
}

/* Deliver the leading data frames of the got bytes just read after rx->end
 * that the plane holds, straight from the buffer: each stream's frames in one
 * sendmsg, however a round-robin sender interleaved them with other streams'
 * (the streams in the order of their first frame, as splice_frames orders its
 * records).  From the first frame that is Python's (a command,
 * another stream, beyond a window, a malformed frame) the rest is Python's:
 * returns 1 with the cursor at what was consumed (start == end) and *left
 * bytes after it, as if just read.  Else 0: a partial frame (or nothing) waits
 * for the next read. */
static int consume(rmux_plane *plane, rmux_rx *rx, uint64_t got, rmux_event *events,
                   size_t *nevents, size_t room, uint64_t *left_out) {
    rmux_engine *engine = plane->engine;
    uint64_t end = rx->end + got;
    size_t scanned_to = (size_t)rx->start;
    rmux_status error;
    size_t max_frames = room > 8 ? (room - 8) / 2 : 0; /* each delivery: ACK and FAILED */
    if (max_frames > INPUT_FRAMES) {
        max_frames = INPUT_FRAMES;
    }
    size_t count = max_frames == 0 ? 0
                 : rmux_scan_frames(rx->buffer, (size_t)rx->buffer_length, (size_t)rx->start,
                                    (size_t)end, rx->max_data, rx->max_command, max_frames,
                                    engine->frames, &scanned_to, &error);
    int rest_is_python = max_frames == 0 || error != RMUX_OK || count == max_frames;
    size_t nreceivers = 0;
    uint64_t consumed = rx->start;
    size_t i = 0;
    for (; i < count; i++) {
        const rmux_frame *frame = &engine->frames[i];
        if (frame->kind == RMUX_KIND_COMMAND &&
            take_command(plane, rx->buffer + frame->offset, frame->length, frame->stream_id,
                         events, nevents)) {
            consumed = (uint64_t)frame->offset + frame->length;
            continue;
        }
        plane_stream *stream = deliverable(plane, frame);
        if (stream == NULL) {
            rest_is_python = 1;
            break;
        }
        rmux_flow *flow = &stream->flow;
        flow->recv_unacked += frame->length;
        flow->recv_undelivered += frame->length;
        flow->recv_total += frame->length;
        if (frame->length) { /* chain it to the stream's frames of this read */
            engine->next_frame[i] = 0;
            if (stream->gather_tail == 0) {
                engine->receivers[nreceivers++] = stream;
                stream->gather_head = (uint32_t)i + 1;
            } else {
                engine->next_frame[stream->gather_tail - 1] = (uint32_t)i + 1;
            }
            stream->gather_tail = (uint32_t)i + 1;
        }
        consumed = (uint64_t)frame->offset + frame->length;
    }
    for (size_t r = 0; r < nreceivers; r++) {
        plane_stream *stream = engine->receivers[r];
        struct iovec parts[DELIVERY_PARTS];
        int nparts = 0;
        uint32_t length = 0;
        for (uint32_t at = stream->gather_head; at != 0; at = engine->next_frame[at - 1]) {
            const rmux_frame *frame = &engine->frames[at - 1];
            if (nparts == DELIVERY_PARTS) {
                write_parts(stream, parts, nparts, length, events, nevents);
                nparts = 0;
                length = 0;
            }
            parts[nparts].iov_base = rx->buffer + frame->offset;
            parts[nparts].iov_len = frame->length;
            nparts++;
            length += frame->length;
        }
        write_parts(stream, parts, nparts, length, events, nevents);
        stream->gather_head = stream->gather_tail = 0;
    }
    if (!rest_is_python) {
        consumed = scanned_to; /* every complete frame was delivered */
    }
    rx->start = rx->end = consumed;
    uint64_t left = end - consumed;
    *left_out = left;
    if (rest_is_python) {
        return 1;
    }
    if (left == 0) {
        rx->start = rx->end = 0; /* what Python's writable() does with an empty buffer */
    } else {
        rx->end = end; /* a partial frame waits for the next read */
    }
    return 0;
}

size_t rmux_plane_input(rmux_plane *plane, rmux_rx *rx, uint64_t count, uint64_t *left,
                        rmux_event *events, size_t max_events) {
    size_t nevents = 0;
    if (rx->buffer == NULL || rx->start > rx->end || count > rx->buffer_length - rx->end) {
        *left = count; /* not a read this plane can account: all of it is Python's */
        return 0;
    }
    rx->filled = count >= rx->offered;
    if (!consume(plane, rx, count, events, &nevents, max_events, left)) {
        *left = 0; /* nothing for Python: all delivered, or a partial frame waits */
    }
    return nevents;
}

/* Events send_output may write for one plane. */
#define EVENTS_PER_SEND (FINS_PER_SEND + 3)

/* Fill the output FIFO and send it on the channel's socket, as Python's flush
 * does (rmux_tx_fill, then one send per fill) until it is empty or the socket
 * is full.  Writes at most EVENTS_PER_SEND events. */
/* What a fill or gather of the send rings returned: FIN_SENT for each stream
 * whose FIN it took; 0 when it ran out of memory (OUTPUT: Python's flush tries
 * again and says so). */
static int took_fins(rmux_plane *plane, const uint32_t *fins, int64_t nfins, rmux_event *events,
                     size_t *nevents) {
    if (nfins < 0) {
        emit_plane(events, nevents, RMUX_EVENT_OUTPUT, plane, 0, 0);
        return 0;
    }
    for (int64_t i = 0; i < nfins; i++) {
        emit_plane(events, nevents, RMUX_EVENT_FIN_SENT, plane, fins[i], 0);
    }
    return 1;
}

/* SENT once as many sends as Python's barrier count were made, or the send rings
 * hold the outbound cap.  bytes: what the sends carried; sends of only the plane's
 * own answers to PINGs (answer_ping) are not counted. */
static void report_sends(rmux_plane *plane, uint32_t sends, uint64_t bytes, rmux_event *events,
                         size_t *nevents) {
    if (bytes <= plane->answers_queued && !rmux_tx_has_data(plane->tx)) {
        sends = 0;
    }
    plane->answers_queued = 0;
    if (sends) {
        plane->sends_unreported += sends;
        if (plane->sends_unreported >= plane->report_sends_at ||
            (plane->report_held_at && rmux_tx_held_total(plane->tx) >= plane->report_held_at)) {
            uint64_t count = plane->sends_unreported;
            plane->sends_unreported = 0;
            emit_plane(events, nevents, RMUX_EVENT_SENT, plane, 0,
                       count > UINT32_MAX ? UINT32_MAX : (uint32_t)count);
        }
    }
}

/* send_output on a TLS channel: the ciphertext OpenSSL holds goes first; then
 * the frames are filled into the FIFO (one copy, so each batch is whole
 * records rather than a record per header) and encrypted into the output BIO,
 * one batch at a time: the BIO never holds more than one batch the socket
 * refused. */
static void send_output_tls(rmux_plane *plane, rmux_event *events, size_t *nevents) {
    rmux_tx *tx = plane->tx;
    uint32_t fins[FINS_PER_SEND];
    uint32_t sends = 0;
    uint64_t bytes = 0;
    size_t fin_room = FINS_PER_SEND;
    for (;;) {
        int64_t sent = rmux_tls_flush(plane->tls_out, plane->channel_fd);
        if (sent < 0) {
            plane->send_ok = 0;
            emit_plane(events, nevents, RMUX_EVENT_CHANNEL_FAILED, plane, 0, (uint32_t)-sent);
            break;
        }
        if (rmux_tls_unsent(plane->tls_out) > 0) {
            plane->send_ok = 0;
            emit_plane(events, nevents, RMUX_EVENT_OUTPUT_LEFT, plane, 0, 0);
            break;
        }
        if (!rmux_tx_has_data(tx)) {
            break;
        }
        if (fin_room == 0) {
            emit_plane(events, nevents, RMUX_EVENT_OUTPUT, plane, 0, 0); /* Python goes on */
            break;
        }
        int64_t nfins = rmux_tx_fill(tx, fins, fin_room);
        if (!took_fins(plane, fins, nfins, events, nevents)) {
            break;
        }
        fin_room -= (size_t)nfins;
        size_t length = 0;
        uint8_t *data = rmux_tx_pending(tx, &length);
        if (length == 0) {
            break;
        }
        uint32_t detail = 0;
        if (rmux_tls_encrypt(plane->tls_out, data, length, &detail) != 0) {
            plane->send_ok = 0;
            if (plane->tls_stop == RMUX_TLS_FAILED && plane->tls_in == plane->tls_out) {
                detail = plane->tls_detail; /* why: a read this pump saw the session fail */
            }
            emit_plane(events, nevents, RMUX_EVENT_CHANNEL_TLS_FAILED, plane, 0, detail);
            break;
        }
        rmux_tx_sent(tx, length);
        sends++;
        bytes += length;
    }
    report_sends(plane, sends, bytes, events, nevents);
}

static void send_output(rmux_plane *plane, rmux_event *events, size_t *nevents) {
    if (plane->tls_out) {
        send_output_tls(plane, events, nevents);
        return;
    }
    rmux_tx *tx = plane->tx;
    uint32_t fins[FINS_PER_SEND];
    uint32_t sends = 0;
    uint64_t bytes = 0;
    size_t fin_room = FINS_PER_SEND;
    rmux_gather *gather = &plane->engine->gather;
    struct iovec parts[RMUX_GATHER_SPANS];
    while (rmux_tx_has_data(tx)) {
        int64_t nfins = rmux_tx_gather(tx, fins, fin_room, gather);
        if (!took_fins(plane, fins, nfins, events, nevents)) {
            break;
        }
        fin_room -= (size_t)nfins;
        size_t length = gather->length;
        if (length == 0) {
            break;
        }
        /* The frames go from the rings themselves; what the socket does not take
         * is copied to the FIFO (rmux_tx_gathered), to go first next time. */
        for (uint32_t i = 0; i < gather->nspans; i++) {
            parts[i].iov_base = (void *)gather->spans[i].base;
            parts[i].iov_len = gather->spans[i].length;
        }
        struct msghdr message;
        memset(&message, 0, sizeof message);
        message.msg_iov = parts;
        message.msg_iovlen = gather->nspans;
        ssize_t sent;
        do {
            sent = sendmsg(plane->channel_fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        int error = sent < 0 ? errno : 0;
        rmux_tx_gathered(tx, gather, sent > 0 ? (size_t)sent : 0);
        if (sent < 0) {
            plane->send_ok = 0;
            if (error == EAGAIN || error == EWOULDBLOCK) {
                emit_plane(events, nevents, RMUX_EVENT_OUTPUT_LEFT, plane, 0, 0);
            } else {
                emit_plane(events, nevents, RMUX_EVENT_CHANNEL_FAILED, plane, 0, (uint32_t)error);
            }
            break;
        }
        sends++;
        bytes += (uint64_t)sent;
        if ((size_t)sent < length) {
            plane->send_ok = 0;
            emit_plane(events, nevents, RMUX_EVENT_OUTPUT_LEFT, plane, 0, 0);
            break;
        }
        if (fin_room == 0 && rmux_tx_has_data(tx)) {
            emit_plane(events, nevents, RMUX_EVENT_OUTPUT, plane, 0, 0); /* Python goes on */
            break;
        }
    }
    report_sends(plane, sends, bytes, events, nevents);
}

/* One round: poll (or wait up to timeout_ms), then one turn for each stream with
 * work.  A signal during a wait ends it with nothing ready (interrupted). */
static size_t pump_round(rmux_engine *engine, rmux_event *events, size_t max_events,
                         int timeout_ms) {
    size_t nevents = 0;
    int ready;
    /* Never 0, which a new plane starts with, so its first read reports OUTPUT. */
    engine->generation = engine->generation + 1 ? engine->generation + 1 : 1;
    for (;;) {
        ready = epoll_wait(engine->epfd, engine->ready, EPOLL_BATCH, timeout_ms);
        if (ready >= 0 || errno != EINTR) {
            break;
        }
        if (timeout_ms != 0) {
            engine->interrupted = 1;
            ready = 0;
            break;
        }
    }
    if (ready < 0) {
        engine->wait_error = errno; /* the set itself is unusable: the wait reports it */
        ready = 0;
    }
    for (int i = 0; i < ready; i++) {
        if (engine->ready[i].data.ptr == (void *)engine) {
            engine->outer_ready = 1; /* the selector's set: Python's descriptors */
            continue;
        }
        plane_stream *stream = engine->ready[i].data.ptr;
        uint32_t mask = engine->ready[i].events;
        if (mask & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            stream->can_read = 1;
        }
        if (mask & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            stream->hung_up = 1;
        }
        if (mask & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            stream->can_write = 1;
        }
        if (has_work(stream)) {
            work_push(engine, stream);
        }
    }
    /* Each stream on the list gets one turn; those with more to do go round again
     * at the next pump, behind the others. */
    size_t turns = engine->backlog;
    /* Room is kept for the sends at the end: a plane taken for one never has to
     * be dropped for want of event slots. */
    engine->nsending = 0;
    engine->sending_cap = SENDING_PLANES;
    while (engine->sending_cap > 0 &&
           max_events < EVENTS_PER_STREAM + (size_t)engine->sending_cap * EVENTS_PER_SEND) {
        engine->sending_cap /= 2;
    }
    while (turns-- > 0 && engine->work_head != NULL &&
           max_events - nevents >= EVENTS_PER_STREAM + (size_t)engine->sending_cap * EVENTS_PER_SEND) {
        plane_stream *stream = engine->work_head;
        work_unlink(engine, stream);
        if (stream->is_channel) {
            size_t room = max_events - nevents - (size_t)engine->sending_cap * EVENTS_PER_SEND;
            read_channel(stream, events, &nevents, room);
            if (has_work(stream)) {
                work_push(engine, stream);
            }
            continue;
        }
        write_side(stream, events, &nevents);
        if (!stream->failed) {
            read_side(stream, events, &nevents);
        }
        if (has_work(stream)) {
            work_push(engine, stream);
        }
    }
    for (uint32_t i = 0; i < engine->nsending; i++) {
        send_output(engine->sending[i], events, &nevents);
    }
    engine->nsending = 0;
    return nevents;
}

/* Every round polls the epoll set again, so a stream that became ready meanwhile
 * gets its turn in order, and the call returns at the first event for Python. */
size_t rmux_engine_pump(rmux_engine *engine, rmux_event *events, size_t max_events) {
    size_t nevents = 0;
    engine->pumping = 1;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        nevents = pump_round(engine, events, max_events, 0);
        if (nevents != 0 || engine->work_head == NULL) {
            break;
        }
    }
    engine->pumping = 0;
    return nevents;
}

int rmux_engine_watch_outer(rmux_engine *engine, int fd, int watch) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.ptr = engine; /* no stream has this address */
    int op = watch ? EPOLL_CTL_ADD : EPOLL_CTL_DEL;
    return epoll_ctl(engine->epfd, op, fd, &event) == 0 ? RMUX_PLANE_OK : RMUX_PLANE_SYSTEM;
}

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* time.monotonic's clock on Linux */
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

size_t rmux_engine_wait(rmux_engine *engine, int timeout_ms, rmux_event *events,
                        size_t max_events, int *outer_ready) {
    if (timeout_ms == 0) {
        *outer_ready = 1; /* a pump's poll does not look at the selector: Python does */
        return rmux_engine_pump(engine, events, max_events);
    }
    int64_t deadline = timeout_ms > 0 ? now_ns() + (int64_t)timeout_ms * 1000000 : 0;
    size_t nevents = 0;
    engine->pumping = 1;
    engine->outer_ready = 0;
    engine->interrupted = 0;
    engine->wait_error = 0;
    for (;;) {
        /* Streams with work left go on at once; else the wait is the reactor's. */
        int wait = timeout_ms;
        if (engine->work_head != NULL) {
            wait = 0;
        } else if (timeout_ms > 0) {
            int64_t left = deadline - now_ns(); /* rounded up: never back before the timer */
            wait = left > 0 ? (int)((left + 999999) / 1000000) : 0;
        }
        nevents = pump_round(engine, events, max_events, wait);
        if (nevents != 0 || engine->outer_ready || engine->interrupted || engine->wait_error) {
            break;
        }
        if (timeout_ms > 0 && now_ns() >= deadline) {
            break; /* a timer is due (streams with work go on after it) */
        }
    }
    engine->pumping = 0;
    *outer_ready = engine->wait_error ? -engine->wait_error : engine->outer_ready;
    return nevents;
}

/* write_parts for one contiguous run of bytes. */
static void write_received(plane_stream *stream, const uint8_t *data, uint32_t length,
                           rmux_event *events, size_t *nevents) {
    struct iovec part;
    part.iov_base = (void *)data;
    part.iov_len = length;
    write_parts(stream, &part, 1, length, events, nevents);
}

size_t rmux_plane_deliver(rmux_plane *plane, const uint8_t *staging, size_t staging_length,
                          const rmux_record *records, size_t count, size_t *index,
                          rmux_event *events, size_t max_events) {
    size_t nevents = 0;
    size_t i = *index;
    for (; i < count && max_events - nevents >= 2; i++) {
        const rmux_record *record = &records[i];
        if (record->kind != RMUX_RECORD_DATA ||
            (uint64_t)record->offset + record->length > staging_length) {
            break;
        }
        int32_t handle = lookup(plane, record->stream_id);
        plane_stream *stream = handle < 0 ? NULL : plane->streams[handle];
        if (stream == NULL || !stream->receiving || stream->fd < 0) {
            break;
        }
        rmux_flow *flow = &stream->flow;
        uint32_t length = record->length;
        if ((uint64_t)flow->recv_unacked + length > flow->recv_size) {
            break; /* beyond the window: Python says so, in its words */
        }
        flow->recv_unacked += length;
        flow->recv_undelivered += length;
        flow->recv_total += length;
        write_received(stream, staging + record->offset, length, events, &nevents);
    }
    *index = i;
    return nevents;
}

size_t rmux_plane_write(rmux_plane *plane, int32_t handle, const uint8_t *data, size_t length,
                        rmux_event *events, size_t max_events) {
    plane_stream *stream = get(plane, handle);
    size_t nevents = 0;
    if (stream == NULL || stream->fd < 0 || max_events < 2 ||
        length > stream->flow.recv_undelivered) {
        return 0;
    }
    write_received(stream, data, (uint32_t)length, events, &nevents);
    return nevents;
}

#else /* no epoll: Python keeps its own data path */

rmux_engine *rmux_engine_new(void) { return NULL; }
void rmux_engine_free(rmux_engine *engine) { (void)engine; }
int rmux_engine_fd(const rmux_engine *engine) { (void)engine; return -1; }
size_t rmux_engine_backlog(const rmux_engine *engine) { (void)engine; return 0; }
size_t rmux_engine_pump(rmux_engine *engine, rmux_event *events, size_t max_events) {
    (void)engine; (void)events; (void)max_events; return 0;
}
int rmux_engine_watch_outer(rmux_engine *engine, int fd, int watch) {
    (void)engine; (void)fd; (void)watch; return RMUX_PLANE_INVALID;
}
size_t rmux_engine_wait(rmux_engine *engine, int timeout_ms, rmux_event *events,
                        size_t max_events, int *outer_ready) {
    (void)engine; (void)timeout_ms; (void)events; (void)max_events;
    *outer_ready = 1;
    return 0;
}
rmux_plane *rmux_plane_new(rmux_engine *engine, rmux_tx *tx, uint32_t tag) {
    (void)engine; (void)tx; (void)tag; return NULL;
}
void rmux_plane_free(rmux_plane *plane) { (void)plane; }
void rmux_plane_set_paused(rmux_plane *plane, int paused) { (void)plane; (void)paused; }
void rmux_plane_set_channel(rmux_plane *plane, int fd, uintptr_t tls) {
    (void)plane;
    (void)fd;
    (void)tls;
}
void rmux_plane_set_send_ok(rmux_plane *plane, int ok) { (void)plane; (void)ok; }
void rmux_plane_set_send_reports(rmux_plane *plane, uint64_t every, uint64_t held) {
    (void)plane; (void)every; (void)held;
}
uint64_t rmux_plane_take_sends(rmux_plane *plane) { (void)plane; return 0; }
uint64_t rmux_plane_take_commands(rmux_plane *plane) { (void)plane; return 0; }
uint64_t rmux_plane_take_pongs(rmux_plane *plane, uint32_t *token, double *at) {
    (void)plane; *token = 0; *at = 0; return 0;
}
size_t rmux_plane_take_acks(rmux_plane *plane, uint32_t *stream_ids, uint32_t *counts,
                            size_t max) {
    (void)plane; (void)stream_ids; (void)counts; (void)max; return 0;
}
void rmux_plane_set_max_window(rmux_plane *plane, uint32_t max_window) {
    (void)plane; (void)max_window;
}
void rmux_plane_set_growth_left(rmux_plane *plane, uint64_t growth_left) {
    (void)plane; (void)growth_left;
}
rmux_plane_status rmux_plane_set_input(rmux_plane *plane, rmux_rx *rx, int fd, uintptr_t tls) {
    (void)plane; (void)rx; (void)fd; (void)tls; return RMUX_PLANE_INVALID;
}
void rmux_plane_wake_input(rmux_plane *plane) { (void)plane; }
size_t rmux_plane_input(rmux_plane *plane, rmux_rx *rx, uint64_t count, uint64_t *left,
                        rmux_event *events, size_t max_events) {
    (void)plane; (void)rx; (void)events; (void)max_events;
    *left = count;
    return 0;
}
uint64_t rmux_plane_channel_reads(const rmux_plane *plane) { (void)plane; return 0; }
double rmux_plane_last_read_at(const rmux_plane *plane) { (void)plane; return 0.0; }
void rmux_plane_set_inbound_limit(rmux_plane *plane, uint64_t limit) { (void)plane; (void)limit; }
void rmux_plane_set_inbound_paused(rmux_plane *plane, int paused) { (void)plane; (void)paused; }
uint64_t rmux_plane_inbound_held(const rmux_plane *plane) { (void)plane; return 0; }
uint64_t rmux_plane_release_idle_inbound(rmux_plane *plane) { (void)plane; return 0; }
int32_t rmux_plane_add(rmux_plane *plane, uint32_t stream_id, uint32_t send_window,
                       uint32_t recv_window) {
    (void)plane; (void)stream_id; (void)send_window; (void)recv_window;
    return RMUX_PLANE_INVALID;
}
rmux_flow *rmux_plane_flow(rmux_plane *plane, int32_t handle) { (void)plane; (void)handle; return NULL; }
rmux_plane_status rmux_plane_attach(rmux_plane *plane, int32_t handle, int fd, int32_t tx_slot) {
    (void)plane; (void)handle; (void)fd; (void)tx_slot; return RMUX_PLANE_INVALID;
}
rmux_plane_status rmux_plane_detach(rmux_plane *plane, int32_t handle) {
    (void)plane; (void)handle; return RMUX_PLANE_INVALID;
}
rmux_plane_status rmux_plane_remove(rmux_plane *plane, int32_t handle) {
    (void)plane; (void)handle; return RMUX_PLANE_INVALID;
}
rmux_plane_status rmux_plane_set_receiving(rmux_plane *plane, int32_t handle, int receiving) {
    (void)plane; (void)handle; (void)receiving; return RMUX_PLANE_INVALID;
}
rmux_plane_status rmux_plane_set_sending(rmux_plane *plane, int32_t handle, int sending) {
    (void)plane; (void)handle; (void)sending; return RMUX_PLANE_INVALID;
}
rmux_plane_status rmux_plane_wake(rmux_plane *plane, int32_t handle) {
    (void)plane; (void)handle; return RMUX_PLANE_INVALID;
}
int64_t rmux_plane_inbound_buffered(rmux_plane *plane, int32_t handle) {
    (void)plane; (void)handle; return RMUX_PLANE_INVALID;
}
int rmux_plane_peer_finished(rmux_plane *plane, int32_t handle) {
    (void)plane; (void)handle; return RMUX_PLANE_INVALID;
}
size_t rmux_plane_write(rmux_plane *plane, int32_t handle, const uint8_t *data, size_t length,
                        rmux_event *events, size_t max_events) {
    (void)plane; (void)handle; (void)data; (void)length; (void)events; (void)max_events;
    return 0;
}
size_t rmux_plane_deliver(rmux_plane *plane, const uint8_t *staging, size_t staging_length,
                          const rmux_record *records, size_t count, size_t *index,
                          rmux_event *events, size_t max_events) {
    (void)plane; (void)staging; (void)staging_length; (void)records; (void)count;
    (void)index; (void)events; (void)max_events;
    return 0;
}

#endif
