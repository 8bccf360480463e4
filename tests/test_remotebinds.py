"""The client's ``-R`` requests (remotebinds.py) on their own, with a fake clock and
no sockets: the port each BIND asks for (an ``-R 0`` keeps its port across
reconnects), whether and when a refused one is asked again, and that a retry
dies with its channel or its forward."""

from __future__ import annotations

import random

import pytest
from fakeclock import FakeClock
from inprocess import Owner

from reactor_mux.protocol.failures import FailureClass
from reactor_mux.roles.remotebinds import AskAgain, RemoteBinds
from reactor_mux.roles.specs import ForwardKind, parse_forward

pytestmark = pytest.mark.codec_independent

IN_USE = FailureClass.UNAVAILABLE
"""A refusal that may pass."""
FORBIDDEN = FailureClass.FORBIDDEN
"""One that may not."""
ANY_PORT = parse_forward(ForwardKind.REMOTE, "0:localhost:22")
FIXED_PORT = parse_forward(ForwardKind.REMOTE, "9000:localhost:22")


class NoJitter(random.Random):
    """Every backoff delay is its ceiling, so the test can name it."""

    def uniform(self, a: float, b: float) -> float:
        return b


def binds(clock: FakeClock) -> RemoteBinds:
    return RemoteBinds(clock, Owner(), 0.5, 30.0, NoJitter())


def test_a_fixed_port_is_always_asked_for_as_written():
    remote = binds(FakeClock())
    assert remote.port_to_ask(1, FIXED_PORT) == 9000
    assert remote.accepted(1, FIXED_PORT, 9000) is None
    assert remote.port_to_ask(2, FIXED_PORT) == 9000


def test_an_any_port_forward_asks_for_the_port_it_had_after_a_reconnect():
    remote = binds(FakeClock())
    assert remote.port_to_ask(1, ANY_PORT) == 0, "the first time, any port"
    assert remote.accepted(1, ANY_PORT, 40000) is None, "nothing to warn about"
    remote.channel_closed()
    assert remote.port_to_ask(1, ANY_PORT) == 40000
    assert remote.accepted(1, ANY_PORT, 40000) is None


def test_an_any_port_forward_whose_old_port_is_taken_asks_for_any_port_at_once():
    remote = binds(FakeClock())
    remote.port_to_ask(1, ANY_PORT)
    remote.accepted(1, ANY_PORT, 40000)
    remote.channel_closed()
    assert remote.port_to_ask(1, ANY_PORT) == 40000
    assert remote.refused(1, ANY_PORT, IN_USE) == AskAgain(taken_port=40000)
    assert remote.port_to_ask(2, ANY_PORT) == 0, "this once, any port"
    assert remote.accepted(2, ANY_PORT, 40001) == 40000, "the port it had before, for a warning"
    remote.channel_closed()
    assert remote.port_to_ask(2, ANY_PORT) == 40001, "and from now on the new one"


def test_a_refusal_that_may_pass_is_asked_again_after_a_backoff_per_forward():
    remote = binds(FakeClock())
    other = parse_forward(ForwardKind.REMOTE, "9001:localhost:22")
    delays = []
    for mapping in range(1, 5):
        remote.port_to_ask(mapping, FIXED_PORT)
        again = remote.refused(mapping, FIXED_PORT, IN_USE)
        assert again is not None and again.taken_port is None
        delays.append(again.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0]
    remote.port_to_ask(5, other)
    assert remote.refused(5, other, IN_USE) == AskAgain(delay=0.5), "its own backoff"
    remote.port_to_ask(6, FIXED_PORT)
    remote.accepted(6, FIXED_PORT, 9000)
    remote.port_to_ask(7, FIXED_PORT)  # on a later channel
    assert remote.refused(7, FIXED_PORT, IN_USE) == AskAgain(delay=0.5), "granted: afresh"


def test_a_refusal_the_server_settings_decide_is_not_asked_again():
    remote = binds(FakeClock())
    remote.port_to_ask(1, FIXED_PORT)
    assert remote.refused(1, FIXED_PORT, FORBIDDEN) is None
    remote.port_to_ask(2, ANY_PORT)
    assert remote.refused(2, ANY_PORT, FORBIDDEN) is None


def test_a_retry_is_called_once_when_due():
    clock = FakeClock()
    remote = binds(clock)
    asked: list[float] = []
    remote.ask_later(1, 2.0, lambda: asked.append(clock.now))
    clock.advance(1.9)
    assert asked == []
    clock.advance(0.2)
    assert asked == [2.0]
    remote.forget(1)  # the retry is over: nothing to cancel
    assert clock.pending == 0


def test_a_retry_dies_with_its_channel_or_its_forward():
    clock = FakeClock()
    remote = binds(clock)
    asked: list[int] = []
    for mapping in (1, 2, 3):
        remote.ask_later(mapping, 1.0, lambda mapping=mapping: asked.append(mapping))
    remote.forget(2)
    clock.advance(1.0)
    assert asked == [1, 3]
    remote.ask_later(4, 1.0, lambda: asked.append(4))
    remote.ask_later(5, 2.0, lambda: asked.append(5))
    remote.channel_closed()
    clock.advance(5.0)
    assert asked == [1, 3]
    assert clock.pending == 0


def test_a_forgotten_request_forgets_the_port_it_asked_for():
    remote = binds(FakeClock())
    remote.port_to_ask(1, ANY_PORT)
    remote.accepted(1, ANY_PORT, 40000)
    remote.channel_closed()
    remote.port_to_ask(2, ANY_PORT)  # asks for 40000
    remote.forget(2)
    assert remote.refused(2, ANY_PORT, IN_USE) == AskAgain(delay=0.5), (
        "a refusal of what it no longer awaits is not about the old port"
    )
