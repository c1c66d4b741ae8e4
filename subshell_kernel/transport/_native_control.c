/* The control socket's reader, in C: it answers kernel_info_request without the GIL.
 *
 * The control thread (control.py) calls Reader.next() and waits there, GIL released,
 * for the next control message.  A kernel_info_request is answered here, GIL still
 * released, and next() goes on waiting: a request costs no Python at all, so its reply
 * does not wait for a thread that holds the GIL (a CPU loop gives it up every switch
 * interval, a C call that never releases it not at all).  Every other message, and
 * every message this code is not sure about, is returned to Python, which does all the
 * rest exactly as before: a message is answered here only when it is
 *
 *   - idents, <IDS|MSG>, signature, header, parent, metadata, content, no buffers;
 *   - signed right (HMAC-SHA256 over the four parts, or no key at all) and not a
 *     signature the kernel accepted before, on any channel (the ReplayHistory that
 *     Python's Codec shares; a replay is returned as REPLAYED for Python to log and
 *     drop);
 *   - a header that is a flat JSON object of ASCII strings with a "msg_id" and a
 *     "msg_type" of exactly "kernel_info_request", and no "subshell_id";
 *   - parent, metadata and content each exactly "{}".
 *
 * The answer is the lifecycle of core/lifecycle.py for that one request: status busy,
 * the reply (its content the bytes Python packed once: kernel_info is the same for the
 * kernel's whole life; metadata "started"), status idle.  The statuses are sent on the
 * iopub socket under its SocketLock, the lock its Python publishers take too
 * (sockets.SharedSocket), with SharedSocket's rules: nothing once it is closed, and a
 * subscription found waiting after a send is reported (next() returns INPUT_WAITING)
 * for Python to wake the subscriptions' reader.  Headers are formatted as
 * core/protocol.py formats its own (the same field order and spacing); msg ids carry
 * their own "n" so they never collide with Python's.
 *
 * The other files of the extension (setup.py): _native_hmac.c (SHA-256, HMAC),
 * _native_header.c (the header check), _native_lock.c (SocketLock), _native_history.c
 * (ReplayHistory), _native_frames.c (the libzmq functions, and Frames: whole messages
 * in one call, for the kernel's other sockets); _native.h declares what they share.
 *
 * libzmq is not linked: the functions are those of the libzmq that pyzmq loaded (their
 * addresses come from Python, native_control.py), so the sockets are pyzmq's own.
 * Only the control thread uses the control socket.
 */

#include "_native.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the Reader ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    zmq_api zmq;
    void *control;       /* the control ROUTER socket */
    void *iopub;         /* the iopub XPUB socket, used under iopub_lock */
    SocketLock *iopub_lock;
    int input_waiting;   /* a send on iopub found a subscription waiting */
    int signed_;     /* 0: the connection has no key (nothing is signed) */
    hmac_key key;
    char id_prefix[96];
    char session[96];
    char version[16];
    PyObject *content;  /* bytes: the kernel_info_reply content */
    ReplayHistory *history;
    unsigned long long counter;
    /* the last request answered here, for get_parent("control"): its frames, joined,
     * with their sizes; ``answered`` counts the answers (all under last_mutex) */
    pthread_mutex_t last_mutex;
    unsigned char *last;
    size_t last_sizes[64];
    int last_count;
    unsigned long long answered;
    double stall_ms;  /* iopub.STALL_SECONDS, in ms */
    struct timespec retry;  /* iopub.RETRY_SECONDS */
} Reader;

/* the result codes of next() that are not a message */
#define RESULT_MESSAGE 0
#define RESULT_TIMEOUT 1
#define RESULT_REPLAYED 2
#define RESULT_ERROR 3
#define RESULT_INPUT_WAITING 4

static void iso_now(char out[64]) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ld+00:00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

/* one message: frames[0..count), the last sent without SNDMORE; -1 on a send error */
static int send_all(Reader *r, void *socket, const unsigned char *const *frames,
                    const size_t *sizes, int count) {
    for (int i = 0; i < count; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < count ? ZMQ_SNDMORE : 0);
        if (r->zmq.send(socket, frames[i], sizes[i], flags) < 0) return -1;
    }
    return 0;
}

