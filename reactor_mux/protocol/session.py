"""One channel's protocol state: its streams, mappings, windows and output.

The session is fed the bytes read from the channel socket and returns
events; the driver calls methods for what happens locally (a connection was
accepted, bytes were read or written, a socket hit EOF) and asks for the
bytes to send.  It never touches a socket.

Output is scheduled here, because scheduling *is* protocol.  The codec's
``OutboundQueue`` holds a ring per stream (the driver ``recv_into``s it
directly) and one output FIFO; each ``output_views`` fills the FIFO with the
queued control frames first (HELLO, replies, ACK, RST, ERROR: an ACK or a SYN
reply never waits behind bulk data still in the rings), then one data frame of
at most ``data_frame_size`` per ready stream per round, round-robin, so a
small interactive frame waits at most one frame per competing stream.  Bytes
already in the FIFO go first, which keeps partly sent frames whole.  A
stream's FIN is appended by the queue right after its last data byte.

Inbound, the codec's ``InboundDecoder`` turns each read into records: one per
command, and one per stream per run of data frames (their payloads spliced
together), so a read of many small frames costs Python one step per stream.

``receive_into`` is the single error boundary: any ``ProtocolError`` raised
while handling peer frames ends the channel, queues an ``ERROR`` frame
telling the peer why, and is reported as one ``ChannelFailed`` event.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from reactor_mux import codec
from reactor_mux.protocol import auth, sniff
from reactor_mux.protocol.commands import (
    Command,
    format_command,
    parse_client_id,
    parse_command,
    parse_decimal,
    parse_host_port,
)
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode, code_of, with_code
from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError
from reactor_mux.protocol.events import (
    ChannelFailed,
    CreditGranted,
    DatagramReceived,
    DataReceived,
    DeliveryFailed,
    Event,
    HelloReceived,
    MappingAccepted,
    MappingCancelled,
    MappingKind,
    MappingRefused,
    MappingRequested,
    PeerBlocked,
    PeerLeaving,
    PongReceived,
    ResumeProved,
    ResumeRequested,
    SessionResumed,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.frames import KIND_COMMAND, KIND_DATAGRAM, encode_frame
from reactor_mux.protocol.handshake import (
    NEEDS_SECRET,
    NEW_SESSION,
    NO_OFFER,
    ROUTE_ID_PREFIX,
    UNASKED_SECRET,
    WRONG_SERVER_PROOF,
    AfterHello,
    Handshake,
    ResumeAsk,
    ResumeOffer,
    parse_hello,
)
from reactor_mux.protocol.limits import (
    DATAGRAM_HEADER,
    DATAGRAM_QUEUE_LIMIT,
    HANDSHAKE_RECEIVE_SIZE,
    HANDSHAKE_REPLY_BACKLOG,
    MAX_COMMAND_BODY,
    MAX_CONTROL_BACKLOG,
    MAX_WINDOW,
    MIN_WINDOW,
    OUTPUT_BUDGET,
    OUTPUT_CAPACITY,
    PROTOCOL_VERSION,
    RECEIVE_BUFFER_SIZE,
)
from reactor_mux.protocol.mappings import (
    ACCEPTANCE,
    BIND,
    BOUND,
    CONNECT,
    DYNAMIC,
    REFUSAL,
    REQUEST_KIND,
    REQUEST_VERB,
    UDP_BIND,
    UDP_CONNECT,
    MappingTable,
    StreamVerdict,
)
from reactor_mux.protocol.replay import UNSEEN, PeerTable, replay_stream, table_rows
from reactor_mux.protocol.resumelog import BARRIER_TOKEN, ResumeLog
from reactor_mux.protocol.socketpath import (
    encode_socket_path,
    is_socket_path_word,
    parse_socket_path,
)
from reactor_mux.protocol.stream import RECEIVING_STATES, SENDING_STATES, Stream
from reactor_mux.protocol.streamstate import StreamInput, StreamState, next_state
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.protocol.verbs import VERBS, ChannelState, Role, Scope, Sender, Verb

MAX_STREAM_ID = 0xFFFFFFFF
MAX_TOTAL = (1 << 64) - 1
"""Byte and command counts of a resume are 64-bit: a long-lived stream passes 4 GiB."""

RESUME_REFUSED = "resume refused"
"""How a server's ERROR starts when it will not resume a session (it ends it)."""

_RETRY_RESUME_AFTER = frozenset((ErrorCode.BUSY, ErrorCode.FULL, ErrorCode.HANDSHAKE_TIMEOUT,
                                 ErrorCode.ELSEWHERE))  # fmt: skip
"""A server's ERRORs that end only a connection, not the session it would resume."""

_S = StreamState
_I = StreamInput

_RECORD_DATA = codec.RECORD_DATA
_RECORD_DATAGRAM = codec.RECORD_DATAGRAM
_ASSOCIATION = struct.Struct(">I")

PEER_SPEAKS_TLS = (
    "peer started a TLS handshake, and this side does not use TLS "
    "(give the server --tls-cert and --tls-key, or drop the client's --tls)"
)

NOT_A_PEER = "not a reactor-mux"
"""How a channel failure caused by a peer speaking another protocol starts."""

AUTH_FAILED = "authentication failed"
"""All a server tells a client whose authentication failed (the details are
for the server's log only)."""

_SENDER = {Role.CLIENT: Sender.CLIENT, Role.SERVER: Sender.SERVER}
"""The sender a role is: receiving a verb that only this role sends is a violation."""


def _handshake_decoder() -> codec.InboundDecoderAPI:
    """A connection's decoder until its peer has proved itself: commands only, and
    small (``HANDSHAKE_RECEIVE_SIZE``); ``Session._trust_peer`` lifts both limits."""
    return codec.InboundDecoder(0, MAX_COMMAND_BODY, HANDSHAKE_RECEIVE_SIZE)


def error_frame(code: ErrorCode, text: str) -> bytes:
    """The bytes of an ``ERROR code: text`` frame: a session's last words, and what a
    server writes to a connection it turns away before any session exists; the
    peer decides by the code and logs the text."""
    return encode_frame(0, KIND_COMMAND, format_command(Verb.ERROR, with_code(code, text)))


