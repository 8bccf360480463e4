/*
 * reactor-mux: a TLS channel's records in C (see rmux_tls.h).
 */
#define _GNU_SOURCE
#include "rmux_tls.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* OpenSSL's values these calls need (stable since 1.1.1; the ABI rmux_tls_bind finds). */
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_ZERO_RETURN 6
#define BIO_CTRL_EOF 2
#define BIO_CTRL_INFO 3 /* BIO_get_mem_data */
#define BIO_CTRL_PENDING 10
#define BIO_CTRL_FLUSH 11
#define BIO_CTRL_WPENDING 13
#define BIO_TYPE_SOURCE_SINK 0x0400
#define DISCARD_CHUNK 65536
#define OUTPUT_INITIAL 4096 /* a keepalive's record is a few dozen bytes; the BIO doubles */
#define INPUT_INITIAL 4096  /* io/tls.py's CIPHER_READ_INITIAL */
#define INPUT_MOST 262144    /* and its CIPHER_READ */
#define BIO_FLAGS_READ 0x01
#define BIO_FLAGS_SHOULD_RETRY 0x08
#define BIO_FLAGS_RWS_RETRY 0x0f

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
    int (*BIO_get_new_index)(void);
    void *(*BIO_meth_new)(int, const char *);
    int (*BIO_meth_set_write)(void *, int (*)(void *, const char *, int));
    int (*BIO_meth_set_ctrl)(void *, long (*)(void *, int, long, void *));
    int (*BIO_meth_set_destroy)(void *, int (*)(void *));
    void *(*BIO_new)(const void *);
    void (*BIO_set_data)(void *, void *);
    void *(*BIO_get_data)(void *);
    void (*BIO_set_init)(void *, int);
    int (*BIO_method_type)(const void *);
    void (*SSL_set0_wbio)(void *, void *);
    int (*BIO_free)(void *);
    int (*BIO_meth_set_read)(void *, int (*)(void *, char *, int));
    void (*BIO_set_flags)(void *, int);
    void (*BIO_clear_flags)(void *, int);
    void (*SSL_set0_rbio)(void *, void *);
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

/* Defined below, with the BIO methods; rmux_tls_bind makes both methods once. */
static void *output_method;
static int output_type;
static void *input_method;
static int input_type;
static void *new_method(int *type, const char *name, int (*write)(void *, const char *, int),
                        int (*read)(void *, char *, int),
                        long (*ctrl)(void *, int, long, void *), int (*destroy)(void *));
static int output_write(void *bio, const char *data, int length);
static long output_ctrl(void *bio, int command, long number, void *pointer);
static int output_destroy(void *bio);
static int input_read(void *bio, char *into, int length);
static long input_ctrl(void *bio, int command, long number, void *pointer);
static int input_destroy(void *bio);

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
    LOOK_UP(handle, BIO_get_new_index);
    LOOK_UP(handle, BIO_meth_new);
    LOOK_UP(handle, BIO_meth_set_write);
    LOOK_UP(handle, BIO_meth_set_ctrl);
    LOOK_UP(handle, BIO_meth_set_destroy);
    LOOK_UP(handle, BIO_new);
    LOOK_UP(handle, BIO_set_data);
    LOOK_UP(handle, BIO_get_data);
    LOOK_UP(handle, BIO_set_init);
    LOOK_UP(handle, BIO_method_type);
    LOOK_UP(handle, SSL_set0_wbio);
    LOOK_UP(handle, BIO_free);
    LOOK_UP(handle, BIO_meth_set_read);
    LOOK_UP(handle, BIO_set_flags);
    LOOK_UP(handle, BIO_clear_flags);
    LOOK_UP(handle, SSL_set0_rbio);
    ossl = found;
    /* Both BIO methods now, once: made on first use, two reactors in two threads (the
     * Python API's tunnels) could each make one and leave the other's BIOs unknown. */
    output_method = new_method(&output_type, "reactor-mux cipher output", output_write, NULL,
                               output_ctrl, output_destroy);
    input_method = new_method(&input_type, "reactor-mux cipher input", NULL, input_read,
                              input_ctrl, input_destroy);
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