/* a message of ours: [prefix frames] <IDS|MSG> signature header parent metadata content */
static int send_message(Reader *r, void *socket, const unsigned char *const *prefix,
                        const size_t *prefix_sizes, int nprefix, const char *msg_type,
                        const unsigned char *parent, size_t parent_size,
                        const char *metadata, const unsigned char *content,
                        size_t content_size) {
    char date[64], header[512], signature[64];
    iso_now(date);
    int header_size = snprintf(
        header, sizeof header,
        "{\"msg_id\": \"%sn%llu\", \"msg_type\": \"%s\", \"username\": \"kernel\", "
        "\"session\": \"%s\", \"date\": \"%s\", \"version\": \"%s\"}",
        r->id_prefix, r->counter++, msg_type, r->session, date, r->version);
    const unsigned char *parts[4] = {(const unsigned char *)header, parent,
                                     (const unsigned char *)metadata, content};
    size_t sizes[4] = {(size_t)header_size, parent_size, strlen(metadata), content_size};
    if (r->signed_) skn_hmac_hex(&r->key, parts, sizes, 4, signature);

    enum { MAX_FRAMES = 64 };
    const unsigned char *frames[MAX_FRAMES];
    size_t frame_sizes[MAX_FRAMES];
    if (nprefix > MAX_FRAMES - 6) return 0;  /* never: the caller checked */
    int n = 0;
    for (int i = 0; i < nprefix; i++, n++) { frames[n] = prefix[i]; frame_sizes[n] = prefix_sizes[i]; }
    frames[n] = (const unsigned char *)"<IDS|MSG>"; frame_sizes[n++] = 9;
    frames[n] = (const unsigned char *)signature; frame_sizes[n++] = r->signed_ ? 64 : 0;
    for (int i = 0; i < 4; i++, n++) { frames[n] = parts[i]; frame_sizes[n] = sizes[i]; }
    return send_all(r, socket, frames, frame_sizes, n);
}

static const unsigned char STATUS_TOPIC[] = "kernel.status";

static double elapsed_ms(const struct timespec *since) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1e3 + (now.tv_nsec - since->tv_nsec) / 1e6;
}

/* A status, as iopub.py's IOPubSocket sends: the socket is XPUB_NODROP, and a
 * subscriber whose queue is full is waited for (the lock let go meanwhile) for up to
 * stall_ms, then sent to lossy, which makes zmq set it aside until it reads again. */
static int send_status(Reader *r, const char *content, const unsigned char *parent,
                       size_t parent_size) {
    const unsigned char *topic[1] = {STATUS_TOPIC};
    size_t topic_size[1] = {sizeof STATUS_TOPIC - 1};
    struct timespec start;
    int rc = 0, events = 0, lossy = 0, nodrop = 1;
    size_t events_size = sizeof events;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_mutex_lock(&r->iopub_lock->mutex);
    while (!r->iopub_lock->closed) {
        int last_try = elapsed_ms(&start) >= r->stall_ms;
        if (last_try) r->zmq.setsockopt(r->iopub, ZMQ_XPUB_NODROP, &lossy, sizeof lossy);
        rc = send_message(r, r->iopub, topic, topic_size, 1, "status", parent, parent_size,
                          "{}", (const unsigned char *)content, strlen(content));
        if (last_try) r->zmq.setsockopt(r->iopub, ZMQ_XPUB_NODROP, &nodrop, sizeof nodrop);
        /* (reading EVENTS also takes in how far the subscribers got) */
        if (r->zmq.getsockopt(r->iopub, ZMQ_EVENTS, &events, &events_size) == 0 &&
            (events & ZMQ_POLLIN))
            r->input_waiting = 1;
        if (rc == 0 || last_try || r->zmq.errno_() != EAGAIN) break;
        pthread_mutex_unlock(&r->iopub_lock->mutex);
        nanosleep(&r->retry, NULL);
        pthread_mutex_lock(&r->iopub_lock->mutex);
    }
    pthread_mutex_unlock(&r->iopub_lock->mutex);
    return rc;
}

enum { ANSWERED, NOT_OURS, REPLAYED, SEND_FAILED };

/* A send that failed ends the reader only at shutdown (ETERM); otherwise the message is
 * lost as zmq loses it for a peer that went away (a status nobody reads any more). */
static int fatal(Reader *r, int rc) { return rc < 0 && r->zmq.errno_() == ZMQ_ETERM; }

static void remember_last(Reader *r, const unsigned char *const *data, const size_t *size,
                          int count) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += size[i];
    unsigned char *copy = PyMem_RawMalloc(total ? total : 1);
    if (!copy) return;  /* get_parent("control") then names the request before */
    pthread_mutex_lock(&r->last_mutex);
    PyMem_RawFree(r->last);
    r->last = copy;
    for (int i = 0; i < count; i++) {
        memcpy(copy, data[i], size[i]);
        copy += size[i];
        r->last_sizes[i] = size[i];
    }
    r->last_count = count;
    r->answered++;
    pthread_mutex_unlock(&r->last_mutex);
}

/* Answer the message in msgs[0..count) if it is a kernel_info_request we are sure of. */
static int try_answer(Reader *r, zmq_msg_t *msgs, int count) {
    const unsigned char *data[64];
    size_t size[64];
    if (count > 64) return NOT_OURS;
    int delim = -1;
    for (int i = 0; i < count; i++) {
        data[i] = r->zmq.msg_data(&msgs[i]);
        size[i] = r->zmq.msg_size(&msgs[i]);
        if (delim < 0 && size[i] == 9 && memcmp(data[i], "<IDS|MSG>", 9) == 0) delim = i;
    }
    if (delim < 0 || count - delim - 1 != 5 || delim > 32) return NOT_OURS;
    const unsigned char *const *part = data + delim + 1;
    const size_t *part_size = size + delim + 1;
    for (int i = 2; i <= 4; i++)  /* parent, metadata, content */
        if (part_size[i] != 2 || memcmp(part[i], "{}", 2) != 0) return NOT_OURS;
    if (skn_classify_header(part[1], part_size[1]) != KERNEL_INFO) return NOT_OURS;
    if (r->signed_) {
        char expected[64];
        unsigned char diff = 0;
        if (part_size[0] != 64) return NOT_OURS;
        skn_hmac_hex(&r->key, part + 1, part_size + 1, 4, expected);
        for (int i = 0; i < 64; i++) diff |= (unsigned char)expected[i] ^ part[0][i];
        if (diff) return NOT_OURS;  /* Python says why */
        if (skn_history_add(r->history, part[0], 64) != 1) return REPLAYED;
    }
    remember_last(r, data, size, count);
    const unsigned char *header = part[1];
    size_t header_size = part_size[1];
    if (fatal(r, send_status(r, "{\"execution_state\": \"busy\"}", header, header_size)))
        return SEND_FAILED;
    char date[64], metadata[96];
    iso_now(date);
    snprintf(metadata, sizeof metadata, "{\"started\": \"%s\"}", date);
    if (fatal(r, send_message(r, r->control, data, size, delim, "kernel_info_reply", header,
                              header_size, metadata,
                              (const unsigned char *)PyBytes_AS_STRING(r->content),
                              (size_t)PyBytes_GET_SIZE(r->content))))
        return SEND_FAILED;
    if (fatal(r, send_status(r, "{\"execution_state\": \"idle\"}", header, header_size)))
        return SEND_FAILED;
    return ANSWERED;
}

static void close_all(Reader *r, zmq_msg_t *msgs, int count) {
    for (int i = 0; i < count; i++) r->zmq.msg_close(&msgs[i]);
}

/* Reader.next(timeout_ms, answer) -> (code, frames or errno)
 *
 * Waits for the next control message that Python must handle (GIL released),
 * answering kernel_info requests meanwhile if ``answer``.  Returns (0, [bytes...]) for
 * a message, (1, None) after timeout_ms (-1: none) with no message at all, (2, None)
 * for a replayed kernel_info request (dropped), (3, errno) when a zmq call failed (ETERM
 * at shutdown), (4, None) when a subscription waits on iopub. */
static PyObject *Reader_next(Reader *r, PyObject *args) {
    long timeout;
    int answer;
    if (!PyArg_ParseTuple(args, "lp", &timeout, &answer)) return NULL;
    int code = RESULT_TIMEOUT, err = 0, count = 0, capacity = 8;
    zmq_msg_t *msgs = PyMem_RawMalloc(sizeof(zmq_msg_t) * capacity);
    if (!msgs) return PyErr_NoMemory();

    Py_BEGIN_ALLOW_THREADS
    while (1) {
        zmq_pollitem_t item = {r->control, 0, ZMQ_POLLIN, 0};
        int rc = r->zmq.poll(&item, 1, timeout);
        if (rc < 0) {
            err = r->zmq.errno_();
            if (err == EINTR) continue;
            code = RESULT_ERROR;
            break;
        }
        if (rc == 0) { code = RESULT_TIMEOUT; break; }
        count = 0;
        int more = 1, failed = 0;
        while (more) {
            if (count == capacity) {
                zmq_msg_t *bigger = PyMem_RawRealloc(msgs, sizeof(zmq_msg_t) * capacity * 2);
                if (!bigger) { failed = ENOMEM; break; }
                msgs = bigger;
                capacity *= 2;
            }
            r->zmq.msg_init(&msgs[count]);
            if (r->zmq.msg_recv(&msgs[count], r->control, ZMQ_DONTWAIT) < 0) {
                failed = r->zmq.errno_();
                r->zmq.msg_close(&msgs[count]);
                break;
            }
            more = r->zmq.msg_more(&msgs[count]);
            count++;
        }
        if (failed) {
            close_all(r, msgs, count);
            count = 0;
            if (failed == EAGAIN) continue;  /* woken for nothing */
            code = RESULT_ERROR;
            err = failed;
            break;
        }
        int outcome = answer ? try_answer(r, msgs, count) : NOT_OURS;
        if (outcome == ANSWERED) {
            close_all(r, msgs, count);
            count = 0;
            if (r->input_waiting) { r->input_waiting = 0; code = RESULT_INPUT_WAITING; break; }
            continue;
        }
        if (outcome == REPLAYED) { close_all(r, msgs, count); count = 0; code = RESULT_REPLAYED; break; }
        if (outcome == SEND_FAILED) {
            err = ZMQ_ETERM;
            close_all(r, msgs, count);
            count = 0;
            code = RESULT_ERROR;
            break;
        }
        code = RESULT_MESSAGE;
        break;
    }
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    if (code == RESULT_MESSAGE) {
        PyObject *frames = PyList_New(count);
        for (int i = 0; frames && i < count; i++) {
            PyObject *b = PyBytes_FromStringAndSize(r->zmq.msg_data(&msgs[i]),
                                                    (Py_ssize_t)r->zmq.msg_size(&msgs[i]));
            if (!b) { Py_CLEAR(frames); break; }
            PyList_SET_ITEM(frames, i, b);
        }
        close_all(r, msgs, count);
        if (frames) result = Py_BuildValue("(iN)", code, frames);
    } else if (code == RESULT_ERROR) {
        result = Py_BuildValue("(ii)", code, err);
    } else {
        result = Py_BuildValue("(iO)", code, Py_None);
    }
    PyMem_RawFree(msgs);
    return result;
}

/* Reader.last_answered() -> (count, frames or None): how many requests were answered
 * here, and the frames of the last one. */
static PyObject *Reader_last_answered(Reader *r, PyObject *unused) {
    (void)unused;
    pthread_mutex_lock(&r->last_mutex);
    unsigned long long answered = r->answered;
    PyObject *frames = Py_None;
    Py_INCREF(frames);
    if (r->last) {
        Py_DECREF(frames);
        frames = PyList_New(r->last_count);
        const unsigned char *p = r->last;
        for (int i = 0; frames && i < r->last_count; i++) {
            PyObject *b = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)r->last_sizes[i]);
            if (!b) { Py_CLEAR(frames); break; }
            PyList_SET_ITEM(frames, i, b);
            p += r->last_sizes[i];
        }
    }
    pthread_mutex_unlock(&r->last_mutex);
    if (!frames) return NULL;
    return Py_BuildValue("(KN)", answered, frames);
}