class Session:
    """The sans-I/O state of one channel, for either role."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        config = config or SessionConfig()
        if client_id is not None and role is not Role.CLIENT:
            raise ValueError("only a client has a client id")
        if role is Role.CLIENT and config.secret_book is not None:
            raise ValueError("only a server has a secret book")
        if role is Role.SERVER and config.credentials is not None:
            raise ValueError("only a client has credentials")
        self.role = role
        self._peer_role = "server" if role is Role.CLIENT else "client"
        self.config = config
        self.window = config.window
        self.max_frame = config.max_frame
        self.state = ChannelState.AWAITING_HELLO
        self.failure: str | None = None
        """Why the channel failed (set exactly when ``state`` is FAILED)."""
        self.failure_code: ErrorCode | None = None
        """What failed, as a value (where the failure has a code)."""
        self.peer_window: int | None = None
        self.peer_max_frame: int | None = None
        self.hello_received = False
        """The peer's HELLO arrived on this connection (a refusal came after it)."""
        self._trusted = False  # the peer proved itself on this connection: data may come
        self._reset_in_read: set[int] = set()  # streams the peer reset in the last read
        self.peer_client_id: str | None = None
        self._decoder = _handshake_decoder()
        self._max_streams = config.max_streams
        self._max_pending = config.max_pending_syns
        self._pending = 0
        self.stream_limit_refusals = 0
        """SYNs this side refused for ``max_streams`` or ``max_pending_syns``."""
        self._data_frame_size = config.data_frame_size
        self._frame_size = config.data_frame_size  # what the output queue frames data at
        self._max_window = config.max_window
        self._window_budget = config.window_budget
        self._window_growth = 0  # sum over streams of (receive window - self.window)
        self._streams: dict[int, Stream] = {}
        self._plane: codec.DataPlane | None = None
        """The compiled data plane, which delivers data records itself (``use_plane``)."""
        self._handshake = Handshake(role, client_id or "", config.credentials,
                                    config.secret_book, config.random_bytes)  # fmt: skip
        self._mappings_before_auth: list[bytes] = []
        """Client: mapping commands declared before the server proved itself."""
        self._mappings = MappingTable(role, config.max_mappings)
        self._local_parity = 1 if role is Role.CLIENT else 0
        self._next_id = 1 if role is Role.CLIENT else 2
        self._highest_peer_id = 0
        # Sent bytes are retained exactly while the log keeps the session (a server
        # decides at HELLO): the data plane frees them on ACKs by this flag.
        self._output = codec.OutboundQueue(
            self._data_frame_size, OUTPUT_BUDGET, OUTPUT_CAPACITY,
            config.resume and (role is Role.SERVER or client_id is not None),
        )  # fmt: skip
        self._fins_by_id: dict[int, Stream] = {}
        # Resume (docs/protocol.md section 9).  A client that wants it logs from
        # the start; a server decides at the client's HELLO.
        self._log = ResumeLog(config.resume and role is Role.CLIENT and client_id is not None)
        self.session_id: str | None = None
        self.resume_at: tuple[str, int] | None = None
        """Client: the address the server advertised for resuming (§9.5)."""
        self.peer_asks_route = False
        """Server: the client's HELLO asked where to resume (it reads ``elsewhere``)."""
        self._resume_key = b""
        self._offer: ResumeOffer = NO_OFFER
        """Server: what the client's HELLO asked about sessions."""
        self._resume_nonce = ""
        self._output_detached = False
        """Streams kept across a cut: their output waits until the resume exchange is out."""
        self._exchange_out = bytearray()
        """What goes out while the output is detached: the handshake, the resume
        exchange (our table and replayed commands), and our replies meanwhile."""
        self._exchange_own = 0
        """Bytes of ``_exchange_out`` that are our own table and replay, not replies:
        they do not count against the peer's reply backlog."""
        self._peer_table = PeerTable()
        self._opened_while_detached = 0
        self._handlers: dict[Verb, Callable[[int, Command, list[Event]], None]] = {
            Verb.HELLO: self._on_hello,
            Verb.AUTH: self._on_auth,
            Verb.AUTH_OK: self._on_auth_ok,
            Verb.ERROR: self._on_error,
            Verb.PING: self._on_ping,
            Verb.PONG: self._on_pong,
            Verb.CONNECT: self._on_mapping_request,
            Verb.BIND: self._on_mapping_request,
            Verb.DYNAMIC: self._on_mapping_request,
            Verb.CONNECT_OK: self._on_mapping_reply,
            Verb.CONNECT_ERROR: self._on_mapping_reply,
            Verb.BIND_OK: self._on_mapping_reply,
            Verb.BIND_ERROR: self._on_mapping_reply,
            Verb.DYNAMIC_OK: self._on_mapping_reply,
            Verb.DYNAMIC_ERROR: self._on_mapping_reply,
            Verb.UDP_CONNECT: self._on_mapping_request,
            Verb.UDP_BIND: self._on_mapping_request,
            Verb.UDP_CONNECT_OK: self._on_mapping_reply,
            Verb.UDP_CONNECT_ERROR: self._on_mapping_reply,
            Verb.UDP_BIND_OK: self._on_mapping_reply,
            Verb.UDP_BIND_ERROR: self._on_mapping_reply,
            Verb.UNMAP: self._on_unmap,
            Verb.UNMAP_OK: self._on_unmap_ok,
            Verb.SYN: self._on_syn,
            Verb.SYN_OK: self._on_stream_command,
            Verb.SYN_ERROR: self._on_stream_command,
            Verb.FIN: self._on_stream_command,
            Verb.ACK: self._on_stream_command,
            Verb.RST: self._on_stream_command,
            Verb.BLOCKED: self._on_blocked,
            Verb.WINDOW: self._on_window,
            Verb.BYE: self._on_bye,
            Verb.SESSION: self._on_session,
            Verb.RESUME_NONCE: self._on_resume_nonce,
            Verb.RESUME_PROOF: self._on_resume_proof,
            Verb.RESUME_OK: self._on_resume_ok,
            Verb.RECEIVED: self._on_received,
            Verb.RESUME_END: self._on_resume_end,
        }
        if client_id is not None:
            parse_client_id(client_id)
        self._queue_hello()

    def _queue_hello(self) -> None:
        offer = NO_OFFER
        if self._log.keeping:
            sid = self.session_id
            offer = NEW_SESSION if sid is None else ResumeOffer(ResumeAsk.RESUME, sid)
        self._queue_command(0, Verb.HELLO, PROTOCOL_VERSION, self.config.window,
                            self.config.max_frame, *self._handshake.hello_words(offer))  # fmt: skip

    @property
    def client_name(self) -> str | None:
        """The name the peer authenticated as (server), or ours (client)."""
        return self._handshake.client_name

    # ------------------------------------------------------------------ state

    @property
    def failed(self) -> bool:
        return self.state is ChannelState.FAILED

    @property
    def ready(self) -> bool:
        """True once the peer's HELLO arrived and the channel has not failed."""
        return self.state is ChannelState.OPEN

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def stream_report(self, stream_id: int) -> tuple[int, int, int]:
        """For status: a stream's bytes sent and not yet acknowledged, its send
        window, and the bytes read from its local socket still waiting to be sent."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0, 0, 0
        waiting = self._output.buffered(stream.slot) if stream.slot >= 0 else 0
        return stream.send.unacked, stream.send.size, waiting

    def stream_state(self, stream_id: int) -> StreamState:
        """The state of a stream; streams no longer tracked are CLOSED."""
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else _S.CLOSED

    @property
    def outbound_held(self) -> int:
        """Bytes of storage the send rings hold (all streams): what the cap bounds."""
        return self._output.held_total()

    def release_idle_outbound(self) -> int:
        """Free the storage of every empty send ring; returns the bytes freed."""
        return self._output.release_idle()

    def can_open_stream(self) -> bool:
        """Room for a stream we open; while detached (the channel is down), room
        for one more held until the resume, within ``max_pending_syns``."""
        return (
            self.state is not ChannelState.FAILED
            and len(self._streams) < self._max_streams
            and len(self._log.tombstones) < self._max_streams
            and self._next_id <= MAX_STREAM_ID
            and not (self._output_detached and self._opened_while_detached >= self._max_pending)
        )

    # ----------------------------------------------------------------- resume

    @property
    def resumable(self) -> bool:
        """A broken connection may be resumed: both sides keep this session."""
        return self._log.keeping and self.session_id is not None and not self.failed

    @property
    def resume_lost(self) -> str | None:
        """Why this session stopped being resumable, once it has."""
        return self._log.lost

    @property
    def resume_key(self) -> bytes:
        return self._resume_key

    @property
    def tombstones(self) -> int:
        """Closed streams whose last bytes or FIN the peer has not yet confirmed."""
        return len(self._log.tombstones)

    @property
    def log_bytes(self) -> int:
        """Bytes of sent commands kept until the peer confirms them."""
        return self._log.bytes

    def suspend(self) -> None:
        """The connection broke: keep the streams, their rings and the log; drop
        what belonged to the connection (decoder, unsent output, barrier)."""
        if not self.resumable:
            raise LocalProtocolError("this session cannot be resumed")
        self._fold_plane_acks()  # sent or not, they are the log's now: a replay may owe them
        self.state = ChannelState.DISCONNECTED
        self._output_detached = True
        self._exchange_out.clear()
        self._exchange_own = 0
        self._output.drop_output()
        self._decoder = _handshake_decoder()
        self._trusted = False
        self._log.connection_lost()
        self._count_plane_commands()
        self._peer_table.clear()

    def reconnect(self) -> None:
        """Client: a new connection to the server; HELLO asks to resume."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only a client reconnects")
        if self.state is not ChannelState.DISCONNECTED:
            self.suspend()
        self.state = ChannelState.AWAITING_HELLO
        self.hello_received = False
        self._handshake.renew()
        self._resume_nonce = ""
        self._queue_hello()

    def challenge_resume(self, key: bytes) -> None:
        """Server: the session this connection names exists: ask for the proof."""
        if self.role is not Role.SERVER or self._offer.ask is not ResumeAsk.RESUME:
            raise LocalProtocolError("no resume request to answer")
        self._resume_key = key
        self._resume_nonce = auth.new_nonce(self.config.random_bytes)
        self._queue_command(0, Verb.RESUME_NONCE, self._resume_nonce)

    def adopt(self, connection: Session) -> None:
        """Server: carry on over ``connection``, which proved it may resume us: its
        decoder (bytes already read) and unsent output become ours."""
        if self.state is not ChannelState.DISCONNECTED:
            self.suspend()
        self._decoder = connection._decoder
        self._trust_peer()
        self.peer_window = connection.peer_window
        self.peer_max_frame = connection.peer_max_frame
        self._exchange_out += connection._take_output()
        self.state = ChannelState.RESUMING
        self._queue_command(0, Verb.RESUME_OK)
        self._send_table()

    def _take_output(self) -> bytes:
        output = self._output
        taken = bytearray(self._exchange_out)
        self._exchange_out.clear()
        while output.has_output():
            output.fill()
            pending = output.pending()
            if not len(pending):
                break
            taken += pending
            output.sent(len(pending))
        return bytes(taken)

    def _give_up_resuming(self, why: str | None) -> None:
        """Give up resuming: the peer keeps no session, or cannot be trusted to
        confirm what it got (the log hit its limit)."""
        self._log.give_up(why, self._streams.values(), self._output)

    def barrier_tick(self) -> None:
        """Called every few hundred milliseconds: once the channel has gone quiet,
        confirm what was sent since the last barrier, so the tails no ACK covers
        and the log are freed.  A busy channel gets its barriers by count
        (``BARRIER_EVERY`` sends), so their cost per message does not depend on
        how fast the machine is."""
        log = self._log
        plane = self._plane
        self._fold_plane_acks()
        if plane is not None:  # sends the plane made and has not reported yet
            taken = plane.take_sends()
            if taken:
                self.sent_directly(taken)  # a barrier by count, if one is due
                plane.pace_sends(self.sends_before_barrier)
        if (log.quiet() and log.keeping and log.barrier is None
                and self.state is ChannelState.OPEN and not self._output_detached):  # fmt: skip
            self._send_barrier()

    def confirming(self) -> bool:
        """Something sent waits for a barrier to confirm it (a logged command, stream
        bytes past the peer's ACKs, a closed stream's end), or a barrier is out:
        the barrier tick goes on.  False on an idle channel, which needs no tick
        until it sends again (the data plane's sends are counted in ``written``)."""
        log = self._log
        if not log.keeping or self.state is ChannelState.FAILED:
            return False
        self._fold_plane_acks()  # the plane's own ACKs are logged commands to confirm
        if log.barrier is not None or log.wanted or log.end > log.base or log.tombstones:
            return True
        output = self._output
        return any(stream.slot >= 0
                   and stream.written - output.buffered(stream.slot) > stream.released
                   for stream in self._streams.values())  # fmt: skip

    def request_barrier(self) -> None:
        """Confirm what was sent as soon as possible (memory is tight)."""
        if self._log.keeping:
            self._want_barrier()

    def _want_barrier(self) -> None:
        """Confirm what was sent as soon as one barrier at a time allows."""
        log = self._log
        if log.barrier is None and self.state is ChannelState.OPEN and not self._output_detached:
            self._send_barrier()
        else:
            log.wanted = True

    def _send_barrier(self) -> None:
        self._fold_plane_acks()  # sent before this PING: the barrier covers them
        token = self._log.open_barrier(self._streams.values(), self._output)
        ping = encode_frame(0, KIND_COMMAND, format_command(Verb.PING, token))
        self._output.queue_control(ping)

    def _send_table(self) -> None:
        """What we received of each stream, then how many of the peer's commands
        (our own output: it does not count against the peer's reply backlog)."""
        before = len(self._exchange_out)
        self._count_plane_commands()
        for stream_id, received, fin in table_rows((*self._streams.values(),
                                                    *self._log.tombstones.values())):  # fmt: skip
            self._queue_command(stream_id, Verb.RECEIVED, received, fin)
        self._queue_command(0, Verb.RESUME_END, self._log.received, self._highest_peer_id)
        self._exchange_own += len(self._exchange_out) - before

    # ---------------------------------------------------------------- inbound

    def receive_buffer(self) -> memoryview:
        """Where to ``recv_into`` next."""
        return self._decoder.writable()

    def _count_plane_commands(self) -> None:
        """The peer's ACKs and BLOCKEDs the data plane took itself are logged
        commands received, which the resume table counts."""
        if self._plane is not None:
            self._log.received += self._plane.take_commands()

    def use_plane(self, plane: codec.DataPlane) -> None:
        """Hand data records to the compiled data plane, which writes those of the
        streams bound to it (``flow_record``) to their sockets; the session sees only
        the records the plane leaves to it, and the plane's events."""
        self._plane = plane
        self._tell_plane_growth()

    def _tell_plane_growth(self) -> None:
        """The plane takes the BLOCKED that ``grow_window`` would refuse for the
        budget: it must know what is left of it."""
        if self._plane is not None:
            self._plane.set_growth_left(max(0, self._window_budget - self._window_growth))

    def flow_record(self, stream_id: int) -> Stream:
        """The stream's record, for the data plane to keep its counters in."""
        return self._stream(stream_id)

    @property
    def output_queue(self) -> codec.OutboundQueueAPI:
        """The send rings and output FIFO (the data plane reads into the rings)."""
        return self._output

    def receive_into(self, count: int) -> list[Event]:
        """Handle ``count`` bytes received into ``receive_buffer()``.

        Data events carry views into the receive buffer: consume them before
        calling ``receive_buffer`` again.
        """
        if self.state is ChannelState.FAILED:
            return []
        if self._reset_in_read:
            self._reset_in_read.clear()
        scanned_untrusted = not self._trusted  # the decoder refused data frames for this read
        events: list[Event] = []
        decoder = self._decoder
        plane = self._plane
        records: Iterable[codec.Record]
        if plane is not None and self._trusted and self.state is ChannelState.OPEN:
            records = decoder.advance_through(count, plane)
            malformed = None
        else:
            records, malformed = decoder.advance(count)
            plane = None
        staging, buffer = decoder.staging, decoder.buffer
        try:
            for kind, stream_id, offset, length in records:
                if kind == _RECORD_DATA:
                    if self.state is not ChannelState.OPEN:  # the resume exchange: §9.4
                        raise ProtocolError(self._out_of_turn("a data frame"))
                    stream = self._streams.get(stream_id)
                    if stream is None:
                        self._unknown_stream(stream_id, "data frame")
                        continue
                    if stream.state not in RECEIVING_STATES:  # data keeps a valid state
                        next_state(stream.state, _I.RECV_DATA)  # raises
                    stream.recv.received(length)
                    stream.received += length
                    events.append(DataReceived(stream_id, staging[offset : offset + length]))
                elif kind == _RECORD_DATAGRAM:
                    self._on_datagram(stream_id, buffer[offset : offset + length], events)
                else:
                    self._on_command(stream_id, buffer[offset : offset + length], events)
                    if self.failed:
                        return events
            if plane is not None:
                malformed = decoder.error
                self._plane_events(decoder.plane_events, events)
            if malformed:
                if self.state is ChannelState.AWAITING_HELLO and buffer[0] != 0:
                    # Where a HELLO belongs (a header starting 0x00): another protocol.
                    first = bytes(buffer[: max(min(count, 64), 9)])
                    if first.startswith(sniff.TLS_HANDSHAKE):
                        raise ProtocolError(PEER_SPEAKS_TLS, ErrorCode.TLS)
                    raise ProtocolError(f"{NOT_A_PEER} {self._peer_role} ({sniff.identify(first)})",
                                        ErrorCode.NOT_A_PEER)  # fmt: skip
                datagram = malformed == codec.ERR_DATAGRAM_TOO_LARGE
                if (malformed == codec.ERR_DATA_TOO_LARGE or datagram) and scanned_untrusted:
                    what = "a datagram frame" if datagram else "a data frame"
                    early = f"{what} before the handshake finished"
                    raise ProtocolError(early if self._trusted else self._out_of_turn(what))
                raise ProtocolError(codec.ERROR_MESSAGES[malformed])
        except ProtocolError as exc:
            events.append(self._finish(str(exc), code=exc.code))
        return events

    def _plane_events(self, reported: list[tuple[int, int, int, int]], events: list[Event]) -> None:
        """What the data plane said while it delivered this read: ACKs now due
        (decided after every command of the read, as the Python path decides them
        when it writes), and sockets that failed."""
        for kind, _plane, stream_id, value in reported:
            if kind == codec.PLANE_ACK:
                self.ack_due(stream_id, value)
            elif kind == codec.PLANE_FAILED:
                events.append(DeliveryFailed(stream_id, value))

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes by copying (for tests and tools); data events get copies."""
        events: list[Event] = []
        view = memoryview(data)
        while view and self.state is not ChannelState.FAILED:
            target = self.receive_buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            view = view[n:]
            for event in self.receive_into(n):
                if isinstance(event, DataReceived):
                    event = DataReceived(event.stream_id, memoryview(bytes(event.data)))
                events.append(event)
        return events

    @property
    def mid_frame(self) -> bool:
        """True while part of a frame has been received and the rest has not."""
        return self._decoder.pending > 0

    def receive_eof(self) -> str:
        """The channel socket hit EOF; return the reason to log."""
        if self.failure is not None:
            return self.failure
        pending = self._decoder.pending
        first = bytes(self._decoder.buffer[: min(pending, 64)])
        code = ErrorCode.PEER_CLOSED
        if pending and self.state is ChannelState.AWAITING_HELLO and first[0] != 0:
            # Nothing parsed yet, so the bytes start the buffer: another protocol's.
            reason = f"{NOT_A_PEER} {self._peer_role} ({sniff.identify(first)})"
            code = ErrorCode.NOT_A_PEER
        elif pending:
            reason = f"peer closed the channel in the middle of a frame ({pending} bytes)"
        else:
            reason = "peer closed the channel"
        self._finish(reason, tell_peer=False, code=code)
        return reason

    def fail(self, reason: str, code: ErrorCode, *, tell_peer: bool = True,
             after_replies: bool = False) -> None:  # fmt: skip
        """End the channel for a local reason; the peer is told ``ERROR code: reason``
        (``tell_peer``; an orderly close after BYE says nothing).  ``after_replies``:
        the replies already queued (AUTH OK) go first, so an older client refused
        after authenticating reads the refusal as one, not as a failed AUTH."""
        if self.state is not ChannelState.FAILED:
            self._finish(reason, code=code, tell_peer=tell_peer, after_replies=after_replies)

    def release_idle_buffers(self) -> None:
        """The channel went quiet: give back the receive buffers a burst grew (unless
        part of a frame waits in them), the empty send rings and the empty output
        FIFO; each is taken again, small, when bytes come (an idle channel holds
        a few KiB, not a busy one's buffers, and its keepalives churn nothing)."""
        if self.state is not ChannelState.FAILED:
            self._decoder.release_grown()
            self._output.release_idle()
            self._output.release_output()

    def release_memory(self) -> None:
        """The channel is closed: give back the receive buffers and the output queue
        now, rather than when the garbage collector gets to the closed channel."""
        if self.state is not ChannelState.FAILED:
            raise LocalProtocolError("only a failed session gives its buffers back")
        self._decoder.release()
        self._output = codec.OutboundQueue(self._frame_size, OUTPUT_BUDGET, OUTPUT_CAPACITY,
                                           False)  # fmt: skip

    def say_bye(self) -> None:
        """Queue BYE: we have no open stream and will open none (draining)."""
        if self.state is ChannelState.OPEN:
            self._queue_command(0, Verb.BYE)

    def _finish(
        self,
        reason: str,
        *,
        code: ErrorCode,
        tell_peer: bool = True,
        peer_reason: str | None = None,
        after_replies: bool = False,
    ) -> ChannelFailed:
        """Fail the channel; the peer is told ``ERROR code: peer_reason`` (default:
        ``reason``), after the replies already queued where ``after_replies``."""
        self.state = ChannelState.FAILED
        self.failure = reason
        self.failure_code = code
        for stream in self._streams.values():
            stream.state = _S.CLOSED
        self._streams.clear()
        self._pending = 0
        for stream in self._fins_by_id.values():
            stream.state = _S.CLOSED
        self._fins_by_id.clear()
        self._output.drop_streams()
        if not after_replies:
            self._output.clear_control()
        self._mappings_before_auth.clear()
        self._log.clear()
        self._output_detached = False
        self._exchange_out.clear()
        if tell_peer:
            self._output.queue_control(error_frame(code, peer_reason or reason))
        return ChannelFailed(reason, by_peer=False, code=code)

    def _was_opened(self, stream_id: int) -> bool:
        if stream_id % 2 == self._local_parity:
            return stream_id < self._next_id
        return stream_id <= self._highest_peer_id

    def _unknown_stream(self, stream_id: int, what: str) -> None:
        """A frame names a stream we do not track: ignore it if it was closed."""
        if self.state is ChannelState.AWAITING_HELLO:
            raise ProtocolError(f"expected HELLO, got a {what}")
        if stream_id == 0:
            raise ProtocolError(f"{what} on stream 0, which is reserved for the channel")
        if not self._was_opened(stream_id):
            raise ProtocolError(f"{what} for stream {stream_id}, which was never opened")
        # Frames in flight when a stream closed (data after our RST, a late
        # ACK) are expected: drop them.

    def _on_datagram(self, mapping: int, body: memoryview, events: list[Event]) -> None:
        if self.state is not ChannelState.OPEN:
            raise ProtocolError(self._out_of_turn("a datagram frame"))
        if len(body) < DATAGRAM_HEADER:
            raise ProtocolError("datagram frame shorter than its association number")
        if self._mappings.peer_datagram(mapping):
            (association,) = _ASSOCIATION.unpack_from(body)
            events.append(DatagramReceived(mapping, association, bytes(body[DATAGRAM_HEADER:])))

    def send_datagram(self, mapping: int, association: int, payload: bytes | memoryview) -> bool:
        """Queue one datagram of ``association`` on UDP ``mapping``; False when it is
        dropped instead: the channel is not open (datagrams are never replayed after a
        cut), the mapping cannot carry it, it is larger than the peer's frames, or
        ``DATAGRAM_QUEUE_LIMIT`` bytes wait already."""
        if (self.state is not ChannelState.OPEN or self._output_detached
                or not self._mappings.can_send_datagram(mapping)):  # fmt: skip
            return False
        size = DATAGRAM_HEADER + len(payload)
        if self.peer_max_frame is None or size > self.peer_max_frame:
            return False
        if self._output.control_bytes + size > DATAGRAM_QUEUE_LIMIT:
            return False
        frame = (
            codec.encode_header(size, mapping, KIND_DATAGRAM)
            + _ASSOCIATION.pack(association)
            + bytes(payload)
        )
        if self._plane is not None:
            self._plane.hold_output()  # it goes with the control frames, in the driver's flush
        self._output.queue_control(frame)
        return True

    def _on_command(self, stream_id: int, body: memoryview, events: list[Event]) -> None:
        command = parse_command(body)
        verb = command.verb
        rule = VERBS[verb]
        if rule.logged:
            self._log.received += 1
        scope = rule.scope
        if scope is Scope.CHANNEL:
            if stream_id != 0:
                raise ProtocolError(f"{verb.value} must be sent on id 0, not {stream_id}")
        elif stream_id == 0:
            raise ProtocolError(f"{verb.value} needs a {scope.value} id, not 0")
        if self.state not in rule.states:
            raise ProtocolError(self._out_of_turn(verb))
        if rule.sender is not Sender.EITHER and rule.sender is _SENDER[self.role]:
            raise ProtocolError(f"{verb.value} is sent by {rule.sender.value} only")
        self._handlers[verb](stream_id, command, events)
        backlog = MAX_CONTROL_BACKLOG if self._trusted else HANDSHAKE_REPLY_BACKLOG
        if self._output.control_bytes > backlog or (
            len(self._exchange_out) > backlog + self._exchange_own
        ):
            raise ProtocolError(f"peer is not reading: over {backlog} bytes of replies queued")

    def _out_of_turn(self, what: Verb | str) -> str:
        """Why ``what`` (a command, or a data frame) may not arrive in this state."""
        name = what.value if isinstance(what, Verb) else what
        if self.state is ChannelState.AWAITING_HELLO:
            return f"expected HELLO, got {name}"
        if self.state is ChannelState.RESUMING:
            return f"expected the resume exchange, got {name}"
        if self.state is ChannelState.OPEN:
            return "duplicate HELLO" if what is Verb.HELLO else f"{name} when the channel is open"
        if self.role is Role.SERVER:
            return f"expected AUTH, got {name}: this server requires clients to authenticate"
        return f"expected AUTH OK, got {name}"

    def _on_hello(self, _id: int, command: Command, events: list[Event]) -> None:
        self.hello_received = True
        hello = parse_hello(self.role, command.args)
        if self.role is Role.SERVER:
            self._offer = hello.offer
            self.peer_asks_route = hello.asks_route
            keeping = hello.offer.ask is ResumeAsk.NEW and self.config.resume
            self._log.keeping = keeping
            if not keeping:
                self._output.set_retain(False)
        self.peer_window = hello.window
        self.peer_max_frame = hello.max_frame
        self.peer_client_id = hello.client_id
        frame_size = min(self._data_frame_size, hello.max_frame)
        if frame_size < self._frame_size:  # a server met again after a resume may offer more
            self._frame_size = frame_size
            self._output.set_frame_size(frame_size)
        match self._handshake.after_hello(hello):
            case AfterHello.OPEN:
                self._open(events)
            case AfterHello.AWAIT_AUTH:
                self.state = ChannelState.AUTHENTICATING  # the client's AUTH comes next
            case AfterHello.SEND_AUTH:
                self.state = ChannelState.AUTHENTICATING
                self._queue_command(0, Verb.AUTH, *self._handshake.auth_words())
            case AfterHello.NEEDS_SECRET:
                events.append(self._finish(NEEDS_SECRET, code=ErrorCode.AUTH_FAILED))
            case AfterHello.UNASKED_SECRET:
                events.append(self._finish(UNASKED_SECRET, code=ErrorCode.AUTH_FAILED))

    def _trust_peer(self) -> None:
        """The peer proved itself: its data frames may come, as large as we announced."""
        self._decoder.limit(self.config.max_frame, RECEIVE_BUFFER_SIZE)
        self._trusted = True

    @property
    def mapping_limit_refusals(self) -> int:
        """Mappings this side refused for ``max_mappings`` (for the metrics)."""
        return self._mappings.limit_refusals

    @property
    def peer_trusted(self) -> bool:
        """The peer proved itself on this connection (the transport may lift its
        stranger's limits too)."""
        return self._trusted

    def _open(self, events: list[Event]) -> None:
        """Authentication (if any) is done: mappings and streams may flow, or a
        resume exchange starts."""
        offer = self._offer
        if offer.ask is not ResumeAsk.RESUME:  # a resume proves itself (``adopt``)
            self._trust_peer()
        if self._output_detached:  # a client's new connection: the server's nonce comes next
            self.state = ChannelState.RESUMING
            return
        if offer.ask is ResumeAsk.RESUME:
            self.state = ChannelState.RESUMING
            assert self.peer_client_id is not None
            events.append(ResumeRequested(offer.session_id, self.peer_client_id,
                                          self.client_name))  # fmt: skip
            return
        self.state = ChannelState.OPEN
        assert self.peer_window is not None and self.peer_max_frame is not None
        for frame in self._mappings_before_auth:
            if self._log.keeping:
                self._log_frame(frame)
            self._output.queue_control(frame)
        self._mappings_before_auth.clear()
        if offer.ask is ResumeAsk.NEW:
            self._grant_session()
        events.append(HelloReceived(self.peer_window, self.peer_max_frame, self.peer_client_id,
                                    self.client_name))  # fmt: skip

    def _on_auth(self, _id: int, command: Command, events: list[Event]) -> None:
        """Server: check the client's proof; answer with ours, or fail."""
        verdict = self._handshake.check_auth(*command.args)
        if verdict.refusal:
            events.append(self._finish(verdict.refusal, peer_reason=verdict.told or AUTH_FAILED,
                                       code=ErrorCode.AUTH_FAILED))  # fmt: skip
            return
        self._queue_command(0, Verb.AUTH_OK, verdict.proof)
        self._open(events)

    def _on_auth_ok(self, _id: int, command: Command, events: list[Event]) -> None:
        """Client: the server proves it knows the secret too."""
        if not self._handshake.check_auth_ok(command.args[0]):
            events.append(self._finish(WRONG_SERVER_PROOF, peer_reason=AUTH_FAILED,
                                       code=ErrorCode.AUTH_FAILED))  # fmt: skip
            return
        self._open(events)

    def _on_bye(self, _id: int, command: Command, events: list[Event]) -> None:
        events.append(PeerLeaving())

    def _on_ping(self, _id: int, command: Command, events: list[Event]) -> None:
        token = parse_decimal(command.args[0], "PING token", 0, MAX_STREAM_ID)
        self._queue_command(0, Verb.PONG, token)

    def _on_pong(self, _id: int, command: Command, events: list[Event]) -> None:
        token = parse_decimal(command.args[0], "PONG token", 0, MAX_STREAM_ID)
        if token & BARRIER_TOKEN:
            if self._log.answered(token, self._output) and self._log.wanted:
                self._want_barrier()
            return
        events.append(PongReceived(token))

    # ------------------------------------------------------- resume: inbound

    def _grant_session(self) -> None:
        """Server: answer a client that offered to keep a session."""
        if not self._log.keeping:
            self._queue_command(0, Verb.SESSION, "-")  # we keep none (--resume-timeout 0)
            return
        route = self.config.session_route
        self.session_id = (
            route + self.config.random_bytes(auth.SESSION_ID_HEX // 2).hex()[len(route) :]
        )
        # Where to resume, to a client that asks: an older one refuses a third word.
        advertise = (
            [self.config.advertise] if self.peer_asks_route and self.config.advertise else []
        )
        if self._handshake.key:
            self._resume_key = self._handshake.key
            self._queue_command(0, Verb.SESSION, self.session_id, "-", *advertise)
        else:  # no secret to derive a key from: the key crosses the wire (TLS hides it)
            self._resume_key = self.config.random_bytes(auth.KEY_HEX // 2)
            self._queue_command(0, Verb.SESSION, self.session_id, self._resume_key.hex(),
                                *advertise)  # fmt: skip

    def _on_session(self, _id: int, command: Command, events: list[Event]) -> None:
        if not self._log.keeping or self.session_id is not None:
            raise ProtocolError("SESSION was not asked for")
        args = command.args
        if args == ["-"]:
            self._give_up_resuming("the server keeps no sessions (its --resume-timeout is 0)")
            return
        if len(args) not in (2, 3) or not auth.is_session_id(args[0]):
            raise ProtocolError("SESSION takes a session id, a key and maybe an address")
        if len(args) == 3:
            if not self._handshake.client_id.startswith(ROUTE_ID_PREFIX):
                raise ProtocolError("SESSION with an address that was not asked for")
            self.resume_at = parse_host_port(args[2], allow_port_zero=False)
        if args[1] == "-":
            if not self._handshake.key:
                raise ProtocolError("SESSION without a key, and no AUTH to derive one from")
            key = self._handshake.key
        elif auth.is_key(args[1]):
            key = bytes.fromhex(args[1])
        else:
            raise ProtocolError("SESSION key is not 64 hex digits")
        self.session_id = args[0]
        self._resume_key = key

    def _on_resume_nonce(self, _id: int, command: Command, events: list[Event]) -> None:
        if not self._output_detached or self._resume_nonce:
            raise ProtocolError("RESUME NONCE when no resume was asked for")
        server_nonce = command.args[0]
        if not auth.is_nonce(server_nonce):
            raise ProtocolError("RESUME NONCE takes a 64-hex-digit nonce")
        assert self.session_id is not None
        self._resume_nonce = auth.new_nonce(self.config.random_bytes)
        proof = auth.resume_proof(self._resume_key, self.session_id, self.client_name or "",
                                  self._handshake.client_id, self._resume_nonce,
                                  server_nonce)  # fmt: skip
        self._queue_command(0, Verb.RESUME_PROOF, self._resume_nonce, proof)

    def _on_resume_proof(self, _id: int, command: Command, events: list[Event]) -> None:
        offered = self._offer.session_id
        if not offered or not self._resume_nonce:
            raise ProtocolError("RESUME PROOF before the server's nonce")
        client_nonce, given = command.args
        if not auth.is_nonce(client_nonce) or not auth.is_proof(given):
            raise ProtocolError("RESUME PROOF takes a 64-hex-digit nonce and proof")
        expected = auth.resume_proof(self._resume_key, offered, self.client_name or "",
                                     self._handshake.client_id, client_nonce,
                                     self._resume_nonce)  # fmt: skip
        self._resume_nonce = ""  # one try per nonce
        if not auth.proof_matches(expected, given):
            events.append(self._finish(f"{RESUME_REFUSED}: bad proof", code=ErrorCode.AUTH_FAILED))
            return
        events.append(ResumeProved(offered))

    def _on_resume_ok(self, _id: int, command: Command, events: list[Event]) -> None:
        if not self._output_detached or not self._resume_nonce:
            raise ProtocolError("RESUME OK when no proof was sent")
        self._send_table()

    def _on_received(self, stream_id: int, command: Command, events: list[Event]) -> None:
        if not self._output_detached or (self.role is Role.CLIENT and not self._resume_nonce):
            raise ProtocolError("RECEIVED outside a resume exchange")
        total = parse_decimal(command.args[0], "RECEIVED count", 0, MAX_TOTAL)
        fin = parse_decimal(command.args[1], "RECEIVED FIN flag", 0, 1)
        kept = stream_id in self._streams or stream_id in self._log.tombstones
        self._peer_table.add(stream_id, total, bool(fin), kept=kept)

    def _on_resume_end(self, _id: int, command: Command, events: list[Event]) -> None:
        """The peer's table is complete: send again what it lacks, then carry on."""
        if not self._output_detached:
            raise ProtocolError("RESUME END outside a resume exchange")
        if self.role is Role.CLIENT and not self._resume_nonce:
            raise ProtocolError("RESUME END before RESUME OK")
        controls = parse_decimal(command.args[0], "RESUME END count", 0, MAX_TOTAL)
        highest = parse_decimal(command.args[1], "RESUME END stream id", 0, MAX_STREAM_ID)
        log = self._log
        commands = log.since(controls)
        rows = self._peer_table.rows
        replayed = 0
        for stream in (*self._streams.values(), *log.tombstones.values()):
            row = rows.get(stream.id)
            if row is None and stream.id % 2 == self._local_parity and stream.id > highest:
                row = UNSEEN  # its SYN never arrived: it is replayed, then every byte
            replayed += replay_stream(stream, row, self._output, log)
        before = len(self._exchange_out)
        for frame in commands:
            self._exchange_out += frame
        self._exchange_own += len(self._exchange_out) - before
        self._peer_table.clear()
        self._opened_while_detached = 0
        self._resume_nonce = ""
        self.state = ChannelState.OPEN  # output stays detached until _exchange_out is sent
        log.wanted = log.keeping
        if not self._exchange_out:
            self._attach_output()
        events.append(SessionResumed(len(self._streams), replayed))

    def ping(self, token: int) -> None:
        """Queue ``PING token`` (ahead of any data still waiting in the stream rings)."""
        if self.state is not ChannelState.FAILED:
            self._queue_command(0, Verb.PING, token & MAX_STREAM_ID)

    def _on_error(self, _id: int, command: Command, events: list[Event]) -> None:
        reason = command.reason
        code = code_of(reason)
        if (self.role is Role.CLIENT and self._output_detached and self.resumable
                and code in _RETRY_RESUME_AFTER):  # fmt: skip
            # The server turned this connection away (busy, full, timed out): the
            # session it holds, and ours, wait for the next attempt.
            events.append(ChannelFailed(reason, by_peer=True, kept=True, code=code))
            return
        # Only the code says authentication failed: another refusal (a full server,
        # a refused resume) can overtake our AUTH OK, which a closing server drops.
        self._finish(reason, tell_peer=False, code=code or ErrorCode.PEER_CLOSED)
        events.append(ChannelFailed(reason, by_peer=True, code=code))

    def _on_mapping_request(self, mapping: int, command: Command, events: list[Event]) -> None:
        kind = REQUEST_KIND[command.verb]
        host, port, path = "", 0, None
        if kind is not DYNAMIC:
            word = command.args[0]
            if is_socket_path_word(word) and not kind.datagrams:
                path = parse_socket_path(word)
            else:
                host, port = parse_host_port(word, allow_port_zero=kind in BOUND)
        if not self._mappings.requested(mapping, kind):
            limit = f"too many mappings (limit {self._mappings.limit})"
            self._queue_command(mapping, REFUSAL[kind], Failure(FailureClass.LIMIT, limit).wire)
            return
        events.append(MappingRequested(mapping, kind, host, port, path))

    def _on_mapping_reply(self, mapping: int, command: Command, events: list[Event]) -> None:
        verb = command.verb
        kind = self._mappings.replied(mapping, verb)
        if kind is None:
            return  # answered after we cancelled it: UNMAP OK is on its way
        if verb is REFUSAL[kind]:
            events.append(MappingRefused(mapping, kind, command.reason))
        elif verb is Verb.BIND_OK and is_socket_path_word(command.args[0]):
            events.append(MappingAccepted(mapping, kind, path=parse_socket_path(command.args[0])))
        elif kind in BOUND:
            host, port = parse_host_port(command.args[0], allow_port_zero=False)
            events.append(MappingAccepted(mapping, kind, host, port))
        else:
            events.append(MappingAccepted(mapping, kind))

    def _on_unmap(self, mapping: int, command: Command, events: list[Event]) -> None:
        # A BIND we refused is already forgotten; UNMAP may cross that refusal.
        kind = self._mappings.forget(mapping)
        self._queue_command(mapping, Verb.UNMAP_OK)
        if kind is not None:
            events.append(MappingCancelled(mapping, kind))

    def _on_unmap_ok(self, mapping: int, command: Command, events: list[Event]) -> None:
        self._mappings.unmapped(mapping)  # no SYN for it can follow: the server sent this last

    def _on_syn(self, stream_id: int, command: Command, events: list[Event]) -> None:
        if stream_id % 2 == self._local_parity:
            raise ProtocolError(f"SYN for stream {stream_id}, an id this side allocates")
        if stream_id <= self._highest_peer_id:
            raise ProtocolError(f"SYN reuses stream id {stream_id}")
        self._highest_peer_id = stream_id
        mapping = parse_decimal(command.args[0], "mapping", 1, MAX_STREAM_ID)
        kind, verdict = self._mappings.peer_stream(mapping)
        target = None
        if kind is DYNAMIC:
            if len(command.args) != 2:
                raise ProtocolError(f"SYN on dynamic mapping {mapping} names no target")
            target = parse_host_port(command.args[1], allow_port_zero=False)
        elif len(command.args) != 1:
            raise ProtocolError(f"SYN names a target on {kind.name} mapping {mapping}")
        if verdict is not StreamVerdict.OPEN:
            refusal = Failure(FailureClass.FAILED, f"mapping {mapping} was {verdict.value}")
            self._queue_command(stream_id, Verb.SYN_ERROR, refusal.wire)
            return
        if len(self._streams) >= self._max_streams:
            self.stream_limit_refusals += 1
            limit = Failure(FailureClass.LIMIT, f"too many streams (limit {self._max_streams})")
            self._queue_command(stream_id, Verb.SYN_ERROR, limit.wire)
            return
        if self._pending >= self._max_pending:
            self.stream_limit_refusals += 1
            pending = f"too many pending connections (limit {self._max_pending})"
            limit = Failure(FailureClass.LIMIT, pending)
            self._queue_command(stream_id, Verb.SYN_ERROR, limit.wire)
            return
        assert self.peer_window is not None
        stream = Stream(stream_id, _S.SYN_RECEIVED, mapping, self.peer_window, self.window)
        stream.pending = True
        self._pending += 1
        self._streams[stream_id] = stream
        events.append(StreamRequested(stream_id, mapping, target))

    def _on_stream_command(self, stream_id: int, command: Command, events: list[Event]) -> None:
        verb = command.verb
        stream = self._tracked(stream_id, verb.value)
        if stream is None:
            return
        if verb is Verb.ACK:
            count = parse_decimal(command.args[0], "ACK count", 1, MAX_STREAM_ID)
            stream.state = next_state(stream.state, _I.RECV_ACK)
            stream.send.acknowledge(count)
            if self._log.keeping:  # the peer wrote them, so it has them: free the retained copy
                stream.acked += count
                newly = stream.acked - stream.released
                if newly > 0:
                    if newly > self._output.retained(stream.slot):
                        raise ProtocolError(f"ACK on stream {stream_id} for bytes not yet sent")
                    self._output.acknowledge(stream.slot, newly)
                    stream.released = stream.acked
            stream.blocked_reported = False
            events.append(CreditGranted(stream_id))
        elif verb is Verb.SYN_OK:
            stream.state = next_state(stream.state, _I.RECV_SYN_OK)
            assert self.peer_window is not None
            stream.send.size = self.peer_window
            events.append(StreamAccepted(stream_id))
        elif verb is Verb.SYN_ERROR:
            stream.state = next_state(stream.state, _I.RECV_SYN_ERROR)
            self._remove(stream)
            events.append(StreamRefused(stream_id, command.reason))
        elif verb is Verb.FIN:
            stream.state = next_state(stream.state, _I.RECV_FIN)
            if stream.state is _S.CLOSED:
                self._remove(stream, clean=True)
            events.append(StreamEnded(stream_id))
        else:  # RST
            stream.state = next_state(stream.state, _I.RECV_RST)
            self._remove(stream)
            self._reset_in_read.add(stream_id)
            events.append(StreamReset(stream_id, command.reason))

    def _tracked(self, stream_id: int, what: str) -> Stream | None:
        """The stream a command names, or None for one already closed (ignored;
        a stream never opened is a violation)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            self._unknown_stream(stream_id, what)
        return stream

    def _on_blocked(self, stream_id: int, command: Command, events: list[Event]) -> None:
        stream = self._tracked(stream_id, "BLOCKED")
        if stream is None:
            return
        window = parse_decimal(command.args[0], "BLOCKED window", MIN_WINDOW, MAX_WINDOW)
        stream.state = next_state(stream.state, _I.RECV_BLOCKED)
        if window == stream.recv.size:  # else we grew it since: WINDOW is on its way
            events.append(PeerBlocked(stream_id, window))

    def _on_window(self, stream_id: int, command: Command, events: list[Event]) -> None:
        stream = self._tracked(stream_id, "WINDOW")
        if stream is None:
            return
        window = parse_decimal(command.args[0], "WINDOW size", MIN_WINDOW, MAX_WINDOW)
        stream.state = next_state(stream.state, _I.RECV_WINDOW)
        send = stream.send
        if window <= send.size:
            raise ProtocolError(
                f"WINDOW {window} does not grow stream {stream_id}'s window of {send.size}"
            )
        send.size = window
        stream.blocked_reported = False
        if stream.slot >= 0:
            self._output.set_limit(stream.slot, window)
        events.append(CreditGranted(stream_id))

    def _settle(self, stream: Stream) -> None:
        """A peer-opened stream got its answer (or died): it no longer counts as pending."""
        if stream.pending:
            stream.pending = False
            self._pending -= 1

    def _remove(self, stream: Stream, *, clean: bool = False) -> None:
        """Forget a closed stream.  After a clean close (both FINs) with resume on,
        its ring stays as a tombstone until a barrier confirms the peer got its
        last bytes and FIN: a cut could still lose them."""
        self._settle(stream)
        self._window_growth -= stream.recv.size - self.window
        self._tell_plane_growth()
        stream.state = _S.CLOSED
        del self._streams[stream.id]
        self._fins_by_id.pop(stream.id, None)
        if stream.slot >= 0:
            if clean and self._log.keeping:
                self._log.bury(stream)
                self._want_barrier()
                return
            self._output.close(stream.slot)
            stream.slot = -1

    # ------------------------------------------------------ local: mappings

    def request_connect(self, mapping: int, host: str, port: int) -> None:
        """Client: declare an ``-L`` mapping whose streams the server connects to host:port."""
        self._request_mapping(mapping, CONNECT, format_host_port(host, port))

    def request_bind(self, mapping: int, host: str, port: int) -> None:
        """Client: ask the server to listen on host:port for an ``-R`` mapping."""
        self._request_mapping(mapping, BIND, format_host_port(host, port))

    def request_connect_unix(self, mapping: int, path: str) -> None:
        """Client: declare an ``-L`` mapping whose streams the server connects to the
        Unix socket at ``path`` (an extension: an older server fails the channel)."""
        self._request_mapping(mapping, CONNECT, encode_socket_path(path))

    def request_bind_unix(self, mapping: int, path: str) -> None:
        """Client: ask the server to listen on the Unix socket ``path`` for an ``-R``."""
        self._request_mapping(mapping, BIND, encode_socket_path(path))

    def request_udp_connect(self, mapping: int, host: str, port: int) -> None:
        """Client: declare an ``-L udp:`` mapping: its datagrams go to host:port from the
        server (an extension: an older server fails the channel)."""
        self._request_mapping(mapping, UDP_CONNECT, format_host_port(host, port))

    def request_udp_bind(self, mapping: int, host: str, port: int) -> None:
        """Client: ask the server to receive datagrams on host:port for an ``-R udp:``."""
        self._request_mapping(mapping, UDP_BIND, format_host_port(host, port))

    def request_dynamic(self, mapping: int) -> None:
        """Client: declare a ``-D`` mapping, whose streams each name their target in SYN."""
        self._request_mapping(mapping, DYNAMIC)

    def _request_mapping(self, mapping: int, kind: MappingKind, *where: str) -> None:
        """``where``: the request's one word (``host:port`` or a socket path), or none."""
        self._mappings.declare(mapping, kind)
        self._queue_mapping_command(mapping, REQUEST_VERB[kind], *where)

    def cancel_mapping(self, mapping: int) -> None:
        """Client: UNMAP, the forward is removed.  Its streams carry on; a SYN that
        crosses the UNMAP is refused; the server's UNMAP OK ends the mapping."""
        if self._mappings.cancel(mapping) and self.state is not ChannelState.FAILED:
            self._queue_mapping_command(mapping, Verb.UNMAP)

    def _queue_mapping_command(self, mapping: int, verb: Verb, *args: str) -> None:
        if (
            self._handshake.credentials is not None
            and self.state is not ChannelState.OPEN
            and not self._output_detached
        ):
            # Nothing about our mappings goes to a server before it proved itself.
            frame = encode_frame(mapping, KIND_COMMAND, format_command(verb, *args))
            self._mappings_before_auth.append(frame)
            return
        self._queue_command(mapping, verb, *args)

    def accept_connect(self, mapping: int) -> None:
        self._reply_mapping(mapping, CONNECT, accepted=True)

    def refuse_connect(self, mapping: int, reason: str) -> None:
        self._reply_mapping(mapping, CONNECT, reason, accepted=False)

    def accept_bind(self, mapping: int, host: str, port: int, kind: MappingKind = BIND) -> None:
        """Server: BIND OK (or UDP-BIND OK), telling the client the address bound."""
        self._reply_mapping(mapping, kind, format_host_port(host, port), accepted=True)

    def accept(self, mapping: int, kind: MappingKind) -> None:
        """Server: the OK of a request whose answer names nothing (all but binds)."""
        self._reply_mapping(mapping, kind, accepted=True)

    def refuse(self, mapping: int, kind: MappingKind, reason: str) -> None:
        """Server: refuse a request of any kind with ``reason``."""
        self._reply_mapping(mapping, kind, reason, accepted=False)

    def accept_bind_unix(self, mapping: int, path: str) -> None:
        """Server: BIND OK for a Unix socket it now listens on."""
        self._reply_mapping(mapping, BIND, encode_socket_path(path), accepted=True)

    def refuse_bind(self, mapping: int, reason: str) -> None:
        self._reply_mapping(mapping, BIND, reason, accepted=False)

    def accept_dynamic(self, mapping: int) -> None:
        self._reply_mapping(mapping, DYNAMIC, accepted=True)

    def refuse_dynamic(self, mapping: int, reason: str) -> None:
        self._reply_mapping(mapping, DYNAMIC, reason, accepted=False)

    def _reply_mapping(self, mapping: int, kind: MappingKind, *args: str,
                       accepted: bool) -> None:  # fmt: skip
        self._mappings.answer(mapping, kind, accepted=accepted)
        self._queue_command(mapping, ACCEPTANCE[kind] if accepted else REFUSAL[kind], *args)

    # ------------------------------------------------------- local: streams

    def open_stream(self, mapping: int, target: tuple[str, int] | None = None) -> int:
        """Send SYN for a new stream of ``mapping``; return its id.  A dynamic
        mapping's stream names its ``target``; the others must not."""
        self._mappings.own_stream(mapping, names_target=target is not None)
        if target is not None:
            try:  # what the peer would fail the channel for
                parse_host_port(format_host_port(*target), allow_port_zero=False)
            except ProtocolError as exc:
                raise LocalProtocolError(f"target {target!r}: {exc}") from None
        if not self.can_open_stream():
            raise LocalProtocolError("cannot open another stream on this channel")
        stream_id = self._next_id
        self._next_id += 2
        if self._output_detached:
            self._opened_while_detached += 1
        self._streams[stream_id] = Stream(
            stream_id, _S.SYN_SENT, mapping, self.peer_window or 0, self.window
        )
        if target is None:
            self._queue_command(stream_id, Verb.SYN, mapping)
        else:
            self._queue_command(stream_id, Verb.SYN, mapping, format_host_port(*target))
        return stream_id

    def _stream(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return stream

    def _answerable(self, stream_id: int) -> Stream | None:
        """The stream a peer's SYN opened, or None if it is gone since: the peer reset
        it, or the channel failed, later in the same read as the SYN (the driver
        handles a read's events after the session has taken in all of it).  Any
        other stream not open is the driver's mistake."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if self.state is ChannelState.FAILED or stream_id in self._reset_in_read:
                return None
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return stream

    def accept_stream(self, stream_id: int) -> bool:
        """SYN OK: the local connection for a peer's SYN is established.  False if
        the stream is gone meanwhile (``_answerable``): close the connection."""
        stream = self._answerable(stream_id)
        if stream is None:
            return False
        stream.state = next_state(stream.state, _I.SEND_SYN_OK)
        self._settle(stream)
        self._queue_command(stream_id, Verb.SYN_OK)
        return True

    def refuse_stream(self, stream_id: int, reason: str) -> bool:
        """SYN ERROR: the local connection for a peer's SYN failed.  False if the
        stream is gone meanwhile (``_answerable``): nothing to answer."""
        stream = self._answerable(stream_id)
        if stream is None:
            return False
        stream.state = next_state(stream.state, _I.SEND_SYN_ERROR)
        self._remove(stream)
        self._queue_command(stream_id, Verb.SYN_ERROR, reason)
        return True

    def reset_stream(self, stream_id: int, reason: str) -> None:
        """Abort a stream (RST); a no-op if it is already closed."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.state = next_state(stream.state, _I.SEND_RST)
        self._remove(stream)
        self._queue_command(stream_id, Verb.RST, reason)

    def outbound_space(self, stream_id: int) -> int:
        """How many bytes may be read from the local socket for this stream now."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.fin_pending or stream.state not in SENDING_STATES:
            return 0
        return stream.send.size - stream.send.unacked

    def outbound_slot(self, stream_id: int) -> int:
        """The stream's send ring, opened now if it has none yet (the data plane
        reads into it)."""
        stream = self._stream(stream_id)
        if stream.slot < 0:
            stream.slot = self._output.open(stream_id, max(stream.send.size, 1))
        return stream.slot

    def outbound_buffer(self, stream_id: int, count: int) -> list[memoryview]:
        """Views of up to ``count`` free outbound bytes to ``recv_into``.

        ``count`` must not exceed ``outbound_space``; fewer bytes may be offered while
        the stream's ring is still small (it grows when reads fill it)."""
        stream = self._streams.get(stream_id)  # _stream() inlined: a call per read
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        if stream.slot < 0:
            stream.slot = self._output.open(stream_id, max(stream.send.size, 1))
        return self._output.reserve(stream.slot, count)

    def outbound_added(self, stream_id: int, count: int) -> None:
        """Account ``count`` bytes received into ``outbound_buffer``."""
        if count <= 0:
            return
        stream = self._streams.get(stream_id)  # _stream() inlined: a call per read
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        if stream.fin_pending:
            raise LocalProtocolError("data after end_stream")
        if stream.state not in SENDING_STATES:  # data keeps a valid state
            next_state(stream.state, _I.SEND_DATA)  # raises
        send = stream.send
        send.consume(count)
        stream.written += count
        self._output.commit(stream.slot, count)
        if send.unacked >= send.size and not stream.blocked_reported:
            # The window, not the local socket, stops us: say so, so the peer
            # can grow it (once per ACK at most).
            stream.blocked_reported = True
            self._report_blocked(stream)

    def send_blocked(self, stream_id: int) -> None:
        """The data plane filled the stream's send window (and set
        ``blocked_reported``): send BLOCKED."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state in SENDING_STATES:
            self._report_blocked(stream)

    def _report_blocked(self, stream: Stream) -> None:
        stream.state = next_state(stream.state, _I.SEND_BLOCKED)
        self._queue_command(stream.id, Verb.BLOCKED, stream.send.size)

    def send_data(self, stream_id: int, data: bytes) -> bool:
        """Copy ``data`` into the stream's outbound ring (a SOCKS client's first
        bytes, tests and tools); False if the stream is gone (reset by the peer, or
        the channel failed, in the read that accepted it)."""
        if stream_id not in self._streams and (
            self.state is ChannelState.FAILED or stream_id in self._reset_in_read
        ):
            return False
        offset = 0
        while offset < len(data):
            written = 0
            for view in self.outbound_buffer(stream_id, len(data) - offset):
                view[:] = data[offset : offset + len(view)]
                offset += len(view)
                written += len(view)
            self.outbound_added(stream_id, written)
        return True

    def end_stream(self, stream_id: int) -> None:
        """The local socket hit EOF: send FIN once all buffered data is out."""
        stream = self._stream(stream_id)
        if stream.fin_pending:
            return
        if stream.state not in SENDING_STATES:
            next_state(stream.state, _I.SEND_FIN)  # raises with a clear message
        if stream.slot < 0:
            if not self._log.keeping:
                self._send_fin(stream)  # nothing was ever buffered: FIN can go at once
                return
            # Resume on: a FIN leaves from the ring, whose tombstone can send it again.
            stream.slot = self._output.open(stream_id, max(stream.send.size, 1))
        stream.fin_pending = True
        self._fins_by_id[stream_id] = stream
        self._output.finish(stream.slot)

    def _send_fin(self, stream: Stream) -> None:
        stream.state = next_state(stream.state, _I.SEND_FIN)
        self._queue_command(stream.id, Verb.FIN)
        if stream.state is _S.CLOSED:
            self._remove(stream)

    def _fin_appended(self, stream_id: int) -> None:
        """The queue wrote this stream's FIN right after its last data byte."""
        stream = self._fins_by_id.pop(stream_id, None)
        if stream is None:  # a FIN sent again after a resume: the state already has it
            if self._log.fin_resent(stream_id, self._output):
                self._want_barrier()
            return
        stream.fin_pending = False
        stream.state = next_state(stream.state, _I.SEND_FIN)
        if stream.state is _S.CLOSED:
            self._remove(stream, clean=True)

    def grow_window(self, stream_id: int, blocked_at: int) -> int:
        """Double the stream's receive window (WINDOW) after ``PeerBlocked``, up to
        ``max_window`` and within the channel's ``window_budget``.  The caller
        asks only when its local socket keeps up.  ``blocked_at`` is the event's
        window: a second BLOCKED read in the same batch as the first is stale
        once the first has grown the window.  Returns the new window, or 0 when
        it stays as it is."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state not in RECEIVING_STATES:
            return 0
        if stream.recv.size != blocked_at:
            return 0
        recv = stream.recv
        grown = min(2 * recv.size, self._max_window)
        extra = grown - recv.size
        if extra <= 0 or self._window_growth + extra > self._window_budget:
            return 0
        stream.state = next_state(stream.state, _I.SEND_WINDOW)
        self._window_growth += extra
        self._tell_plane_growth()
        recv.grow(grown)
        self._queue_command(stream_id, Verb.WINDOW, grown)
        return grown

    @property
    def window_growth(self) -> int:
        """Receive-window growth granted and not yet returned by closed streams."""
        return self._window_growth

    def inbound_delivered(self, stream_id: int, count: int) -> bool:
        """``count`` bytes of received data were written to the local socket;
        returns whether that queued an ACK (output to send)."""
        stream = self._streams.get(stream_id)
        if stream is None or count <= 0:
            return False
        return self._acknowledge(stream, stream.recv.delivered(count))

    def ack_due(self, stream_id: int, count: int) -> bool:
        """The data plane counted ``count`` delivered bytes off the receive window
        (``ReceiveWindow.delivered`` in C): tell the peer; returns whether an ACK
        was queued."""
        stream = self._streams.get(stream_id)
        return stream is not None and self._acknowledge(stream, count)

    def _acknowledge(self, stream: Stream, count: int) -> bool:
        if count and stream.state is not _S.HALF_CLOSED_REMOTE:
            # After the peer's FIN nothing more will come, so no ACK is owed.
            stream.state = next_state(stream.state, _I.SEND_ACK)
            self._queue_command(stream.id, Verb.ACK, count)
            return True
        return False

    # ----------------------------------------------------------------- output

    def _queue_command(self, frame_id: int, verb: Verb, *args: str | int) -> None:
        if self.state is ChannelState.FAILED:
            return  # after ERROR the peer must get nothing more (late replies are dropped)
        frame = encode_frame(frame_id, KIND_COMMAND, format_command(verb, *args))
        if self._plane is not None:
            self._plane.hold_output()  # control frames go first, in the driver's flush
        keeping = self._log.keeping
        if keeping and VERBS[verb].logged:
            self._log_frame(frame)
            if self._output_detached and self.state is not ChannelState.OPEN:
                return  # sent when the peer's table says it lacks it
        if not self._output_detached:
            self._output.queue_control(frame)
        elif keeping or self.state is not ChannelState.DISCONNECTED:
            self._exchange_out += frame
        # else: the session gave up being resumable while disconnected; it ends on
        # the next connection attempt, and nothing queued now may go out first

    def _fold_plane_acks(self) -> None:
        """Log the ACKs the data plane sent itself, in the order it sent them.  It
        sends one only while nothing of ours is queued, so they come after every
        command logged before and before any logged after: the wire's order, which
        is the numbering the peer's resume table counts in."""
        plane = self._plane
        if plane is None:
            return
        acks = plane.take_acks()
        if acks and self._log.keeping:
            for stream_id, count in acks:
                body = format_command(Verb.ACK, count)
                self._record_frame(encode_frame(stream_id, KIND_COMMAND, body))

    def _log_frame(self, frame: bytes) -> None:
        """Keep a sent command until a barrier confirms it (a resume replays it)."""
        self._fold_plane_acks()
        self._record_frame(frame)

    def _record_frame(self, frame: bytes) -> None:
        log = self._log
        log.record(frame)
        if log.due:
            self._want_barrier()
            overflow = log.overflow
            if overflow:
                self._give_up_resuming(overflow)

    def has_output(self) -> bool:
        if self._output_detached:
            return bool(self._exchange_out) or (
                self.state is ChannelState.OPEN and self._output.has_output()
            )
        return self._output.has_output()

    def output_views(self) -> list[memoryview]:
        """The bytes to ``sendmsg`` now; report how many went with ``output_sent``."""
        if self._output_detached:
            if self._exchange_out:
                return [memoryview(bytes(self._exchange_out))]
            if self.state is not ChannelState.OPEN:
                return []
            self._output_detached = False  # the resume exchange is out: data may follow
        output = self._output
        for stream_id in output.fill():
            self._fin_appended(stream_id)
        log = self._log
        if log.count_send() and log.barrier is None and log.keeping:
            self._send_barrier()
        pending = output.pending()
        return [pending] if len(pending) else []

    @property
    def receive_state(self) -> object | None:
        """The decoder's cursor in C (the compiled codec's ``rmux_rx``), for the data
        plane to read the channel into while the channel is open and trusted; None
        otherwise, and with the Python codec."""
        if not self._trusted or self.state is not ChannelState.OPEN or self._output_detached:
            return None
        rx: object | None = getattr(self._decoder, "rx", None)
        return rx

    @property
    def output_attached(self) -> bool:
        """Output flows through the queue (not the resume exchange's side buffer)."""
        return not self._output_detached

    def sent_directly(self, sends: int) -> bool:
        """The data plane filled the output and sent it ``sends`` times itself (what
        ``output_views`` and ``output_sent`` do): count them for the resume log;
        returns whether that queued a barrier."""
        log = self._log
        if sends and log.count_send(sends) and log.barrier is None and log.keeping:
            self._send_barrier()
            return True
        return False

    @property
    def sends_before_barrier(self) -> int:
        """How many sends the data plane may make before it reports them."""
        return self._log.sends_before_barrier()

    def fin_sent(self, stream_id: int) -> None:
        """The data plane's fill wrote the stream's FIN after its last byte."""
        self._fin_appended(stream_id)

    def output_sent(self, count: int) -> None:
        """Account ``count`` bytes of the last ``output_views`` as sent."""
        if self._output_detached:
            del self._exchange_out[:count]
            if not self._exchange_out and self.state is ChannelState.OPEN:
                self._attach_output()
            return
        self._output.sent(count)

    def _attach_output(self) -> None:
        """The resume exchange is out: commands and data flow through the queue again."""
        self._output_detached = False
        self._exchange_own = 0
        if self._log.wanted:
            self._want_barrier()

    def data_to_send(self) -> bytes:
        """Everything queued, as one bytes object (for tests and tools)."""
        chunks = []
        while self.has_output():
            views = self.output_views()
            if not views:
                break
            chunk = b"".join(views)
            chunks.append(chunk)
            self.output_sent(len(chunk))
        return b"".join(chunks)
