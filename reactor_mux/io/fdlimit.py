"""The process's descriptor limit: raised to what it may be, and what it allows.

A server holds one descriptor per channel, and one more per ``-R`` listener
(two for ``localhost``), per open stream and per UDP socket.  Distributions start
processes with a soft ``RLIMIT_NOFILE`` of 1024 and a hard one far above: a
server of thousands of clients needs the soft limit raised to the hard one, which
any process may do (ssh and nginx do the same); past the hard limit only the
administrator can go (``ulimit -Hn``, systemd's ``LimitNOFILE=``).
"""

from __future__ import annotations

import resource
from pathlib import Path

NR_OPEN = Path("/proc/sys/fs/nr_open")
"""The kernel's ceiling, for a hard limit of "unlimited"."""
NR_OPEN_DEFAULT = 1 << 20


def raise_to_hard() -> tuple[int, int]:
    """Raise the soft limit to the hard one; (before, after).  A limit that cannot
    be raised stays as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(NR_OPEN.read_text())
        except (OSError, ValueError):
            target = NR_OPEN_DEFAULT
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


def soft_limit() -> int | None:
    """The descriptors this process may open now (None: unlimited)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft
