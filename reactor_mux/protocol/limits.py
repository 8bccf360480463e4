"""Named protocol limits and defaults, in one place so docs and tests cite them."""

PROTOCOL_VERSION = 1

MAX_DATA_BODY = 64 * 1024
"""Largest data frame body a receiver accepts; a longer ``len`` is a protocol error."""

MAX_COMMAND_BODY = 1024
"""Largest command frame body a receiver accepts."""

DATA_FRAME_SIZE = 64 * 1024
"""Largest data body we send: bounds how long a small frame waits behind a bulk stream."""

DEFAULT_WINDOW = 256 * 1024
"""Per-stream flow-control window (the high watermark) announced in HELLO."""

DEFAULT_MAX_WINDOW = 4 * 1024 * 1024
"""How far a stream's window may grow (WINDOW) when its sender reports itself
blocked (BLOCKED) while the local socket takes everything at once: a fast
stream on a long link is not held to DEFAULT_WINDOW per round trip."""

DEFAULT_WINDOW_BUDGET = 4 * 1024 * 1024
"""Bytes of window growth, summed over a channel's streams, a receiver grants:
growth never promises more than this beyond the streams' initial windows.  The
command line sets a quarter of --max-buffer (this, with its default): grown
windows filled by slow readers cannot reach the inbound cap, which would pause
the whole channel."""

MIN_WINDOW = 1024
MAX_WINDOW = 16 * 1024 * 1024
"""A HELLO announcing a window outside [MIN_WINDOW, MAX_WINDOW] is a protocol error:
the peer's window sizes our outbound buffers, so it must be bounded."""

RECEIVE_BUFFER_SIZE = 256 * 1024
"""Bytes read from the channel per ``recv``; must hold a whole maximum frame."""

HANDSHAKE_RECEIVE_SIZE = 4 * 1024
"""What the receive buffers may grow to before the peer has proved itself (said HELLO
without authentication, or AUTH with it): only commands are legal then, so data
frames are refused from their header on, and a stranger costs this much at most."""

OUTPUT_BUDGET = 256 * 1024
"""Data frames are added to the channel's output FIFO only while it holds fewer
unsent bytes than this: it bounds how long a new control frame waits."""

OUTPUT_CAPACITY = OUTPUT_BUDGET + MAX_DATA_BODY + 64
"""Size of the output FIFO: the budget plus one whole data frame and a FIN."""

MAX_DATAGRAM = 65507
"""The largest UDP payload a datagram frame carries (IPv4's own limit); a larger one
is dropped and counted, as is one over the peer's max frame less its association."""

DATAGRAM_HEADER = 4
"""A datagram frame's body starts with its association number (u32, big-endian)."""

DATAGRAM_QUEUE_LIMIT = 256 * 1024
"""Datagrams wait with the control frames, ahead of stream data; one that would make
that queue longer than this is dropped and counted (UDP's own answer to a full
buffer), so datagrams never hold up streams by more than this."""

MAX_CONTROL_BACKLOG = 1024 * 1024
"""Unsent control bytes we tolerate while handling peer frames: a peer that makes
us answer (SYN ERROR, ...) but never reads the replies is cut off here."""

HANDSHAKE_REPLY_BACKLOG = 4 * 1024
"""The same, before the peer has proved itself: a stranger's PINGs cannot make a
connection in its handshake hold more than this of unsent replies."""

MIN_FRAME = 1024
"""Smallest maximum data body a side may announce in HELLO."""

DEFAULT_MAX_STREAMS = 4096
"""Open streams per channel; a SYN beyond it is refused with SYN ERROR."""

DEFAULT_MAX_PENDING_SYNS = 256
"""Streams a peer opened that are still connecting to their target; a SYN beyond
it is refused with SYN ERROR, so a SYN flood costs at most this many sockets."""

MAX_MAPPINGS = 256
"""Default limit on mappings (CONNECT + BIND) per channel; one more is refused."""

MAX_HOST_LENGTH = 255
"""Longest host name accepted in CONNECT/BIND (the DNS limit)."""

MAX_UNIX_PATH = 107
"""Bytes in a Unix socket path (``sun_path`` holds 108 with its NUL), on the command
line and in CONNECT/BIND alike."""

assert RECEIVE_BUFFER_SIZE >= 2 * (9 + MAX_DATA_BODY)
assert DATA_FRAME_SIZE <= MAX_DATA_BODY

MAX_RESUME_LOG = 512 * 1024
"""Bytes of sent commands a resumable session keeps until the peer confirms them
(a barrier PING answered, docs/protocol.md section 9).  Past it the session
gives up being resumable rather than grow: a peer that does not answer PING
cannot make us hold more."""

RESUME_LOG_BARRIER = 256
"""Commands kept unconfirmed before a barrier PING goes out at once."""
