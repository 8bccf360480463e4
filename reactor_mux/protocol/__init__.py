"""The sans-I/O protocol core: frames, commands, stream states, windows.

Nothing in this package imports ``socket``, ``selectors`` or ``time``: it is
fed bytes and asked for bytes, and it reports what happened as events.  The
reactor (``reactor_mux.io.reactor`` and friends) moves bytes between sockets and
this core.  That split lets the protocol be tested exhaustively without a
network, the way h11 and h2 are.
"""
