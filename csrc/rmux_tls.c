/*
 * reactor-mux: a TLS channel's records in C (see rmux_tls.h).
 */
#define _GNU_SOURCE
#include "rmux_tls.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

/* OpenSSL's values these calls need (stable since 1.1.1; the ABI rmux_tls_bind finds). */
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_ZERO_RETURN 6
#define BIO_CTRL_INFO 3 /* BIO_get_mem_data */
#define DISCARD_CHUNK 65536

typedef struct openssl_calls {
    int (*SSL_read_ex)(void *, void *, size_t, size_t *);
    int (*SSL_write_ex)(void *, const void *, size_t, size_t *);
    int (*SSL_get_error)(const void *, int);
    void *(*SSL_get_rbio)(const void *);
    void *(*SSL_get_wbio)(const void *);
    int (*SSL_set_ciphersuites)(void *, const char *);
    int (*SSL_has_pending)(const void *);
    const char *(*SSL_get_version)(const void *);
    const void *(*SSL_get_current_cipher)(const void *);
    const char *(*SSL_CIPHER_get_name)(const void *);
    int (*BIO_write)(void *, const void *, int);
    int (*BIO_read)(void *, void *, int);
    long (*BIO_ctrl)(void *, int, long, void *);
    size_t (*BIO_ctrl_pending)(void *);
    unsigned long (*ERR_peek_last_error)(void);
    void (*ERR_clear_error)(void);
    const char *(*ERR_reason_error_string)(unsigned long);
} openssl_calls;

static openssl_calls ossl;
static int bound;

