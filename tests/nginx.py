"""A throwaway nginx on 127.0.0.1 in front of a reactor-mux server, as a reverse proxy
for WebSocket channels: ``proxy_pass`` with the Upgrade headers, optionally TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


class LocalNginx:
    """nginx in the foreground (one process, no master), proxying ``path`` to
    ``127.0.0.1:backend``; with ``cert``/``key`` it terminates TLS."""

    def __init__(self, backend: int, path: str, cert: Path | None = None,
                 key: Path | None = None) -> None:  # fmt: skip
        assert NGINX is not None
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-nginx-"))
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        self.port = holder.getsockname()[1]
        holder.close()  # nginx sets SO_REUSEADDR too; it binds it again at once
        tls = f"ssl_certificate {cert};\n ssl_certificate_key {key};\n" if cert else ""
        listen = f"127.0.0.1:{self.port}" + (" ssl" if cert else "")
        temp = self.directory
        (self.directory / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
error_log {temp}/error.log warn;
pid {temp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  server {{
    listen {listen};
    {tls}
    location = {path} {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 300s;
      proxy_buffering off;
    }}
    location / {{ return 404; }}
  }}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.error_log()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port}: {self.error_log()}")

    def error_log(self) -> str:
        log = self.directory / "error.log"
        return log.read_text() if log.exists() else ""

    def kill(self) -> None:
        """Stop at once: every proxied connection breaks (a restart, a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
