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
