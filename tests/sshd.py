"""A throwaway sshd on 127.0.0.1, for tests that need a real ssh session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
SSH = shutil.which("ssh")


class LocalSshd:
    """sshd with a fresh host key, accepting one fresh user key for root."""

    def __init__(self) -> None:
        assert SSHD is not None
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-sshd-"))
        os.chmod(self.directory, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-f", str(self.directory / "host")], check=True)
        subprocess.run([*keygen, "-f", str(self.directory / "user")], check=True)
        authorized = self.directory / "authorized_keys"
        shutil.copy(self.directory / "user.pub", authorized)
        os.chmod(authorized, 0o600)
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        self.port = holder.getsockname()[1]
        holder.close()
        config = self.directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {self.directory / 'host'}\n"
            f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            f"StrictModes no\nLogLevel ERROR\nPidFile {self.directory / 'sshd.pid'}\n"
        )
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("sshd did not start") from None
                time.sleep(0.05)

    def ssh_command(self, port: int, remote: str) -> list[str]:
        """``ssh`` to 127.0.0.1:``port`` (a forward to this sshd) running ``remote``."""
        assert SSH is not None
        return ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=0", "-i", str(self.directory / "user"),
                "-p", str(port), "root@127.0.0.1", remote]  # fmt: skip

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