static void Reader_dealloc(Reader *r) {
    Py_XDECREF(r->content);
    Py_XDECREF(r->iopub_lock);
    Py_XDECREF(r->history);
    PyMem_RawFree(r->last);
    pthread_mutex_destroy(&r->last_mutex);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int copy_text(char *dst, size_t cap, PyObject *text, const char *what) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (!s) return -1;
    if ((size_t)n >= cap) {
        PyErr_Format(PyExc_ValueError, "%s is too long", what);
        return -1;
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* Reader(control, iopub, iopub_lock, history, functions, key, id_prefix, session,
 * version, content, stall_seconds, retry_seconds): the sockets as libzmq handles
 * (pyzmq's ``Socket.underlying``), the lock of iopub, the kernel's replay history, the
 * libzmq functions' addresses in zmq_api's order, the connection key (b"": nothing signed),
 * the strings of our headers (JSON-safe, checked by native_control.py) and the
 * kernel_info_reply content, packed; how long a status waits for a full subscriber, and
 * how long it sleeps between tries. */
static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)kwargs;
    unsigned long long control, iopub;
    PyObject *lock, *history, *functions, *id_prefix, *session, *version, *content;
    Py_buffer key;
    double stall_seconds, retry_seconds;
    if (!PyArg_ParseTuple(args, "KKO!O!O!y*UUUSdd", &control, &iopub, &SocketLockType, &lock,
                          &ReplayHistoryType, &history, &PyTuple_Type, &functions, &key,
                          &id_prefix, &session, &version, &content, &stall_seconds,
                          &retry_seconds))
        return NULL;
    Reader *r = (Reader *)type->tp_alloc(type, 0);
    if (!r) { PyBuffer_Release(&key); return NULL; }
    pthread_mutex_init(&r->last_mutex, NULL);
    Py_INCREF(history);
    r->history = (ReplayHistory *)history;
    if (skn_zmq_api_load(&r->zmq, functions) < 0) goto fail;
    r->control = (void *)(uintptr_t)control;
    r->iopub = (void *)(uintptr_t)iopub;
    Py_INCREF(lock);
    r->iopub_lock = (SocketLock *)lock;
    r->stall_ms = stall_seconds * 1e3;
    r->retry.tv_sec = (time_t)retry_seconds;
    r->retry.tv_nsec = (long)((retry_seconds - (double)r->retry.tv_sec) * 1e9);
    r->signed_ = key.len > 0;
    if (r->signed_) skn_hmac_key_init(&r->key, key.buf, (size_t)key.len);
    if (copy_text(r->id_prefix, sizeof r->id_prefix, id_prefix, "id_prefix") < 0 ||
        copy_text(r->session, sizeof r->session, session, "session") < 0 ||
        copy_text(r->version, sizeof r->version, version, "version") < 0)
        goto fail;
    Py_INCREF(content);
    r->content = content;
    PyBuffer_Release(&key);
    return (PyObject *)r;
fail:
    PyBuffer_Release(&key);
    Py_DECREF(r);
    return NULL;
}

static PyMethodDef Reader_methods[] = {
    {"next", (PyCFunction)Reader_next, METH_VARARGS,
     "next(timeout_ms, answer) -> (code, frames | errno | None); see the C source."},
    {"last_answered", (PyCFunction)Reader_last_answered, METH_NOARGS,
     "last_answered() -> (requests answered here, the frames of the last one or None)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subshell_kernel.transport._native_control.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The control socket's reader: answers kernel_info_request without the GIL.",
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
};

/* ---- the pure parts, for the unit tests ----------------------------------------- */

/* hmac_sha256_hex(key, parts) -> bytes: what the Reader signs with */
static PyObject *py_hmac_hex(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer key;
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "y*O!", &key, &PyList_Type, &parts)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(parts);
    if (n > 16) { PyBuffer_Release(&key); PyErr_SetString(PyExc_ValueError, "too many parts"); return NULL; }
    const unsigned char *data[16];
    size_t sizes[16];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(parts, i);
        if (!PyBytes_Check(p)) { PyBuffer_Release(&key); PyErr_SetString(PyExc_TypeError, "parts must be bytes"); return NULL; }
        data[i] = (const unsigned char *)PyBytes_AS_STRING(p);
        sizes[i] = (size_t)PyBytes_GET_SIZE(p);
    }
    hmac_key k;
    char out[64];
    skn_hmac_key_init(&k, key.buf, (size_t)key.len);
    skn_hmac_hex(&k, data, sizes, (int)n, out);
    PyBuffer_Release(&key);
    return PyBytes_FromStringAndSize(out, 64);
}

/* classify_header(header) -> 0 not sure, 1 kernel_info_request, 2 another type */
static PyObject *py_classify_header(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer header;
    if (!PyArg_ParseTuple(args, "y*", &header)) return NULL;
    int kind = skn_classify_header(header.buf, (size_t)header.len);
    PyBuffer_Release(&header);
    return PyLong_FromLong(kind);
}

static PyMethodDef module_methods[] = {
    {"hmac_sha256_hex", py_hmac_hex, METH_VARARGS, "HMAC-SHA256 of the parts, lowercase hex."},
    {"classify_header", py_classify_header, METH_VARARGS,
     "0: leave it to Python, 1: a kernel_info_request header, 2: a header of another type."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_control",
    "The control socket's reader in C (see native_control.py).", -1, module_methods};

PyMODINIT_FUNC PyInit__native_control(void) {
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&SocketLockType) < 0 ||
        PyType_Ready(&ReplayHistoryType) < 0 || PyType_Ready(&FramesType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObjectRef(m, "SocketLock", (PyObject *)&SocketLockType) < 0 ||
        PyModule_AddObjectRef(m, "ReplayHistory", (PyObject *)&ReplayHistoryType) < 0 ||
        PyModule_AddObjectRef(m, "Frames", (PyObject *)&FramesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

