"""The two ways to keep TLS on the fast path (issue 22, item 2), side by side.

Both candidates run the same TLS 1.3 session between two in-memory endpoints
(memory BIOs, no sockets), so the figure is what the cipher work costs each way
per byte and per message, without the network:

- ``python``: Python's ``ssl`` on the channel's ciphertext with batched records,
  as ``io/tls.py`` does: one ``write`` of a whole batch (OpenSSL cuts it into
  16 KiB records), one move of the ciphertext, ``read`` record after record into
  one buffer.
- ``c``: OpenSSL driven from C (a throwaway cffi module built here, linked to the
  system's libssl), the same calls in a C loop, as a data plane owning TLS would.

    python bench/tls_candidates.py [--megabytes 256] [--messages 200000]

Prints GB/s for bulk (256 KiB writes) and µs per 64-byte message (write, move,
read), each the best of three, and the ratio python/c.  Needs a compiler and the
OpenSSL headers (Debian: libssl-dev) for the ``c`` candidate.
"""

from __future__ import annotations

import argparse
import importlib
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]

from reactor_mux.security.keygen import generate

CHUNK = 256 * 1024
MESSAGE = 64

C_SOURCE = r"""
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static SSL *client, *server;
static BIO *to_server, *from_client, *to_client, *from_server;
static unsigned char *move_buffer;
static size_t move_size = 1 << 20;

/* Ciphertext one way: everything the writer produced goes to the reader's input. */
static void move(BIO *out, BIO *in) {
    int n;
    while ((n = BIO_read(out, move_buffer, (int)move_size)) > 0) {
        BIO_write(in, move_buffer, n);
    }
}

static int pair(const char *cert, const char *key, const char *suites) {
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!sctx || !cctx) return -1;
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_file(sctx, cert, SSL_FILETYPE_PEM) != 1) return -2;
    if (SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) != 1) return -3;
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    if (*suites && SSL_CTX_set_ciphersuites(cctx, suites) != 1) return -5;
    server = SSL_new(sctx);
    client = SSL_new(cctx);
    from_client = BIO_new(BIO_s_mem());
    to_client = BIO_new(BIO_s_mem());
    to_server = BIO_new(BIO_s_mem());
    from_server = BIO_new(BIO_s_mem());
    /* rbio, wbio: the client writes into to_server, the server reads from_client. */
    SSL_set_bio(client, to_client, to_server);
    SSL_set_bio(server, from_client, from_server);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    move_buffer = malloc(move_size);
    for (int i = 0; i < 20; i++) {
        int c = SSL_do_handshake(client);
        move(to_server, from_client);
        int s = SSL_do_handshake(server);
        move(from_server, to_client);
        if (c == 1 && s == 1) return 0;
    }
    return -4;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Seconds to send total bytes in writes of chunk, read back record by record. */
double bulk(size_t chunk, size_t total) {
    unsigned char *data = calloc(1, chunk), *sink = malloc(chunk);
    double start = now();
    size_t received = 0;
    for (size_t sent = 0; sent < total; sent += chunk) {
        if (SSL_write(client, data, (int)chunk) != (int)chunk) return -1;
        move(to_server, from_client);
        size_t filled = 0;
        int n;
        while ((n = SSL_read(server, sink + filled, (int)(chunk - filled))) > 0) {
            filled += (size_t)n;
            if (filled == chunk) filled = 0;
            received += (size_t)n;
        }
    }
    double took = now() - start;
    free(data);
    free(sink);
    return received == total ? took : -2;
}

/* Seconds for count messages of size bytes: write, move, read, one at a time. */
double messages(size_t size, size_t count) {
    unsigned char data[256] = {0}, sink[256];
    double start = now();
    for (size_t i = 0; i < count; i++) {
        if (SSL_write(client, data, (int)size) != (int)size) return -1;
        move(to_server, from_client);
        if (SSL_read(server, sink, (int)sizeof sink) != (int)size) return -2;
    }
    return now() - start;
}

const char *suite(void) { return SSL_CIPHER_get_name(SSL_get_current_cipher(client)); }
int setup(const char *cert, const char *key, const char *suites) {
    return pair(cert, key, suites);
}
"""

C_CDEF = """
int setup(const char *cert, const char *key, const char *suites);
double bulk(size_t chunk, size_t total);
double messages(size_t size, size_t count);
const char *suite(void);
"""


