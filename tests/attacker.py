"""A stranger with no credentials, as fast as one process can go (tests/test_e2e_admission.py).

    python tests/attacker.py PORT --sources 127.0.0.2,127.0.0.3 --mode idle --seconds 20

Keeps ``--concurrency`` connections to 127.0.0.1:PORT in flight from the given
loopback source addresses (round robin) and opens a new one the moment one
ends.  What each connection does once connected (``--mode``):

* ``idle``: nothing; it holds its place until the server closes it (the attack
  that locked servers out before admission existed);
* ``garbage``: random bytes, then it waits for the close;
* ``half-hello``: half of a HELLO frame, then nothing;
* ``tls-hello``: a TLS ClientHello record cut in half, then nothing;
* ``connect-close``: it closes at once.

It prints ``{"ready": true}`` when it starts, ``{"in_full_swing": true}`` once
``--swing`` connections have connected (the attack is under way, whatever the
machine's pace), and on SIGTERM (or after ``--seconds``) one JSON line:
connections opened, how many the server accepted and closed, and how many were
refused or reset.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import time

HELLO = bytes.fromhex("0000002500000000 01") + b"HELLO 1 262144 65536 0123456789abcdef"
PAYLOADS = {
    "idle": b"",
    "garbage": os.urandom(512),
    "half-hello": HELLO[: len(HELLO) // 2],
    "tls-hello": bytes.fromhex("16030100f5010000f10303") + os.urandom(60),
    "connect-close": b"",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--sources", default="127.0.0.2")
    parser.add_argument("--mode", choices=sorted(PAYLOADS), default="idle")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--swing", type=int, default=500)
    args = parser.parse_args()
    sources = args.sources.split(",")
    payload = PAYLOADS[args.mode]
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    selector = selectors.DefaultSelector()
    counts = {"opened": 0, "connected": 0, "closed_by_server": 0, "refused": 0, "reset": 0}
    turn = 0

    def open_one() -> None:
        nonlocal turn
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((sources[turn % len(sources)], 0))
        except OSError:
            sock.close()
            return
        turn += 1
        counts["opened"] += 1
        error = sock.connect_ex(("127.0.0.1", args.port))
        if error not in (0, errno.EINPROGRESS):
            counts["refused"] += 1
            sock.close()
            return
        selector.register(sock, selectors.EVENT_WRITE, "connecting")

    def end(sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()

    deadline = time.monotonic() + args.seconds
    print(json.dumps({"ready": True}), flush=True)
    while not stop and time.monotonic() < deadline:
        while len(selector.get_map()) < args.concurrency:
            open_one()
        for key, _mask in selector.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connecting":
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    counts["refused"] += 1
                    end(sock)
                    continue
                counts["connected"] += 1
                if counts["connected"] == args.swing:
                    print(json.dumps({"in_full_swing": True}), flush=True)
                if args.mode == "connect-close":
                    end(sock)
                    continue
                try:
                    if payload:
                        sock.send(payload)
                except OSError:
                    counts["reset"] += 1
                    end(sock)
                    continue
                selector.modify(sock, selectors.EVENT_READ, "waiting")
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                counts["reset"] += 1
                end(sock)
                continue
            if not data:
                counts["closed_by_server"] += 1
                end(sock)
    for key in list(selector.get_map().values()):
        end(key.fileobj)  # type: ignore[arg-type]
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
