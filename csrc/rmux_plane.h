/*
 * reactor-mux data plane: the stream sockets of every channel, moved in C.
 *
 * One engine per reactor holds an epoll set (its descriptor sits in Python's
 * selectors loop like any socket) with the stream sockets of every channel.
 * One plane per channel holds its streams: the socket, the counters the
 * protocol's windows are made of, and an inbound ring for what the socket did
 * not take yet.  rmux_engine_pump reads every ready stream into its send ring
 * (rmux_codec.h's rmux_tx) within its window and writes every inbound ring out;
 * rmux_plane_deliver writes the decoder's data records to their sockets.  What
 * is not bytes (EOF, errors, a full window, an ACK that is due, a FIN passed
 * on) comes back as events for Python.  docs/design-dataplane.md has the why.
 *
 * Linux only (epoll); elsewhere rmux_engine_new returns NULL and Python keeps
 * its own data path.
 */
#ifndef RMUX_PLANE_H
#define RMUX_PLANE_H

#include "rmux_codec.h"

/* cdef-begin */

/* Most bytes read from one stream socket per pump: one bulk stream cannot keep
 * the others waiting for longer than this takes. */
#define RMUX_PLANE_READ_CHUNK 262144
/* Our ACKs a plane sends itself before the session logs them (then ACK events). */
#define RMUX_PLANE_ACKS 256
/* protocol/limits.py's MIN_WINDOW and MAX_WINDOW: what BLOCKED and WINDOW may say. */
#define RMUX_PLANE_MIN_WINDOW 1024
#define RMUX_PLANE_MAX_WINDOW 16777216
/* protocol/resumelog.py's BARRIER_TOKEN: a PONG with it answers a barrier (Python's). */
#define RMUX_PLANE_BARRIER_TOKEN 2147483648

typedef enum rmux_event_kind {
    RMUX_EVENT_READ_EOF = 1,     /* the socket sent EOF: send FIN after its data */
    RMUX_EVENT_FAILED = 2,       /* value: the errno of a failed read or write */
    RMUX_EVENT_BLOCKED = 3,      /* value: the send window, now full (report once per ACK) */
    RMUX_EVENT_ACK = 4,          /* value: delivered bytes the peer may now be told of */
    RMUX_EVENT_WRITE_CLOSED = 5, /* the peer's FIN was passed on (SHUT_WR) after its data */
    RMUX_EVENT_OUTPUT = 6,       /* the plane's send rings took bytes: fill and send */
    /* Only where the plane sends the channel's output itself (rmux_plane_set_channel): */
    RMUX_EVENT_SENT = 7,         /* value: sends made to the channel socket since the last SENT */
    RMUX_EVENT_FIN_SENT = 8,     /* the stream's FIN went out right after its last byte */
    RMUX_EVENT_OUTPUT_LEFT = 9,  /* the socket took less than all: wait until it is writable */
    RMUX_EVENT_CHANNEL_FAILED = 10, /* value: the errno of a failed send on the channel */
    /* Only where the plane reads the channel itself (rmux_plane_set_input): */
    RMUX_EVENT_CHANNEL_INPUT = 11,    /* value: bytes read after rx->end for Python to handle */
    RMUX_EVENT_CHANNEL_READABLE = 12, /* the receive buffer must grow or move: Python reads */
    RMUX_EVENT_CHANNEL_EOF = 13,      /* the peer closed the channel */
    RMUX_EVENT_CHANNEL_READ_FAILED = 14, /* value: the errno of a failed read */
    /* Only on a TLS channel (a tls session given with the socket): */
    RMUX_EVENT_CHANNEL_TLS_FAILED = 15, /* value: OpenSSL's error code (rmux_tls_reason) */
    /* While the inbound cap pauses the channel's reads (rmux_plane_set_inbound_paused): */
    RMUX_EVENT_RING_FREED = 16 /* a drained ring gave its storage back: the cap may lift */
} rmux_event_kind;

/* The channel's receive buffer and cursor, shared with Python's decoder
 * (codec/_c.py keeps its cursor here, so both always see one state).  Python
 * manages the buffers (growth, compaction); the plane only reads into the free
 * tail and consumes whole frames. */
