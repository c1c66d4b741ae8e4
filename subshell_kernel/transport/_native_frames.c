/* Whole zmq messages sent and received in one C call, for sockets.SharedSocket.
 *
 * pyzmq sends and receives a frame per Python call, and releases and takes back the
 * GIL around each.  A `pass` request's four outgoing messages (busy, execute_input,
 * reply, idle; 27 frames) took the main thread 110 us that way, 87 us here (means of
 * 2000 requests, two runs each); what is left is mostly libzmq waking its I/O thread,
 * once per message.  With the receives on the router thread, a request cost 13% less
 * CPU on the main thread and 15% less on the router (benchmarks/kernel_profile.py,
 * five alternated runs).  Frames.send sends the whole message in one call, and
 * Frames.recv receives one.
 *
 * The GIL is held throughout, on purpose.  Every call passes ZMQ_DONTWAIT, and the
 * kernel's sockets never make a send wait: XPUB and ROUTER drop at the high-water mark
 * instead (a socket type that would wait, a PAIR with no peer yet, fails with EAGAIN:
 * zmq.Again, as pyzmq raises with NOBLOCK).  So nothing here can block, and releasing
 * the GIL per frame only let another thread take it in the middle of a message, to be
 * waited for before the next frame.
 *
 * A socket's Frames object is used under the SharedSocket's lock, as the pyzmq socket
 * is, and never after that socket is closed (SharedSocket drops sends from then on).
 * Errors are raised by the ``raise_error(errno)`` callable the object was made with
 * (native_control.py: zmq's own exception classes), after no frame or after a whole
 * message, never in the middle of one: a send fails at its first frame or not at all
 * (a message's frames are queued together), and every frame's buffer is taken before
 * the first is sent.
 */

#include "_native.h"

int skn_zmq_api_load(zmq_api *api, PyObject *functions) {
    const Py_ssize_t count = sizeof(zmq_api) / sizeof(void *);
    if (!PyTuple_Check(functions) || PyTuple_GET_SIZE(functions) != count) {
        PyErr_SetString(PyExc_ValueError, "wrong number of libzmq functions");
        return -1;
    }
    void **slots = (void **)api;
    for (Py_ssize_t i = 0; i < count; i++) {
        slots[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(functions, i));
        if (!slots[i]) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "null libzmq function");
            return -1;
        }
    }
    return 0;
}

typedef struct {
    PyObject_HEAD
    zmq_api zmq;
    void *socket;
    PyObject *raise_error;
} Frames;

/* raise_error(errno), which raises; NULL to return */
static PyObject *fail(Frames *f, int err) {
    PyObject *result = PyObject_CallFunction(f->raise_error, "i", err);
    Py_XDECREF(result);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_OSError, "zmq error %d", err);
    return NULL;
}

enum { STACK_FRAMES = 16 };

/* Frames.send(frames) -> bool: the list of bytes-like frames as one message; True if
 * input waits on the socket afterwards (a send may consume the edge of its FD). */
static PyObject *Frames_send(Frames *f, PyObject *frames) {
    if (!PyList_Check(frames) || PyList_GET_SIZE(frames) == 0) {
        PyErr_SetString(PyExc_TypeError, "send() takes a non-empty list of frames");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(frames), taken = 0;
    Py_buffer stack[STACK_FRAMES], *views = stack;
    if (n > STACK_FRAMES && !(views = PyMem_Malloc(sizeof(Py_buffer) * n)))
        return PyErr_NoMemory();
    PyObject *result = NULL;
    for (; taken < n; taken++)
        if (PyObject_GetBuffer(PyList_GET_ITEM(frames, taken), &views[taken],
                               PyBUF_ANY_CONTIGUOUS) < 0)
            goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        while (f->zmq.send(f->socket, views[i].buf, (size_t)views[i].len, flags) < 0) {
            int err = f->zmq.errno_();
            if (err != EINTR) { fail(f, err); goto done; }
            if (PyErr_CheckSignals() < 0) goto done;  /* as pyzmq: a handler may raise */
        }
    }
    int events = 0;
    size_t size = sizeof events;
    int waiting = f->zmq.getsockopt(f->socket, ZMQ_EVENTS, &events, &size) == 0 &&
                  (events & ZMQ_POLLIN);
    result = PyBool_FromLong(waiting);
done:
    while (taken--) PyBuffer_Release(&views[taken]);
    if (views != stack) PyMem_Free(views);
    return result;
}

/* Frames.recv() -> list of bytes, or None if no message waits. */
static PyObject *Frames_recv(Frames *f, PyObject *unused) {
    (void)unused;
    PyObject *frames = PyList_New(0);
    if (!frames) return NULL;
    int more = 1;
    while (more) {
        zmq_msg_t msg;
        f->zmq.msg_init(&msg);
        if (f->zmq.msg_recv(&msg, f->socket, ZMQ_DONTWAIT) < 0) {
            int err = f->zmq.errno_();
            f->zmq.msg_close(&msg);
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) { Py_DECREF(frames); return NULL; }
                continue;
            }
            if (err == EAGAIN && PyList_GET_SIZE(frames) == 0) {  /* nothing waits */
                Py_DECREF(frames);
                Py_RETURN_NONE;
            }
            Py_DECREF(frames);  /* never after a first frame: a message arrives whole */
            return fail(f, err);
        }
        more = f->zmq.msg_more(&msg);
        PyObject *frame = PyBytes_FromStringAndSize(f->zmq.msg_data(&msg),
                                                    (Py_ssize_t)f->zmq.msg_size(&msg));
        f->zmq.msg_close(&msg);
        if (!frame || PyList_Append(frames, frame) < 0) {
            Py_XDECREF(frame);
            Py_DECREF(frames);
            return NULL;
        }
        Py_DECREF(frame);
    }
    return frames;
}

/* Frames(functions, socket, raise_error): functions as for the Reader, socket a libzmq
 * handle (pyzmq's ``Socket.underlying``). */
static PyObject *Frames_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)kwargs;
    PyObject *functions, *raise_error;
    unsigned long long socket;
    if (!PyArg_ParseTuple(args, "O!KO", &PyTuple_Type, &functions, &socket, &raise_error))
        return NULL;
    Frames *f = (Frames *)type->tp_alloc(type, 0);
    if (!f) return NULL;
    if (skn_zmq_api_load(&f->zmq, functions) < 0) { Py_DECREF(f); return NULL; }
    f->socket = (void *)(uintptr_t)socket;
    Py_INCREF(raise_error);
    f->raise_error = raise_error;
    return (PyObject *)f;
}

static void Frames_dealloc(Frames *f) {
    Py_XDECREF(f->raise_error);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static PyMethodDef Frames_methods[] = {
    {"send", (PyCFunction)Frames_send, METH_O,
     "send(frames) -> bool: one message; whether input waits on the socket after it."},
    {"recv", (PyCFunction)Frames_recv, METH_NOARGS,
     "recv() -> list of bytes, or None if no message waits."},
    {NULL, NULL, 0, NULL}};

PyTypeObject FramesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subshell_kernel.transport._native_control.Frames",
    .tp_basicsize = sizeof(Frames),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One zmq socket's whole messages, sent and received in one C call.",
    .tp_new = Frames_new,
    .tp_dealloc = (destructor)Frames_dealloc,
    .tp_methods = Frames_methods,
};
