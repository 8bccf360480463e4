"""The client's forward table (forwardtable.py) on its own: numbers never used
twice, finding a forward however it is spelled, what status shows for each,
and which refusals stand on the current channel."""

from __future__ import annotations

import pytest

from reactor_mux.roles.forwardtable import ForwardPhase, ForwardState, ForwardTable, same_forward
from reactor_mux.roles.specs import ForwardKind, ForwardSpec, parse_dynamic, parse_forward

pytestmark = pytest.mark.codec_independent


def spec(flag: str) -> ForwardSpec:
    """``-L 8080:db:5432`` as the command line parses it."""
    option, text = flag.split(" ", 1)
    kind = ForwardKind(option[1])
    return parse_dynamic(text) if kind is ForwardKind.DYNAMIC else parse_forward(kind, text)


def test_the_forwards_given_at_start_are_numbered_from_one_in_order():
    local, remote = spec("-L 8080:db:5432"), spec("-R 9000:localhost:22")
    table = ForwardTable([local, remote])
    assert table.mappings == {1: local, 2: remote}
    assert table.specs == [local, remote]
    assert table.new_number() == 3
    assert table.new_number() == 4, "a number is never handed out twice"


def test_a_forward_is_found_however_it_is_spelled():
    table = ForwardTable([spec("-L 8080:db:5432")])
    assert table.find(spec("-L localhost:8080:db:5432")) == 1
    assert table.find(spec("-L 8081:db:5432")) is None
    assert table.find(spec("-R 8080:db:5432")) is None, "another kind is another forward"
    assert same_forward(spec("-D 1080"), spec("-D localhost:1080"))
    assert not same_forward(spec("-D 1080"), spec("-D 0.0.0.0:1080"))


def test_a_forward_added_later_takes_a_fresh_number_and_is_marked_so():
    started = spec("-L 8080:db:5432")
    table = ForwardTable([started])
    added = spec("-R 0:localhost:22")
    mapping = table.new_number()
    table.add(mapping, added)
    assert mapping == 2
    assert table.specs == [started, added]
    assert table.added_later(added)
    assert not table.added_later(started)


def test_a_removed_forward_is_forgotten_and_its_number_not_reused():
    local = spec("-L 8080:db:5432")
    table = ForwardTable([local])
    table.asked(1)
    table.not_asked_again(1)
    assert table.remove(1) == local
    assert table.mappings == {}
    assert table.state == {}
    assert not table.is_refused(1)
    table.add(table.new_number(), local)
    assert table.find(local) == 2
    assert table.remove(2) == local
    assert not table.added_later(local), "added again later, removed again: forgotten"


def test_status_shows_where_each_request_stands():
    table = ForwardTable([spec("-L 8080:db:5432"), spec("-R 9000:localhost:22")])
    table.asked(1)
    table.asked(2)
    assert table.state == {1: ForwardState(ForwardPhase.ASKED), 2: ForwardState(ForwardPhase.ASKED)}
    table.forwarding(1)
    table.refused(2, "port 9000 is in use")
    assert str(table.state[1]) == "forwarding"
    assert str(table.state[2]) == "refused by the server: port 9000 is in use"
    table.asked(2, again=True)
    assert str(table.state[2]) == "asked the server again"
    table.channel_closed()
    assert table.state == {}, "no request stands without a channel"


def test_a_refused_forward_asked_again_moves_to_a_fresh_number():
    local, remote = spec("-L 8080:db:5432"), spec("-R 9000:localhost:22")
    table = ForwardTable([remote, local])
    table.refused(1, "port 9000 is in use")
    mapping = table.renumber(1)
    assert mapping == 3
    assert table.mappings == {2: local, 3: remote}
    assert 1 not in table.state, "the old number's state went with it"
    assert table.find(remote) == 3


def test_a_refusal_that_stands_lasts_until_the_next_channel():
    table = ForwardTable([spec("-L 8080:db:5432"), spec("-D 1080")])
    table.refused(1, "not allowed")
    assert not table.is_refused(1), "refused is what status shows; standing is a choice"
    table.not_asked_again(1)
    assert table.is_refused(1)
    assert not table.is_refused(2)
    table.channel_closed()
    assert table.is_refused(1), "without a channel its connections are still refused for it"
    table.channel_opened()
    assert not table.is_refused(1), "a new channel asks for every forward again"