typedef struct rmux_rx {
    uint8_t *buffer;
    uint64_t buffer_length;
    uint8_t *staging;
    uint64_t staging_length;
    uint64_t start;    /* the first byte not yet handled */
    uint64_t end;      /* the end of what was read */
    uint64_t offered;  /* the free tail the last read was offered */
    uint64_t capacity; /* how large the buffers may grow */
    uint32_t max_data;
    uint32_t max_command;
    uint32_t filled;   /* the last read took all it was offered */
} rmux_rx;

/* What the pump and delivery report: four uint32s, unpacked in one call. */
typedef struct rmux_event {
    uint32_t kind; /* rmux_event_kind */
    uint32_t plane;
    uint32_t stream_id;
    uint32_t value;
} rmux_event;

/* One stream's flow-control counters and totals.  Python's SendWindow and
 * ReceiveWindow read and write these through cffi, so the rules stay in one
 * place (reactor_mux/protocol/windows.py) and the engine only applies them to
 * bytes: a read consumes send window, a delivery counts as delivered, and an
 * ACK is due once a quarter window (the threshold) was delivered. */
typedef struct rmux_flow {
    uint64_t recv_total; /* data bytes from the peer, taken off the wire (resume's totals) */
    uint64_t send_total; /* bytes put in the send ring, read here or added by Python */
    uint64_t bytes_up;   /* bytes read from the socket */
    uint64_t bytes_down; /* bytes written to the socket */
    uint32_t send_size;
    uint32_t send_unacked;
    uint32_t recv_size;
    uint32_t recv_unacked;
    uint32_t recv_undelivered;
    uint32_t recv_delivered_unacked;
    uint32_t recv_threshold;
    uint32_t blocked_reported; /* BLOCKED sent; not again before an ACK or WINDOW */
    uint64_t acked;    /* with resume on: the sum of the peer's ACKs (Stream.acked) */
    uint64_t released; /* with resume on: bytes freed from the send ring (Stream.released) */
} rmux_flow;

typedef enum rmux_plane_status {
    RMUX_PLANE_OK = 0,
    RMUX_PLANE_INVALID = -1,   /* a handle not in use, or a call the state refuses */
    RMUX_PLANE_NO_MEMORY = -2, /* an allocation failed; nothing changed */
    RMUX_PLANE_SYSTEM = -3     /* epoll refused (errno says why); nothing changed */
} rmux_plane_status;

typedef struct rmux_engine rmux_engine;
typedef struct rmux_plane rmux_plane;

/* NULL where there is no epoll, or when epoll_create1 fails (errno). */
rmux_engine *rmux_engine_new(void);
/* Every plane must be freed first. */
void rmux_engine_free(rmux_engine *engine);
/* The descriptor to watch for reading; ready when a pump has work. */
int rmux_engine_fd(const rmux_engine *engine);
/* Streams that may still have work the last pump left for the next (more to
 * read than a chunk, or an event array that filled up). */
size_t rmux_engine_backlog(const rmux_engine *engine);

/* Read and write every ready stream, reporting up to max_events events.  A
 * stream is read at most RMUX_PLANE_READ_CHUNK bytes per round; a call makes a
 * few rounds while streams have work and no event arose.  Returns the number of
 * events. */
size_t rmux_engine_pump(rmux_engine *engine, rmux_event *events, size_t max_events);

/* The reactor's wait, made here instead of in its selector: fd (the selector's
 * own epoll set) joins the engine's set (watch 1) or leaves it (watch 0); the
 * engine's descriptor must not be watched by that selector meanwhile (epoll
 * refuses the loop).  RMUX_PLANE_SYSTEM if epoll refused (errno). */
int rmux_engine_watch_outer(rmux_engine *engine, int fd, int watch);
/* Wait up to timeout_ms (-1: no limit) and pump, round after round, until there
 * are events for Python, the outer descriptor is ready (*outer_ready = 1), a
 * signal interrupted the wait, or the time is up.  Bytes that only the plane has
 * to move never return to Python.  With timeout_ms 0 it is rmux_engine_pump.
 * If epoll_wait itself fails (not EINTR), *outer_ready is minus its errno.  A
 * signal that arrives between two of its epoll_waits ends the wait only through
 * a descriptor of the outer set: Python's wakeup fd (signal.set_wakeup_fd). */
size_t rmux_engine_wait(rmux_engine *engine, int timeout_ms, rmux_event *events,
                        size_t max_events, int *outer_ready);