/* ------------------------------------------------------ the output BIO
 *
 * Once a session is open its ciphertext goes to a BIO of ours: OpenSSL's
 * records are appended to one buffer, sent from it, and forgotten by moving a
 * cursor.  A memory BIO would zero what it grows by, copy the data to the
 * front on every look, and need a copy out to forget what was sent. */

typedef struct cipher_output {
    uint8_t *data;
    size_t start; /* sent up to here */
    size_t end;
    size_t capacity;
} cipher_output;

static void *output_method;
static int output_type;

/* A BIO method of ours (NULL if OpenSSL refused; a method half set up is never used). */
static void *new_method(int *type, const char *name, int (*write)(void *, const char *, int),
                        int (*read)(void *, char *, int),
                        long (*ctrl)(void *, int, long, void *), int (*destroy)(void *)) {
    *type = ossl.BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    void *method = ossl.BIO_meth_new(*type, name);
    if (method == NULL || (write != NULL && !ossl.BIO_meth_set_write(method, write)) ||
        (read != NULL && !ossl.BIO_meth_set_read(method, read)) ||
        !ossl.BIO_meth_set_ctrl(method, ctrl) || !ossl.BIO_meth_set_destroy(method, destroy)) {
        ossl.ERR_clear_error();
        return NULL;
    }
    return method;
}

/* A BIO of one of our methods with its state zeroed (freed by the method's
 * destroy), or NULL if memory ran out. */
static void *new_bio(void *method, size_t state_size) {
    void *state = calloc(1, state_size);
    void *bio = state == NULL ? NULL : ossl.BIO_new(method);
    if (bio == NULL) {
        free(state);
        ossl.ERR_clear_error();
        return NULL;
    }
    ossl.BIO_set_data(bio, state);
    ossl.BIO_set_init(bio, 1);
    return bio;
}

static int output_write(void *bio, const char *data, int length) {
    cipher_output *out = ossl.BIO_get_data(bio);
    if (length <= 0) {
        return 0;
    }
    if (out->start == out->end) {
        out->start = out->end = 0;
    }
    if (out->end + (size_t)length > out->capacity) {
        size_t held = out->end - out->start;
        if (out->start > 0) { /* the unsent bytes to the front first */
            memmove(out->data, out->data + out->start, held);
            out->start = 0;
            out->end = held;
        }
        if (held + (size_t)length > out->capacity) {
            size_t capacity = out->capacity ? out->capacity : OUTPUT_INITIAL;
            while (capacity < held + (size_t)length) {
                capacity *= 2;
            }
            uint8_t *grown = realloc(out->data, capacity);
            if (grown == NULL) {
                return -1; /* the record fails; OpenSSL reports it */
            }
            out->data = grown;
            out->capacity = capacity;
        }
    }
    memcpy(out->data + out->end, data, (size_t)length);
    out->end += (size_t)length;
    return length;
}

static long output_ctrl(void *bio, int command, long number, void *pointer) {
    (void)number;
    (void)pointer;
    cipher_output *out = ossl.BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_FLUSH:
        return 1; /* the records wait for rmux_tls_flush */
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
        return (long)(out->end - out->start);
    default:
        return 0;
    }
}

static int output_destroy(void *bio) {
    cipher_output *out = ossl.BIO_get_data(bio);
    if (out != NULL) {
        free(out->data);
        free(out);
        ossl.BIO_set_data(bio, NULL);
    }
    return 1;
}

static cipher_output *own_output(void *session) {
    void *bio = ossl.SSL_get_wbio(session);
    if (output_method == NULL || bio == NULL || ossl.BIO_method_type(bio) != output_type) {
        return NULL;
    }
    return ossl.BIO_get_data(bio);
}

int rmux_tls_own_output(uintptr_t ssl) {
    void *session = (void *)ssl;
    if (!bound) {
        return 0;
    }
    if (own_output(session) != NULL) {
        return 1;
    }
    if (output_method == NULL) { /* OpenSSL refused it at bind time: Python's BIO stays */
        return 0;
    }
    void *bio = new_bio(output_method, sizeof(cipher_output));
    if (bio == NULL) {
        return 0;
    }
    /* What the memory BIO still holds (the end of the handshake) goes first. */
    void *memory = ossl.SSL_get_wbio(session);
    char *held = NULL;
    long length = ossl.BIO_ctrl(memory, BIO_CTRL_INFO, 0, &held);
    if (length > 0 && held != NULL) {
        if (output_write(bio, held, (int)length) != (int)length) {
            ossl.BIO_free(bio); /* and its buffer, through output_destroy */
            return 0;
        }
        discard(memory, (size_t)length);
    }
    ossl.SSL_set0_wbio(session, bio); /* the session owns it; Python keeps its memory BIO */
    return 1;
}