def certificate(directory: Path) -> tuple[str, str]:
    """A throwaway self-signed certificate and key, as reactor-mux keygen makes them."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    generate(cert_path, key_path, ["localhost"])
    return str(cert_path), str(key_path)


class PythonPair:
    """Two ``SSLObject``s over memory BIOs, driven the way io/tls.py drives one."""

    def __init__(self, cert: str, key: str) -> None:
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_3
        server_context.load_cert_chain(cert, key)
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_context.minimum_version = ssl.TLSVersion.TLSv1_3
        client_context.check_hostname = False
        client_context.verify_mode = ssl.CERT_NONE
        self.to_server, self.from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.to_client, self.from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(self.to_client, self.to_server)
        self.server = server_context.wrap_bio(self.from_client, self.from_server, server_side=True)
        for _ in range(20):
            done = 0
            for side, out, into in ((self.client, self.to_server, self.from_client),
                                    (self.server, self.from_server, self.to_client)):  # fmt: skip
                try:
                    side.do_handshake()
                    done += 1
                except ssl.SSLWantReadError:
                    pass
                into.write(out.read())
            if done == 2:
                return
        raise RuntimeError("no handshake")

    def bulk(self, chunk: int, total: int) -> float:
        data, sink = bytes(chunk), bytearray(chunk)
        view = memoryview(sink)
        client, server = self.client, self.server
        to_server, from_client = self.to_server, self.from_client
        received = 0
        start = time.perf_counter()
        for _ in range(total // chunk):
            client.write(data)
            from_client.write(to_server.read())
            filled = 0
            while True:
                try:
                    count: Any = server.read(chunk - filled, view[filled:])
                except ssl.SSLWantReadError:
                    break
                filled += count
                received += count
                if filled == chunk:
                    filled = 0
        took = time.perf_counter() - start
        if received != total:
            raise RuntimeError(f"received {received} of {total}")
        return took

    def messages(self, size: int, count: int) -> float:
        data, sink = bytes(size), bytearray(256)
        client, server = self.client, self.server
        to_server, from_client = self.to_server, self.from_client
        start = time.perf_counter()
        for _ in range(count):
            client.write(data)
            from_client.write(to_server.read())
            if server.read(256, sink) != size:
                raise RuntimeError("short message")
        return time.perf_counter() - start


def build_c(directory: Path) -> Any:
    builder = FFI()
    builder.cdef(C_CDEF)
    builder.set_source("_tls_candidate", C_SOURCE, libraries=["ssl", "crypto"])
    builder.compile(tmpdir=str(directory), verbose=False)
    sys.path.insert(0, str(directory))
    return importlib.import_module("_tls_candidate")


def best(measure: Any, runs: int = 3) -> float:
    return min(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    total = args.megabytes * 1024 * 1024 // CHUNK * CHUNK
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        cert, key = certificate(directory)
        module = build_c(directory)
        if module.lib.setup(cert.encode(), key.encode(), b"") != 0:
            raise SystemExit("the C candidate could not set up TLS")
        python = PythonPair(cert, key)
        suite = module.ffi.string(module.lib.suite()).decode()
        print(f"{ssl.OPENSSL_VERSION}; suite {suite} (python: {python.client.cipher()})")
        rows = []
        c_bulk = best(lambda: module.lib.bulk(CHUNK, total))
        py_bulk = best(lambda: python.bulk(CHUNK, total))
        rows.append(("bulk, 256 KiB writes", "GB/s", total / c_bulk / 1e9, total / py_bulk / 1e9))
        count = args.messages
        c_small = best(lambda: module.lib.messages(MESSAGE, count))
        py_small = best(lambda: python.messages(MESSAGE, count))
        rows.append(("64 B message", "us", c_small / count * 1e6, py_small / count * 1e6))
        # What the suite costs: ssh's choice, AES-128-GCM, which Python's ssl has no
        # way to ask for in TLS 1.3 (set_ciphers is TLS 1.2 only); C only.
        if module.lib.setup(cert.encode(), key.encode(), b"TLS_AES_128_GCM_SHA256") != 0:
            raise SystemExit("the C candidate could not set up AES-128-GCM")
        c_bulk_128 = best(lambda: module.lib.bulk(CHUNK, total))
    print(f"{'figure':24} {'unit':5} {'c':>9} {'python':>9} {'python/c':>9}")
    for figure, unit, c_value, py_value in rows:
        print(f"{figure:24} {unit:5} {c_value:9.3f} {py_value:9.3f} {py_value / c_value:9.2f}")
    print(
        f"{'bulk, AES-128-GCM, c':24} {'GB/s':5} {total / c_bulk_128 / 1e9:9.3f}"
        f"  ({c_bulk / c_bulk_128:.2f}x the C AES-256 figure)"
    )


if __name__ == "__main__":
    main()
