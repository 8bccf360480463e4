/*
 * reactor-mux: a TLS channel's records in C, on the TLS session Python's ssl made.
 *
 * Python's ssl does the handshake and every check (certificates, pins, the
 * error a refusal reports), over two memory BIOs, as io/tls.py has always done.
 * Once the session is open the data plane reads and writes the channel through
 * that same SSL object and those same BIOs (reactor_mux/io/nativetls.py finds
 * them), so Python's path and the plane's interleave on one state: ciphertext
 * in order through one output BIO, plaintext in order out of one SSL.
 *
 * OpenSSL is not linked at build time.  rmux_tls_bind looks its functions up in
 * the library Python's own _ssl module uses (dlopen of that module, already
 * loaded), so the SSL objects and the functions are always the same build, no
 * headers are needed to compile, and where the lookup fails (an _ssl built in,
 * or linked statically) TLS stays on Python's path.  docs/design-dataplane.md
 * says why this way.
 */
#ifndef RMUX_TLS_H
#define RMUX_TLS_H

#include <stddef.h>
#include <stdint.h>

/* cdef-begin */

/* Look OpenSSL's functions up in the shared object at path (Python's _ssl
 * module, already loaded); 0 when every one was found, -1 otherwise. */
int rmux_tls_bind(const char *path);
int rmux_tls_bound(void);
/* 1 if ssl is an SSL object whose read and write BIOs are rbio and wbio (the
 * check that the addresses Python's objects gave are what they claim), else 0. */
int rmux_tls_adopt(uintptr_t ssl, uintptr_t rbio, uintptr_t wbio);
/* Prefer these TLS 1.3 suites (OpenSSL's list syntax); 1 on success. */
int rmux_tls_set_ciphersuites(uintptr_t ssl, const char *suites);
/* The TLS version and cipher OpenSSL negotiated, as it names them. */
const char *rmux_tls_cipher(uintptr_t ssl);
/* Send what the output BIO holds to fd as far as the socket takes it now; what
 * it refuses stays first in the BIO.  Returns the bytes sent, or -errno. */
int64_t rmux_tls_flush(uintptr_t ssl, int fd);
/* From now on the session's records go to a BIO of the plane's (what the
 * memory BIO still holds moves first): sent from one buffer, never copied out.
 * Call once the handshake is done; 1 if it took (or had), else 0 (the memory
 * BIO stays: everything still works, with a copy more). */
int rmux_tls_own_output(uintptr_t ssl);
/* The same for what the session reads: the plane receives straight into a
 * buffer of its own that OpenSSL reads records from.  eof: the socket has
 * already ended.  1 if it took (or had), else 0 (the memory BIO stays). */
int rmux_tls_own_input(uintptr_t ssl, int eof);
/* With its own input: one recv of fd into it.  Returns the count, 0 at the
 * socket's end (OpenSSL sees it once the rest is read), or -errno. */
int64_t rmux_tls_take_in(uintptr_t ssl, int fd);
/* Ciphertext the own input holds; whether it ended with nothing held. */
uint64_t rmux_tls_held_in(uintptr_t ssl);
int rmux_tls_input_ended(uintptr_t ssl);
/* The transport closed: free the own buffers' storage now (what they held is
 * dropped; they start empty again if the session were used after). */
void rmux_tls_release(uintptr_t ssl);
/* A quiet channel: free the own buffers' storage where they hold nothing and a
 * burst grew them past their first size (allocated again with the next record). */
void rmux_tls_release_idle(uintptr_t ssl);
/* Ciphertext the output BIO holds. */
uint64_t rmux_tls_unsent(uintptr_t ssl);
/* OpenSSL's reason text for an error code a plane event carried ("" if none). */
const char *rmux_tls_reason(uint32_t code);

/* cdef-end */

/* For the data plane (rmux_plane.c). */
typedef enum rmux_tls_stop {
    RMUX_TLS_FULL = 0,      /* room is used up; OpenSSL may hold more */
    RMUX_TLS_DRAINED = 1,   /* the socket has nothing more now */
    RMUX_TLS_CLOSED = 2,    /* the peer's close_notify */
    RMUX_TLS_SOCKET_EOF = 3,  /* the socket ended (Python's path says how TLS ended) */
    RMUX_TLS_SOCKET_ERROR = 4, /* *detail: the errno of a failed recv */
    RMUX_TLS_FAILED = 5     /* *detail: OpenSSL's error code */
} rmux_tls_stop;

/* Decrypt into dst (at most room bytes) what OpenSSL holds, feeding it what the
 * socket has through scratch as it needs; *got is the plaintext count.  A read
 * of the socket shorter than scratch means it is drained (unless hung_up). */
rmux_tls_stop rmux_tls_receive(uintptr_t ssl, int fd, int hung_up, uint8_t *scratch,
                               size_t scratch_length, uint8_t *dst, size_t room, size_t *got,
                               uint32_t *detail);
/* Encrypt length bytes into the output BIO (it takes all); 0, or -1 with
 * OpenSSL's error code in *detail. */
int rmux_tls_encrypt(uintptr_t ssl, const uint8_t *data, size_t length, uint32_t *detail);

#endif