/* ------------------------------------------------------- the input BIO
 *
 * Once a session is open the plane receives its ciphertext straight into a
 * buffer of ours, which OpenSSL reads its records from: no staging copy, and
 * nothing zeroed as a memory BIO would.  It starts at INPUT_INITIAL and doubles
 * while reads fill it, up to INPUT_MOST (a partial record may need more: it
 * always gets room). */

typedef struct cipher_input {
    uint8_t *data;
    size_t start; /* OpenSSL has read up to here */
    size_t end;
    size_t capacity;
    int eof; /* the socket ended: once the rest is read, OpenSSL sees the end */
} cipher_input;

static void *input_method;
static int input_type;

static int input_read(void *bio, char *into, int length) {
    cipher_input *in = ossl.BIO_get_data(bio);
    ossl.BIO_clear_flags(bio, BIO_FLAGS_RWS_RETRY);
    size_t held = in->end - in->start;
    if (held == 0) {
        if (in->eof) {
            return 0;
        }
        ossl.BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY);
        return -1;
    }
    if (length <= 0) {
        return 0;
    }
    size_t count = (size_t)length < held ? (size_t)length : held;
    memcpy(into, in->data + in->start, count);
    in->start += count;
    if (in->start == in->end) {
        in->start = in->end = 0;
    }
    return (int)count;
}

