"""A throwaway HAProxy in TCP mode in front of reactor-mux servers: the L4 load
balancer of docs/operations.md ("Scaling out"), writing a PROXY protocol header
(``send-proxy-v2``, or v1's ``send-proxy``) and health-checking each server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
PROBE_SOURCE = "127.0.0.250"


class LocalHaproxy:
    """HAProxy in the foreground on 127.0.0.1, balancing over ``servers`` ((host,
    port) each); ``balance`` is HAProxy's algorithm (``source`` keeps a client
    address on one server)."""

    def __init__(self, servers: list[tuple[str, int]], proxy: str = "send-proxy-v2",
                 balance: str = "roundrobin", check: bool = True,
                 source: str | None = None) -> None:  # fmt: skip
        """``source``: the address HAProxy connects to the servers from (the one they
        trust with --proxy-protocol-from), so that clients on 127.0.0.1 are not it."""
        assert HAPROXY is not None
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-haproxy-"))
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        self.port = holder.getsockname()[1]
        holder.close()  # HAProxy binds it again at once (SO_REUSEADDR)
        checks = " check inter 200ms" if check else ""
        checks += f" source {source}" if source else ""
        lines = "\n".join(f"  server node{index} {host}:{port} {proxy}{checks}"
                          for index, (host, port) in enumerate(servers, 1))  # fmt: skip
        self.config = self.directory / "haproxy.cfg"
        self.config.write_text(f"""
global
  maxconn 512
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend channels
  bind 127.0.0.1:{self.port}
  default_backend servers
backend servers
  balance {balance}
{lines}
""")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                # From an address of its own: the server may penalise this probe's source.
                socket.create_connection(("127.0.0.1", self.port), timeout=1,
                                         source_address=(PROBE_SOURCE, 0)).close()  # fmt: skip
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {self.stderr()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"haproxy did not listen on {self.port}")

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)
