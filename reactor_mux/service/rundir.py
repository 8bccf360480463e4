"""Where a process's control socket goes when ``--control`` does not say: the user's
runtime directory, so that ``reactor-mux status`` finds every running process
without anyone having planned for it (as ssh's ControlPath lives in the user's
own directory).

The directory is ``$XDG_RUNTIME_DIR/reactor-mux`` (systemd's per-user tmpfs),
or ``/tmp/reactor-mux-UID`` without it.  It is made with mode 0700 and used only
if it is a real directory, ours, and closed to others: in ``/tmp`` another user
could have made it first.  Each process's socket is ``ROLE-PID.sock`` in it.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from reactor_mux.errors import StartupError

SOCKET_SUFFIX = ".sock"


def runtime_directory() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and Path(base).is_absolute():
        return Path(base) / "reactor-mux"
    return Path("/tmp") / f"reactor-mux-{os.getuid()}"


def prepared_directory() -> Path:
    """The runtime directory, made if need be; StartupError if it cannot be trusted."""
    directory = runtime_directory()
    try:
        parent = os.stat(directory.parent)
        directory.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise StartupError(f"cannot make {directory}: {exc.strerror or exc}") from None
    if parent.st_uid not in (0, os.getuid()):  # its owner could swap our directory out
        raise StartupError(f"{directory.parent} belongs to another user")
    if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
        raise StartupError(f"{directory.parent} may be changed by other users")
    if not stat.S_ISDIR(info.st_mode):
        raise StartupError(f"{directory} is not a directory")
    if info.st_uid != os.getuid():
        raise StartupError(f"{directory} belongs to another user")
    if info.st_mode & 0o077:
        raise StartupError(f"{directory} is open to other users (mode "
                           f"{info.st_mode & 0o777:04o}): chmod 700 it")  # fmt: skip
    return directory


def default_control_path(role: str) -> Path:
    """This process's control socket in the runtime directory (made if need be)."""
    return prepared_directory() / f"{role}-{os.getpid()}{SOCKET_SUFFIX}"


def control_sockets() -> list[Path]:
    """The control sockets in the runtime directory, oldest process first; none when
    the directory does not exist or cannot be trusted."""
    try:
        directory = prepared_directory() if runtime_directory().exists() else None
    except StartupError:
        return []
    if directory is None:
        return []
    found = [path for path in directory.glob(f"*{SOCKET_SUFFIX}") if _is_socket(path)]
    return sorted(found, key=_pid_of)


def abandoned(path: Path) -> bool:
    """The socket's process is gone: connecting is refused and no process has the pid
    its name carries.  A full backlog (a stopped process) or a socket not listening
    yet (one starting) is not abandoned: only this removes a socket."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
        return False
    except ConnectionRefusedError:
        pass
    except OSError:
        return False
    finally:
        probe.close()
    try:
        os.kill(_pid_of(path), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _pid_of(path: Path) -> int:
    try:
        return int(path.name.removesuffix(SOCKET_SUFFIX).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0