static long input_ctrl(void *bio, int command, long number, void *pointer) {
    (void)number;
    (void)pointer;
    cipher_input *in = ossl.BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_PENDING:
        return (long)(in->end - in->start);
    case BIO_CTRL_EOF:
        return in->eof && in->start == in->end;
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static int input_destroy(void *bio) {
    cipher_input *in = ossl.BIO_get_data(bio);
    if (in != NULL) {
        free(in->data);
        free(in);
        ossl.BIO_set_data(bio, NULL);
    }
    return 1;
}

static cipher_input *own_input(void *session) {
    void *bio = ossl.SSL_get_rbio(session);
    if (input_method == NULL || bio == NULL || ossl.BIO_method_type(bio) != input_type) {
        return NULL;
    }
    return ossl.BIO_get_data(bio);
}

/* Room for at least want more bytes after in->end (held bytes to the front
 * first); 0, or -1 if memory ran out. */
static int input_room(cipher_input *in, size_t want) {
    size_t held = in->end - in->start;
    if (in->start > 0 && in->capacity - in->end < want) {
        memmove(in->data, in->data + in->start, held);
        in->start = 0;
        in->end = held;
    }
    if (in->capacity - in->end >= want) {
        return 0;
    }
    size_t capacity = in->capacity ? in->capacity : INPUT_INITIAL;
    while (capacity - held < want) {
        capacity *= 2;
    }
    uint8_t *grown = realloc(in->data, capacity);
    if (grown == NULL) {
        return -1;
    }
    in->data = grown;
    in->capacity = capacity;
    return 0;
}

/* One recv into the input buffer: the count, 0 at the socket's end, or -errno
 * (-EAGAIN: nothing now); *filled says it took all the room it had (so the
 * socket may hold more).  A read that fills the buffer doubles it for the next. */
static int64_t input_receive(cipher_input *in, int fd, int *filled) {
    *filled = 0;
    if (input_room(in, in->capacity ? 1 : INPUT_INITIAL) != 0) {
        return -ENOMEM;
    }
    size_t room = in->capacity - in->end;
    ssize_t got;
    do {
        got = recv(fd, in->data + in->end, room, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        return -(int64_t)errno;
    }
    if (got == 0) {
        in->eof = 1;
        return 0;
    }
    in->end += (size_t)got;
    *filled = (size_t)got == room;
    if (*filled && in->capacity < INPUT_MOST) {
        input_room(in, in->capacity); /* busy: read twice as much at once (best effort) */
    }
    return got;
}

int rmux_tls_own_input(uintptr_t ssl, int eof) {
    void *session = (void *)ssl;
    if (!bound) {
        return 0;
    }
    if (own_input(session) != NULL) {
        return 1;
    }
    if (input_method == NULL) { /* OpenSSL refused it at bind time: Python's BIO stays */
        return 0;
    }
    void *bio = new_bio(input_method, sizeof(cipher_input));
    if (bio == NULL) {
        return 0;
    }
    cipher_input *in = ossl.BIO_get_data(bio);
    /* What the memory BIO holds (records behind the handshake's) is read first. */
    void *memory = ossl.SSL_get_rbio(session);
    char *held = NULL;
    long length = ossl.BIO_ctrl(memory, BIO_CTRL_INFO, 0, &held);
    if (length > 0 && held != NULL) {
        if (input_room(in, (size_t)length) != 0) {
            ossl.BIO_free(bio);
            return 0;
        }
        memcpy(in->data + in->end, held, (size_t)length);
        in->end += (size_t)length;
        discard(memory, (size_t)length);
    }
    in->eof = eof;
    ossl.SSL_set0_rbio(session, bio); /* the session owns it; Python keeps its memory BIO */
    return 1;
}

int64_t rmux_tls_take_in(uintptr_t ssl, int fd) {
    cipher_input *in = bound ? own_input((void *)ssl) : NULL;
    int filled;
    return in == NULL ? -ENOSYS : input_receive(in, fd, &filled);
}

uint64_t rmux_tls_held_in(uintptr_t ssl) {
    cipher_input *in = bound ? own_input((void *)ssl) : NULL;
    return in == NULL ? 0 : in->end - in->start;
}

int rmux_tls_input_ended(uintptr_t ssl) {
    cipher_input *in = bound ? own_input((void *)ssl) : NULL;
    return in != NULL && in->eof && in->start == in->end;
}

void rmux_tls_release(uintptr_t ssl) {
    if (!bound) {
        return;
    }
    cipher_input *in = own_input((void *)ssl);
    if (in != NULL) {
        free(in->data);
        in->data = NULL;
        in->start = in->end = in->capacity = 0;
    }
    cipher_output *out = own_output((void *)ssl);
    if (out != NULL) {
        free(out->data);
        out->data = NULL;
        out->start = out->end = out->capacity = 0;
    }
}

void rmux_tls_release_idle(uintptr_t ssl) {
    if (!bound) {
        return;
    }
    cipher_input *in = own_input((void *)ssl);
    if (in != NULL && in->start == in->end && in->capacity > INPUT_INITIAL) {
        free(in->data);
        in->data = NULL;
        in->start = in->end = in->capacity = 0;
    }
    cipher_output *out = own_output((void *)ssl);
    if (out != NULL && out->start == out->end && out->capacity > OUTPUT_INITIAL) {
        free(out->data);
        out->data = NULL;
        out->start = out->end = out->capacity = 0;
    }
}

int64_t rmux_tls_flush(uintptr_t ssl, int fd) {
    if (!bound) {
        return -ENOSYS;
    }
    cipher_output *own = own_output((void *)ssl);
    if (own != NULL) {
        int64_t total = 0;
        while (own->start < own->end) {
            ssize_t sent;
            do {
                sent = send(fd, own->data + own->start, own->end - own->start,
                            MSG_DONTWAIT | MSG_NOSIGNAL);
            } while (sent < 0 && errno == EINTR);
            if (sent < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    break;
                }
                return total ? total : -(int64_t)errno;
            }
            own->start += (size_t)sent;
            total += sent;
        }
        return total;
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
    cipher_input *own = own_input(session);
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
        if (own != NULL) { /* straight into the buffer OpenSSL reads from */
            int filled;
            int64_t taken = input_receive(own, fd, &filled);
            if (taken == -EAGAIN || taken == -EWOULDBLOCK) {
                return RMUX_TLS_DRAINED;
            }
            if (taken < 0) {
                *detail = (uint32_t)-taken;
                return RMUX_TLS_SOCKET_ERROR;
            }
            if (taken == 0) {
                own->eof = 0; /* Python's transport reads the end again and says how TLS ended */
                return RMUX_TLS_SOCKET_EOF;
            }
            dry = !filled && !hung_up;
            continue;
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