/* tx is the channel's send queue (it outlives the plane); tag names the plane
 * in events. */
rmux_plane *rmux_plane_new(rmux_engine *engine, rmux_tx *tx, uint32_t tag);
/* Detaches and frees every stream (closes no socket: Python owns them). */
void rmux_plane_free(rmux_plane *plane);
/* Local reads stop while paused (the channel's outbound cap). */
void rmux_plane_set_paused(rmux_plane *plane, int paused);
/* The channel's socket (-1: none), and its TLS session (rmux_tls.h; 0: plain).
 * While one is set and sending is allowed, a pump that read into this plane's
 * send rings also fills the output FIFO and sends it (through the TLS session:
 * encrypted into its output BIO, which goes first), reporting SENT, FIN_SENT,
 * OUTPUT_LEFT, CHANNEL_FAILED or CHANNEL_TLS_FAILED, and OUTPUT only when it did
 * not send.  Sending stops (until allowed again) when the socket fills or fails. */
void rmux_plane_set_channel(rmux_plane *plane, int fd, uintptr_t tls);
/* Read the channel's socket in the pump (fd -1: Python reads it), decrypting
 * through its TLS session where tls is one (rmux_tls.h; 0: plain).
 * A read whose complete frames are all data the plane can deliver is handled
 * here; any other (a command, a partial read Python must see, a malformed
 * frame) is left after rx->end and reported as CHANNEL_INPUT; a buffer that
 * must grow or move first is CHANNEL_READABLE.  After either, the plane waits
 * for rmux_plane_wake_input.  Returns RMUX_PLANE_SYSTEM if epoll refused. */
rmux_plane_status rmux_plane_set_input(rmux_plane *plane, rmux_rx *rx, int fd, uintptr_t tls);
/* Python read count bytes of the channel after rx->end itself (a TLS channel's
 * plaintext, a read the plane handed back): deliver the leading data frames as
 * the pump does.  *left is 0 when nothing is Python's (all delivered, or a
 * partial frame waits: rx->end covers it); else the cursor is at what was
 * consumed and *left bytes after rx->end are Python's read.  Returns the events
 * written (ACK, FAILED), at most max_events. */
size_t rmux_plane_input(rmux_plane *plane, rmux_rx *rx, uint64_t count, uint64_t *left,
                        rmux_event *events, size_t max_events);
/* Python handled the channel's input: read the socket again at the next pump. */
void rmux_plane_wake_input(rmux_plane *plane);
/* Reads the plane made from the channel (the keepalive counts them as traffic). */
uint64_t rmux_plane_channel_reads(const rmux_plane *plane);
/* When the plane last read the channel (CLOCK_MONOTONIC_COARSE seconds, within a
 * clock tick of time.monotonic; 0.0: never): the keepalive's evidence. */
double rmux_plane_last_read_at(const rmux_plane *plane);
/* The inbound cap: while the inbound rings hold this much, the plane leaves the
 * channel's reads to Python (which pauses them). */
void rmux_plane_set_inbound_limit(rmux_plane *plane, uint64_t limit);
/* When the pump reports its own sends (SENT): once every sends are unreported,
 * or once the send rings hold held bytes (0: never for that reason).  Until
 * called, every pump that sent reports it. */
void rmux_plane_set_send_reports(rmux_plane *plane, uint64_t every, uint64_t held);
/* The sends not reported yet (and now counted as reported). */
uint64_t rmux_plane_take_sends(rmux_plane *plane);
/* The peer's ACK and BLOCKED commands the plane took itself since the last
 * call (logged commands, which the resume table counts: Session adds them). */
uint64_t rmux_plane_take_commands(rmux_plane *plane);
/* The peer's answers to our keepalive PINGs ("PONG n", n below the barrier bit)
 * the plane took since the last call, and the last one's token and arrival
 * (CLOCK_MONOTONIC seconds, time.monotonic's clock): an idle channel's keepalive
 * costs Python no read.  Not logged commands (the resume count stays). */
uint64_t rmux_plane_take_pongs(rmux_plane *plane, uint32_t *token, double *at);
/* Our ACKs the plane sent itself (in a pump, while it sends its own output and
 * Python has nothing queued), oldest first: up to max of them, taken.  They are
 * logged commands; the session logs them before anything it logs itself. */
size_t rmux_plane_take_acks(rmux_plane *plane, uint32_t *stream_ids, uint32_t *counts,
                            size_t max);
