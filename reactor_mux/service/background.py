"""``client -f``: go to the background once every forward is up, as ``ssh -f`` does
with ExitOnForwardFailure.

The process forks before it builds anything.  The parent waits on a pipe: one
byte from the child means every forward is up, and the parent exits 0, leaving
the child running in its own session; the pipe's end without that byte means
the child stopped first (a forward failed, the server refused it), and the
parent exits with the child's status.  The child does the work as the
foreground process would, with standard input and output on /dev/null; its
log goes where the options say (standard error, or ``--log-file``).
"""

from __future__ import annotations

import os
import signal

_READY = b"\0"


class Background:
    """The child's side of the pipe: ``ready()`` lets the waiting parent exit 0."""

    def __init__(self) -> None:
        self._pipe: int | None = None

    def detach(self) -> int | None:
        """Fork.  In the parent, wait and return its exit status; in the child, return
        None and carry on in a new session."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid:
            os.close(write_end)
            return _wait_for(pid, read_end)
        os.close(read_end)
        os.setsid()  # no terminal: its hangup and Ctrl-C are not ours any more
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        self._pipe = write_end
        return None

    def ready(self) -> None:
        """Every forward is up: the parent may exit 0 (once; later calls do nothing)."""
        if self._pipe is None:
            return
        try:
            os.write(self._pipe, _READY)
        except OSError:  # the parent is gone (killed): nobody waits for us
            pass
        os.close(self._pipe)
        self._pipe = None


def _wait_for(pid: int, read_end: int) -> int:
    """The parent: 0 once the child says it is ready, else the child's own status."""
    try:
        said = os.read(read_end, 1)
    except KeyboardInterrupt:  # Ctrl-C before the forwards were up: stop the child too
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    if said == _READY:
        return 0
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's number
