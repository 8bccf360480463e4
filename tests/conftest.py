"""Fixtures for the end-to-end tests (helpers live in tests/support.py)."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from support import EchoServer, HashReplyServer, Tunnel


@pytest.fixture
def tunnel():
    t = Tunnel()
    yield t
    t.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def hash_target():
    server = HashReplyServer()
    yield server
    server.close()


@pytest.fixture
def loop():
    """A reactor running in a background thread (see tests/inprocess.py)."""
    from inprocess import LoopThread

    thread = LoopThread()
    yield thread
    thread.close()
    assert thread.crashed is None, f"the reactor loop crashed: {thread.crashed!r}"


@pytest.fixture
def log_records():
    """Every record the ``reactor_mux`` logger emits during the test."""
    import logging

    from inprocess import LogRecords

    logger = logging.getLogger("reactor_mux")
    handler = LogRecords()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
