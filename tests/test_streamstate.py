"""The stream state table: every (state, input) pair is legal or an error."""

from __future__ import annotations

import itertools

import pytest

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError
from reactor_mux.protocol.streamstate import (
    TRANSITIONS,
    StreamInput,
    StreamState,
    next_state,
)

pytestmark = pytest.mark.codec_independent

PAIRS = list(itertools.product(StreamState, StreamInput))


@pytest.mark.parametrize("state,event", PAIRS, ids=[f"{s.value}/{i.value}" for s, i in PAIRS])
def test_every_pair_is_legal_or_the_right_error(state, event):
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
        return
    error = ProtocolError if event.from_peer else LocalProtocolError
    with pytest.raises(error, match=state.value):
        next_state(state, event)


def test_closed_accepts_nothing():
    assert not any(state is StreamState.CLOSED for state, _ in TRANSITIONS)


def test_every_live_state_can_be_reset_both_ways():
    for state in StreamState:
        if state is StreamState.CLOSED:
            continue
        assert next_state(state, StreamInput.SEND_RST) is StreamState.CLOSED
        assert next_state(state, StreamInput.RECV_RST) is StreamState.CLOSED


def test_half_close_paths():
    s = StreamState.OPEN
    assert (
        next_state(next_state(s, StreamInput.SEND_FIN), StreamInput.RECV_FIN) is StreamState.CLOSED
    )
    assert (
        next_state(next_state(s, StreamInput.RECV_FIN), StreamInput.SEND_FIN) is StreamState.CLOSED
    )
    # after our FIN we may still receive and acknowledge; after theirs we may still send
    hcl = next_state(s, StreamInput.SEND_FIN)
    assert next_state(hcl, StreamInput.RECV_DATA) is hcl
    hcr = next_state(s, StreamInput.RECV_FIN)
    assert next_state(hcr, StreamInput.SEND_DATA) is hcr
    with pytest.raises(ProtocolError):
        next_state(hcr, StreamInput.RECV_DATA)  # data after the peer's FIN
