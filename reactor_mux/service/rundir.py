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
        directory.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise StartupError(f"cannot make {directory}: {exc.strerror or exc}") from None
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
