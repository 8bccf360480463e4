"""A local sshd and an ``ssh -N -L`` through it: the baseline users would run instead.

Everything lives in a temporary directory: host key, user key, authorized
keys, sshd_config.  The cipher is pinned to ``aes128-gcm@openssh.com`` (what
OpenSSH picks on hardware with AES instructions) and compression is off, so
the comparison with reactor-mux over TLS is cipher against cipher.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CIPHER = "aes128-gcm@openssh.com"


def free_loopback_port() -> tuple[int, socket.socket]:
    """A port held by a bound socket until the caller closes it."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder.getsockname()[1], holder


def available() -> bool:
    return bool(shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) and bool(
        shutil.which("ssh")
    )


class LocalSsh:
    """sshd on 127.0.0.1 and one ``ssh -N -L PORT:127.0.0.1:TARGET ...`` through it,
    with a forward per target (``ports[i]`` reaches ``targets[i]``)."""

    def __init__(self, targets: list[int]) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-ssh-"))
        os.chmod(self.directory, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.directory / "host")], check=True)
        subprocess.run([*keygen, "-f", str(self.directory / "user")], check=True)
        authorized = self.directory / "authorized_keys"
        shutil.copy(self.directory / "user.pub", authorized)
        os.chmod(authorized, 0o600)
        sshd_port, sshd_holder = free_loopback_port()
        config = self.directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{sshd_port}\n"
            f"HostKey {self.directory / 'host'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
            f"Ciphers {CIPHER}\nCompression no\nStrictModes no\nLogLevel ERROR\n"
            f"PidFile {self.directory / 'sshd.pid'}\n"
        )
        sshd_holder.close()  # sshd (no SO_REUSEADDR semantics we control) binds it now
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        self.sshd = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)],
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_connectable(sshd_port, self.sshd)
        self.ports = []
        forwards = []
        for target in targets:
            port, holder = free_loopback_port()
            holder.close()
            self.ports.append(port)
            forwards += ["-L", f"127.0.0.1:{port}:127.0.0.1:{target}"]
        self.ssh = subprocess.Popen(
            ["ssh", "-N", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", f"Ciphers={CIPHER}",
             "-o", "Compression=no", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
             "-i", str(self.directory / "user"), "-p", str(sshd_port), *forwards,
             "root@127.0.0.1"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for port in self.ports:
            _wait_connectable(port, self.ssh)

    @property
    def pids(self) -> tuple[int, ...]:
        """ssh and the sshd processes serving it (the listener forks per login)."""
        found: list[int] = []
        parents = [self.sshd.pid]
        while parents:
            parent = parents.pop()
            listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)],
                                    capture_output=True, text=True).stdout  # fmt: skip
            children = [int(pid) for pid in listed.split()]
            found += children
            parents += children
        return (self.ssh.pid, self.sshd.pid, *found)

    def close(self) -> None:
        for proc in (self.ssh, self.sshd):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait_connectable(port: int, proc: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
