"""Flow-control arithmetic: exact subtraction, violations, ACK pacing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError
from reactor_mux.protocol.windows import ReceiveWindow, SendWindow

pytestmark = pytest.mark.codec_independent


def test_ack_subtracts_exactly_what_it_acknowledges():
    """The 2018 prototype reset unacked to 0 on ACK; that lost the bound."""
    window = SendWindow(1000)
    window.consume(600)
    window.acknowledge(100)
    assert window.unacked == 500
    assert window.available == 500
    window.consume(500)
    assert window.available == 0
    with pytest.raises(LocalProtocolError):
        window.consume(1)


def test_ack_for_more_than_outstanding_is_a_protocol_error():
    window = SendWindow(1000)
    window.consume(10)
    with pytest.raises(ProtocolError, match="more than"):
        window.acknowledge(11)


def test_receiving_beyond_the_window_is_a_protocol_error():
    window = ReceiveWindow(1000)
    window.received(1000)
    with pytest.raises(ProtocolError, match="beyond its window"):
        window.received(1)


def test_acks_come_in_quarter_window_steps_after_writing():
    window = ReceiveWindow(1000)
    window.received(1000)
    assert window.delivered(249) == 0
    assert window.delivered(1) == 250
    assert window.unacked == 750
    assert window.delivered(100) == 0
    with pytest.raises(LocalProtocolError):
        window.delivered(651)


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), max_size=60))
def test_sender_and_receiver_never_disagree(steps):
    """Driving both ends together: the sender never exceeds the receiver's window,
    and every byte written eventually frees the sender, with no ACK over-counting."""
    size = 4096
    sender, receiver = SendWindow(size), ReceiveWindow(size)
    in_flight = 0
    for send, write in steps:
        send = min(send, sender.available)
        sender.consume(send)
        receiver.received(send)
        in_flight += send
        write = min(write, in_flight)
        in_flight -= write
        ack = receiver.delivered(write)
        if ack:
            sender.acknowledge(ack)
        assert 0 <= sender.unacked <= size
        assert receiver.unacked == sender.unacked
    # Draining everything always yields enough ACK to keep the sender moving.
    ack = receiver.delivered(in_flight)
    if ack:
        sender.acknowledge(ack)
    assert sender.available >= size - receiver.threshold