#define LOOK_UP(handle, name)                                                                  \
    do {                                                                                       \
        *(void **)(&found.name) = dlsym(handle, #name);                                        \
        if (found.name == NULL) {                                                              \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

int rmux_tls_bind(const char *path) {
    if (bound) {
        return 0;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) {
        return -1; /* not loaded, or not a shared object */
    }
    openssl_calls found;
    LOOK_UP(handle, SSL_read_ex);
    LOOK_UP(handle, SSL_write_ex);
    LOOK_UP(handle, SSL_get_error);
    LOOK_UP(handle, SSL_get_rbio);
    LOOK_UP(handle, SSL_get_wbio);
    LOOK_UP(handle, SSL_set_ciphersuites);
    LOOK_UP(handle, SSL_has_pending);
    LOOK_UP(handle, SSL_get_version);
    LOOK_UP(handle, SSL_get_current_cipher);
    LOOK_UP(handle, SSL_CIPHER_get_name);
    LOOK_UP(handle, BIO_write);
    LOOK_UP(handle, BIO_read);
    LOOK_UP(handle, BIO_ctrl);
    LOOK_UP(handle, BIO_ctrl_pending);
    LOOK_UP(handle, ERR_peek_last_error);
    LOOK_UP(handle, ERR_clear_error);
    LOOK_UP(handle, ERR_reason_error_string);
    ossl = found;
    bound = 1; /* the handle stays open: the module is never unloaded anyway */
    return 0;
}

int rmux_tls_bound(void) {
    return bound;
}

int rmux_tls_adopt(uintptr_t ssl, uintptr_t rbio, uintptr_t wbio) {
    if (!bound || ssl == 0 || rbio == 0 || wbio == 0) {
        return 0;
    }
    void *session = (void *)ssl;
    return (uintptr_t)ossl.SSL_get_rbio(session) == rbio &&
           (uintptr_t)ossl.SSL_get_wbio(session) == wbio;
}

int rmux_tls_set_ciphersuites(uintptr_t ssl, const char *suites) {
    if (!bound) {
        return 0;
    }
    int done = ossl.SSL_set_ciphersuites((void *)ssl, suites);
    ossl.ERR_clear_error();
    return done == 1;
}

const char *rmux_tls_cipher(uintptr_t ssl) {
    if (!bound) {
        return "";
    }
    const void *cipher = ossl.SSL_get_current_cipher((void *)ssl);
    return cipher == NULL ? "" : ossl.SSL_CIPHER_get_name(cipher);
}

/* Forget the first count bytes of a memory BIO (they were sent from its buffer). */
static void discard(void *bio, size_t count) {
    uint8_t sink[DISCARD_CHUNK];
    while (count > 0) {
        int chunk = count < sizeof sink ? (int)count : (int)sizeof sink;
        int taken = ossl.BIO_read(bio, sink, chunk);
        if (taken <= 0) {
            return;
        }
        count -= (size_t)taken;
    }
}

int64_t rmux_tls_flush(uintptr_t ssl, int fd) {
    if (!bound) {
        return -ENOSYS;
    }
    void *output = ossl.SSL_get_wbio((void *)ssl);
    int64_t total = 0;
    for (;;) {
        char *data = NULL;
        long length = ossl.BIO_ctrl(output, BIO_CTRL_INFO, 0, &data);
        if (length <= 0 || data == NULL) {
            return total;
        }
        ssize_t sent;
        do {
            sent = send(fd, data, (size_t)length, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return total;
            }
            return total ? total : -(int64_t)errno;
        }
        discard(output, (size_t)sent);
        total += sent;
        if (sent < length) {
            return total;
        }
    }
}

uint64_t rmux_tls_unsent(uintptr_t ssl) {
    return bound ? ossl.BIO_ctrl_pending(ossl.SSL_get_wbio((void *)ssl)) : 0;
}

const char *rmux_tls_reason(uint32_t code) {
    const char *text = bound && code ? ossl.ERR_reason_error_string(code) : NULL;
    return text == NULL ? "" : text;
}

/* The last error's code, and an empty queue (the next call starts clean, as
 * Python's _ssl leaves it). */
static uint32_t take_error(void) {
    unsigned long code = ossl.ERR_peek_last_error();
    ossl.ERR_clear_error();
    return (uint32_t)code;
}

rmux_tls_stop rmux_tls_receive(uintptr_t ssl, int fd, int hung_up, uint8_t *scratch,
                               size_t scratch_length, uint8_t *dst, size_t room, size_t *got,
                               uint32_t *detail) {
    void *session = (void *)ssl;
    void *input = ossl.SSL_get_rbio(session);
    int dry = 0; /* the last recv was short: the socket is drained */
    *got = 0;
    *detail = 0;
    ossl.ERR_clear_error();
    while (*got < room) {
        /* A read OpenSSL would refuse for want of ciphertext is not made: the
         * socket is read first when nothing is buffered. */
        if (ossl.SSL_has_pending(session) || ossl.BIO_ctrl_pending(input) > 0) {
            size_t count = 0;
            int done = ossl.SSL_read_ex(session, dst + *got, room - *got, &count);
            if (done == 1) {
                *got += count;
                continue;
            }
            int error = ossl.SSL_get_error(session, done);
            if (error == SSL_ERROR_ZERO_RETURN) {
                ossl.ERR_clear_error();
                return RMUX_TLS_CLOSED;
            }
            if (error != SSL_ERROR_WANT_READ) {
                *detail = take_error();
                return RMUX_TLS_FAILED;
            }
        }
        if (dry) {
            return RMUX_TLS_DRAINED;
        }
        ssize_t read;
        do {
            read = recv(fd, scratch, scratch_length, MSG_DONTWAIT);
        } while (read < 0 && errno == EINTR);
        if (read < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return RMUX_TLS_DRAINED;
            }
            *detail = (uint32_t)errno;
            return RMUX_TLS_SOCKET_ERROR;
        }
        if (read == 0) {
            return RMUX_TLS_SOCKET_EOF;
        }
        if (ossl.BIO_write(input, scratch, (int)read) != (int)read) {
            *detail = take_error();
            return RMUX_TLS_FAILED;
        }
        dry = (size_t)read < scratch_length && !hung_up;
    }
    return RMUX_TLS_FULL;
}

int rmux_tls_encrypt(uintptr_t ssl, const uint8_t *data, size_t length, uint32_t *detail) {
    size_t written = 0;
    ossl.ERR_clear_error();
    if (length == 0) {
        return 0;
    }
    if (ossl.SSL_write_ex((void *)ssl, data, length, &written) != 1 || written != length) {
        *detail = take_error();
        return -1;
    }
    return 0;
}
