"""The listener in-process: out of descriptors it pauses instead of spinning,
says so once, and accepts again once descriptors are back."""

from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import LogRecords, Owner, run_until

from reactor_mux.io.listener import ACCEPT_PAUSE, Listener
from reactor_mux.io.reactor import Reactor

pytestmark = pytest.mark.codec_independent


HERE = Path(__file__).parent


def highest_fd() -> int:
    return max(int(name) for name in os.listdir("/proc/self/fd"))


def test_out_of_descriptors_the_listener_pauses_then_resumes():
    """RLIMIT_NOFILE is the whole process's: lowered in a pytest-xdist worker, it
    would squeeze whatever else lives there (another test's threads and leftovers,
    xdist's own channel), and they would take the descriptors this test frees.  So
    the squeeze runs in a Python process of its own (``squeeze`` below)."""
    done = subprocess.run(
        [sys.executable, "-c", "import test_listener; test_listener.squeeze()"],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "squeezed, paused once, resumed", done.stdout + done.stderr


def squeeze() -> None:
    """Out of descriptors the listener pauses (says so once, retries quietly), and
    accepts again once descriptors are back.  Lowers this process's RLIMIT_NOFILE:
    run only in a process of its own."""
    records = LogRecords()
    logger = logging.getLogger("reactor_mux")
    logger.addHandler(records)
    logger.setLevel(logging.WARNING)
    reactor = Reactor()
    accepted: list[socket.socket] = []
    listener = Listener(reactor, "127.0.0.1", 0, lambda conn, _peer: accepted.append(conn))
    clients = [socket.socket() for _ in range(3)]  # their descriptors exist before the squeeze
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in records.records if getattr(r, "event", None) == name]

    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest_fd() + 8, hard))
        try:
            while True:  # take every descriptor left under the limit
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        for client in clients:
            client.connect(listener.sock.getsockname())
        run_until(reactor, lambda: listener._watch.mask == 0)  # paused, not spinning
        assert accepted == []
        [paused] = events("accept_paused")
        assert paused.reason.startswith("out of file descriptors")  # type: ignore[attr-defined]

        reactor.call_later(ACCEPT_PAUSE * 3, reactor.stop, Owner())
        reactor.run()  # still starved: retries stay quiet
        assert len(events("accept_paused")) == 1

        for fd in fillers:
            os.close(fd)
        fillers.clear()
        run_until(reactor, lambda: len(accepted) == 3)
        assert len(events("accept_resumed")) == 1
        print("squeezed, paused once, resumed")
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sock in [*clients, *accepted]:
            sock.close()
        listener.close()
        reactor.close()


def test_connections_waiting_in_the_backlog_are_handed_over_before_a_close():
    """Removing a forward closes its listener; clients whose connect already
    succeeded must get their streams, not the reset a close gives the backlog."""
    from reactor_mux.io.listener import ListenerSet

    reactor = Reactor()
    accepted: list[socket.socket] = []
    listeners = ListenerSet(reactor, "127.0.0.1", 0, lambda conn, _peer: accepted.append(conn))
    clients = [socket.create_connection(("127.0.0.1", listeners.port)) for _ in range(70)]
    try:
        listeners.accept_waiting()  # the reactor never ran: all 70 wait in the backlog
        listeners.close()
        assert len(accepted) == 70  # more than one accept batch
        for client, conn in zip(clients, accepted, strict=True):
            client.sendall(b"x")
            conn.setblocking(True)
            assert conn.recv(1) == b"x"
    finally:
        for sock in clients + accepted:
            sock.close()
        reactor.close()
