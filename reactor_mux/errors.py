"""Errors that end a process before its reactor runs."""

from __future__ import annotations


class StartupError(Exception):
    """The process cannot do what it was asked (a port cannot be bound, nothing to
    forward): one line, exit status 1."""