/* The largest receive window this side grows a stream's to (--max-window): a
 * BLOCKED at it asks for nothing the session would grant, so the plane takes it. */
void rmux_plane_set_max_window(rmux_plane *plane, uint32_t max_window);
/* The window growth the session may still grant over all the channel's streams
 * (its budget less what it granted): a BLOCKED whose doubling would pass it asks
 * for nothing either.  Until set, UINT64_MAX (every such BLOCKED is Python's). */
void rmux_plane_set_growth_left(rmux_plane *plane, uint64_t growth_left);
/* Python has output of its own to go first (commands it queued, a resume
 * exchange): the plane must not send until this is set again. */
void rmux_plane_set_send_ok(rmux_plane *plane, int ok);
/* Inbound rings give their storage back as soon as they empty (inbound cap). */
void rmux_plane_set_inbound_paused(rmux_plane *plane, int paused);
/* Storage every inbound ring of the plane holds. */
uint64_t rmux_plane_inbound_held(const rmux_plane *plane);
/* Give back the storage of every empty inbound ring; returns the bytes freed. */
uint64_t rmux_plane_release_idle_inbound(rmux_plane *plane);

/* A new stream: returns a handle (>= 0) or RMUX_PLANE_NO_MEMORY / INVALID (the
 * id is in use).  Its flow starts with the given windows. */
int32_t rmux_plane_add(rmux_plane *plane, uint32_t stream_id, uint32_t send_window,
                       uint32_t recv_window);
/* The stream's counters; the pointer stays valid until rmux_plane_remove. */
rmux_flow *rmux_plane_flow(rmux_plane *plane, int32_t handle);
/* Register the socket (nonblocking, owned by the caller) and the send ring's slot. */
rmux_plane_status rmux_plane_attach(rmux_plane *plane, int32_t handle, int fd, int32_t tx_slot);
/* Unregister the socket (before the caller closes it); the counters stay. */
rmux_plane_status rmux_plane_detach(rmux_plane *plane, int32_t handle);
/* Forget the stream. */
rmux_plane_status rmux_plane_remove(rmux_plane *plane, int32_t handle);
/* Whether the peer may send (receiving) and we may read the socket (sending). */
rmux_plane_status rmux_plane_set_receiving(rmux_plane *plane, int32_t handle, int receiving);
rmux_plane_status rmux_plane_set_sending(rmux_plane *plane, int32_t handle, int sending);
/* The send window opened (an ACK or WINDOW): read again if the socket has bytes. */
rmux_plane_status rmux_plane_wake(rmux_plane *plane, int32_t handle);
/* Bytes waiting in the stream's inbound ring, or RMUX_PLANE_INVALID. */
int64_t rmux_plane_inbound_buffered(rmux_plane *plane, int32_t handle);
/* The peer's FIN arrived: pass EOF on once the inbound ring is empty.  Returns 1
 * if that happened now, 0 if WRITE_CLOSED will report it, or a negative status. */
int rmux_plane_peer_finished(rmux_plane *plane, int32_t handle);

/* Deliver the data records of records[*index, count) (rmux_decode's output, their
 * bytes in staging) to their sockets, in order, until one the plane cannot take:
 * a command, data for a stream it does not hold or that is not receiving, or
 * data beyond the stream's window.  Advances *index to that record (count if
 * none); Python handles it and calls again from the next.  Writes what
 * the socket refuses to the stream's inbound ring.  Returns the number of
 * events written (ACK, FAILED), at most max_events: *index stops early when
 * fewer than two event slots are left. */
size_t rmux_plane_deliver(rmux_plane *plane, const uint8_t *staging, size_t staging_length,
                          const rmux_record *records, size_t count, size_t *index,
                          rmux_event *events, size_t max_events);

/* Write bytes the caller already counted as received (recv_unacked and
 * recv_undelivered: Python's path for a record rmux_plane_deliver left to it)
 * to the stream's socket, the rest to its inbound ring.  Returns the events (at
 * most two; max_events must allow them); nothing happens for a bad handle, a
 * detached stream or more bytes than are undelivered. */
size_t rmux_plane_write(rmux_plane *plane, int32_t handle, const uint8_t *data, size_t length,
                        rmux_event *events, size_t max_events);

/* cdef-end */

#endif
