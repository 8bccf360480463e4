"""A plain TCP relay: the baseline a tunnel is compared with.

Two threads per connection copy bytes with ``recv_into``/``sendall`` through
256 KiB buffers and pass half-closes on.  It multiplexes nothing and has no flow
control beyond TCP's: "close to a plain relay" is measured against this.

Usage: python bench/plain_relay.py LISTEN_PORT TARGET_HOST TARGET_PORT
(prints "listening on 127.0.0.1:PORT" once ready).
"""

from __future__ import annotations

import socket
import sys
import threading

BUFFER = 256 * 1024


def pump(source: socket.socket, sink: socket.socket) -> None:
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    try:
        while True:
            count = source.recv_into(buffer)
            if not count:
                break
            sink.sendall(view[:count])
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(conn: socket.socket, target: tuple[str, int]) -> None:
    upstream = socket.create_connection(target)
    for sock in (conn, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    back.start()
    pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def main() -> None:
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(128)
    print(f"listening on 127.0.0.1:{server.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, (host, port)), daemon=True).start()


if __name__ == "__main__":
    main()
