"""The reactor in-process: timers, interest reconciliation, deferred and threadsafe
calls, the exception guard, and the signal handling it borrows and gives back."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
import weakref

import pytest
from inprocess import Owner, run_until

from reactor_mux.io.reactor import (
    COMPACT_MIN_TIMERS,
    PROCESS,
    READ,
    TIMERS_PER_TURN,
    WRITE,
    IOWatch,
    Reactor,
)

pytestmark = pytest.mark.codec_independent


# ----------------------------------------------------------------- timers


def test_timers_fire_in_due_order(reactor):
    fired: list[str] = []
    owner = Owner()
    reactor.call_later(0.03, lambda: fired.append("c"), owner)
    reactor.call_later(0.01, lambda: fired.append("a"), owner)
    reactor.call_later(0.02, lambda: fired.append("b"), owner)
    reactor.call_later(0.02, lambda: fired.append("b2"), owner)  # same time: in call order
    run_until(reactor, lambda: len(fired) == 4)
    assert fired == ["a", "b", "b2", "c"]


def test_cancel_drops_the_callback_and_what_it_holds(reactor):
    class Big:
        pass

    held = Big()
    ref = weakref.ref(held)
    timer = reactor.call_later(3600, lambda kept=held: print(kept), Owner())
    del held
    gc.collect()
    assert ref() is not None, "a live timer keeps its callback's objects"
    timer.cancel()
    gc.collect()
    assert ref() is None, "a cancelled timer still holds its callback"
    assert reactor.timer_count == 1  # still in the heap, but empty


def test_the_heap_is_compacted_when_most_timers_are_cancelled(reactor):
    owner = Owner()
    timers = [reactor.call_later(3600, lambda: None, owner) for _ in range(2 * COMPACT_MIN_TIMERS)]
    for timer in timers[: COMPACT_MIN_TIMERS // 2]:
        timer.cancel()
    assert reactor.timer_count == 2 * COMPACT_MIN_TIMERS, "compacted too early"
    for timer in timers[COMPACT_MIN_TIMERS // 2 : COMPACT_MIN_TIMERS + 1]:
        timer.cancel()
    assert reactor.timer_count == COMPACT_MIN_TIMERS - 1
    fired: list[int] = []
    reactor.call_later(0, lambda: fired.append(1), owner)
    run_until(reactor, lambda: fired == [1])  # the compacted heap still works


def test_a_cancelled_timer_never_fires(reactor):
    fired: list[str] = []
    owner = Owner()
    timer = reactor.call_later(0.01, lambda: fired.append("cancelled"), owner)
    reactor.call_later(0.02, lambda: fired.append("kept"), owner)
    timer.cancel()
    run_until(reactor, lambda: fired == ["kept"])


# -------------------------------------------------------- I/O registration


def test_watch_reconciles_its_interest_with_the_selector(reactor):
    left, right = socket.socketpair()
    try:
        watch = IOWatch(reactor, left, lambda mask: None, Owner())
        registered = reactor.selector.get_map()
        assert left not in registered
        watch.want(READ)
        assert registered[left].events == READ
        watch.want(READ | WRITE)
        assert registered[left].events == READ | WRITE
        watch.want(WRITE)
        assert registered[left].events == WRITE
        watch.want(0)
        assert left not in registered
        watch.want(READ)
        watch.close()
        assert left not in registered
        watch.want(READ)  # a closed watch stays unregistered
        assert left not in registered
    finally:
        left.close()
        right.close()


def test_an_event_for_a_watch_closed_in_the_same_tick_is_dropped(reactor):
    a_left, a_right = socket.socketpair()
    b_left, b_right = socket.socketpair()
    calls: list[str] = []
    owner = Owner()
    watches: dict[str, IOWatch] = {}

    def on_a(_mask: int) -> None:
        calls.append("a")
        watches["b"].close()

    def on_b(_mask: int) -> None:
        calls.append("b")
        watches["a"].close()

    watches["a"] = IOWatch(reactor, a_left, on_a, owner)
    watches["b"] = IOWatch(reactor, b_left, on_b, owner)
    watches["a"].want(READ)
    watches["b"].want(READ)
    a_right.send(b"x")
    b_right.send(b"x")
    run_until(reactor, lambda: bool(calls))
    assert calls in (["a"], ["b"])  # whichever ran first closed the other
    for sock in (a_left, a_right, b_left, b_right):
        sock.close()


# ----------------------------------------------------------- deferred calls


def test_call_soon_cannot_starve_io(reactor):
    """A callback that keeps re-queuing itself runs once per tick; I/O still gets in."""
    left, right = socket.socketpair()
    spins = 0
    io_seen_after: list[int] = []
    owner = Owner()

    def spin() -> None:
        nonlocal spins
        spins += 1
        reactor.call_soon(spin, owner)

    def on_readable(_mask: int) -> None:
        io_seen_after.append(spins)
        watch.want(0)

    watch = IOWatch(reactor, left, on_readable, owner)
    watch.want(READ)
    reactor.call_soon(spin, owner)
    right.send(b"x")
    run_until(reactor, lambda: bool(io_seen_after))
    assert io_seen_after[0] <= 2
    left.close()
    right.close()


def test_a_crowd_of_due_timers_lets_io_in_every_few(reactor):
    """Issue 26: 10,000 channels' keepalive ticks come due in bursts; run all at once,
    they held active streams for milliseconds.  Due timers run TIMERS_PER_TURN to a
    turn of the loop, with a look at the descriptors between."""
    left, right = socket.socketpair()
    order: list[str] = []
    owner = Owner()

    def on_readable(_mask: int) -> None:
        order.append("io")
        left.recv(16)
        watch.want(0)

    def first() -> None:
        order.append("t")
        right.send(b"x")  # readable from now on

    watch = IOWatch(reactor, left, on_readable, owner)
    watch.want(READ)
    reactor.call_later(0, first, owner)
    for _ in range(2 * TIMERS_PER_TURN + 7):
        reactor.call_later(0, lambda: order.append("t"), owner)
    run_until(reactor, lambda: len(order) == 2 * TIMERS_PER_TURN + 9)
    assert order.index("io") == TIMERS_PER_TURN
    left.close()
    right.close()


def test_a_threadsafe_call_wakes_a_loop_blocked_in_select(reactor):
    ran = threading.Event()
    finished = threading.Event()

    def loop() -> None:
        reactor.run()  # no timers, nothing ready: blocks in select
        finished.set()

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.05)  # give it time to return, were it not blocked
    assert not finished.is_set()

    def both() -> None:
        ran.set()
        reactor.stop()

    reactor.call_soon_threadsafe(both, PROCESS)
    thread.join(5)
    assert ran.is_set() and finished.is_set()


# ----------------------------------------------------------------- the guard


def test_a_raising_callback_closes_its_owner_and_the_loop_goes_on(reactor, caplog):
    caplog.set_level(logging.ERROR, logger="reactor_mux")
    faulty, stubborn = Owner("faulty"), Owner("stubborn", fail_to_close=True)
    after: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    reactor.call_later(0, boom, faulty)  # a timer
    reactor.call_soon(boom, stubborn)  # a deferred call whose owner fails to close
    reactor.call_soon_threadsafe(boom, PROCESS)  # process-wide: only logged
    reactor.call_later(0.01, lambda: after.append("later"), Owner())
    run_until(reactor, lambda: after == ["later"])
    assert faulty.closed_after_bug == 1 and stubborn.closed_after_bug == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("internal error in faulty; closing it") == 1
    assert messages.count("internal error in stubborn; closing it") == 1
    assert messages.count("internal error while closing stubborn") == 1
    assert messages.count("internal error in a process-wide callback; carrying on") == 1
    assert all(r.exc_info for r in caplog.records)


def test_an_io_callback_that_raises_closes_its_owner(reactor, caplog):
    caplog.set_level(logging.ERROR, logger="reactor_mux")
    left, right = socket.socketpair()
    owner = Owner("reader")

    def on_readable(_mask: int) -> None:
        watch.close()  # what a real owner's close does
        raise ValueError("bad read")

    watch = IOWatch(reactor, left, on_readable, owner)
    watch.want(READ)
    right.send(b"x")
    run_until(reactor, lambda: owner.closed_after_bug == 1)
    assert [r.getMessage() for r in caplog.records] == ["internal error in reader; closing it"]
    left.close()
    right.close()


# ------------------------------------------------------------------ signals


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)
def test_signals_run_in_the_loop_and_the_old_handling_comes_back():
    previous_calls: list[int] = []

    def previous(signum: int, _frame: object) -> None:
        previous_calls.append(signum)

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        reactor = Reactor()
        got: list[str] = []
        reactor.add_signal_handler(signal.SIGUSR1, lambda: got.append("usr1"))
        os.kill(os.getpid(), signal.SIGUSR1)
        run_until(reactor, lambda: got == ["usr1"])
        reactor.close()
        assert signal.getsignal(signal.SIGUSR1) is previous
        assert signal.set_wakeup_fd(-1) == -1, "the wakeup fd was not given back"
        os.kill(os.getpid(), signal.SIGUSR1)
        assert previous_calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)
def test_a_burst_of_signals_prints_no_wakeup_warnings(capfd):
    """With the wakeup socket full, CPython warns on stderr for every signal unless
    the fd was set with warn_on_full_buffer=False."""
    old = signal.getsignal(signal.SIGUSR1)
    reactor = Reactor()
    try:
        got: list[int] = []
        reactor.add_signal_handler(signal.SIGUSR1, lambda: got.append(1))
        try:
            while True:  # fill the wakeup socket
                reactor._wakeup_write.send(b"\0" * 4096)
        except BlockingIOError:
            pass
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGUSR1)
        run_until(reactor, lambda: len(got) == 3)
    finally:
        reactor.close()
        signal.signal(signal.SIGUSR1, old)
    assert "wakeup fd" not in capfd.readouterr().err
