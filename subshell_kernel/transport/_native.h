/* What the C part's files share (setup.py builds them into one extension,
 * subshell_kernel.transport._native_control; see _native_control.c). */

#ifndef SUBSHELL_KERNEL_NATIVE_H
#define SUBSHELL_KERNEL_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- _native_frames.c: libzmq (as declared in zmq.h 4.x), and whole messages ------ */

/* libzmq is not linked: these are the functions of the libzmq that pyzmq loaded, their
 * addresses found by native_control.py, so every socket stays pyzmq's own. */
typedef struct { unsigned char _[64]; } __attribute__((aligned(sizeof(void *)))) zmq_msg_t;
typedef struct { void *socket; int fd; short events; short revents; } zmq_pollitem_t;

#define ZMQ_DONTWAIT 1
#define ZMQ_SNDMORE 2
#define ZMQ_POLLIN 1
#define ZMQ_EVENTS 15
#define ZMQ_XPUB_NODROP 69
#define ZMQ_ETERM (156384712 + 53) /* ZMQ_HAUSNUMERO + 53 */

/* in the order of native_control.ZMQ_FUNCTIONS */
typedef struct {
    int (*poll)(zmq_pollitem_t *, int, long);
    int (*msg_init)(zmq_msg_t *);
    int (*msg_recv)(zmq_msg_t *, void *, int);
    void *(*msg_data)(zmq_msg_t *);
    size_t (*msg_size)(const zmq_msg_t *);
    int (*msg_more)(const zmq_msg_t *);
    int (*msg_close)(zmq_msg_t *);
    int (*send)(void *, const void *, size_t, int);
    int (*getsockopt)(void *, int, void *, size_t *);
    int (*errno_)(void);
    int (*setsockopt)(void *, int, const void *, size_t);
} zmq_api;

/* Fill api from a tuple of the functions' addresses (ints); -1 with an exception set. */
int skn_zmq_api_load(zmq_api *api, PyObject *functions);

/* Frames: a whole multipart message sent or received in one C call (see the file). */
extern PyTypeObject FramesType;

/* ---- _native_hmac.c: SHA-256 (FIPS 180-4) and HMAC (RFC 2104) ---------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t length;      /* bytes hashed so far */
    unsigned char block[64];
    size_t used;          /* bytes in block */
} sha256;

/* the two hash states after the padded key: copied per message, as stamps.Signer does */
typedef struct { sha256 inner, outer; } hmac_key;

void skn_hmac_key_init(hmac_key *k, const unsigned char *key, size_t n);
/* lowercase hex of the HMAC of the n parts, into out[64] */
void skn_hmac_hex(const hmac_key *k, const unsigned char *const *parts, const size_t *sizes,
                  int n, char out[64]);

/* ---- _native_header.c: the header check -------------------------------------------- */

enum { NOT_SURE = 0, KERNEL_INFO = 1, OTHER_TYPE = 2 };
/* KERNEL_INFO, OTHER_TYPE (a header this code understands, of another type) or
 * NOT_SURE (leave it to Python, which parses any JSON). */
int skn_classify_header(const unsigned char *s, size_t n);

/* ---- _native_lock.c: SocketLock, a lock that Python threads and the C reader share -- */

/* A threading.Lock for ``with``, whose mutex C code takes without the GIL.  ``closed``
 * is set (under the lock) when the socket it guards is closed. */
typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    int closed;
} SocketLock;

extern PyTypeObject SocketLockType;

/* ---- _native_history.c: ReplayHistory, the signatures accepted on every channel ----- */

/* The kernel's one replay history (core/protocol.py's Codec uses it where the C part is
 * built, as the C reader does): the last HISTORY_SIZE HMAC-SHA256 signatures accepted,
 * on any channel, as Python's own history keeps.  Each is kept as the 32 bytes its hex
 * spells, in a ring in arrival order (its pages are touched in turn, so memory grows
 * with use: 32 bytes a message up to 2 MiB), and found through an index, a hash table
 * with linear probing of ring positions (512 KiB).  Python's OrderedDict of the same
 * signatures holds about 13 MiB when full. */
#define HISTORY_SIZE 65536
#define HISTORY_SLOTS (2 * HISTORY_SIZE)  /* a power of two: the index is at most half full */
#define SLOT_MASK (HISTORY_SLOTS - 1)

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mutex;
    unsigned char (*ring)[32];  /* HISTORY_SIZE signatures, oldest at ``next`` once full */
    uint32_t *index;            /* HISTORY_SLOTS entries: ring position + 1, or 0: empty */
    uint32_t next;
    uint32_t count;
} ReplayHistory;

extern PyTypeObject ReplayHistoryType;
/* 1 if the 64-hex signature was new (it is remembered now), 0 if seen before, -1 if it
 * is not 64 lowercase hex digits (nothing that passed verification).  GIL not needed. */
int skn_history_add(ReplayHistory *h, const unsigned char *signature, size_t size);

#endif
