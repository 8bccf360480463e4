"""Fixtures for the tests (helpers live in tests/support.py and tests/inprocess.py).

The README's test command runs the suite twice, once per codec backend.  Tests
marked ``codec_independent`` (the CLI, specs, state tables, the reactor half,
lint and types, the differential tests that import both backends) cannot
behave differently between the passes, so the ``REACTOR_MUX_CODEC=python``
pass leaves them out.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from security_support import pki, secret, tunnel_with_secret  # noqa: F401 - fixtures for all tests
from support import EchoServer, HashReplyServer, PortHolder, Tunnel


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("REACTOR_MUX_CODEC") != "python":
        return
    once = [item for item in items if item.get_closest_marker("codec_independent")]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not item.get_closest_marker("codec_independent")]


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
def reactor():
    """A reactor for the test to run in its own thread (``inprocess.run_until``)."""
    from reactor_mux.io.reactor import Reactor

    loop = Reactor()
    yield loop
    loop.close()


@pytest.fixture
def resolver(reactor):
    from reactor_mux.io.resolver import Resolver

    names = Resolver(reactor)
    yield names
    names.close()


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


@pytest.fixture
def ports():
    """``ports.take()``: a loopback port held for the test (see support.PortHolder):
    refused while nothing listens on it, and nobody else's."""
    holder = PortHolder()
    yield holder
    holder.close()
