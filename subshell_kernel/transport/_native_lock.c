/* SocketLock: the lock of the iopub socket, which Python threads (sockets.SharedSocket)
 * and the C control reader both publish on.  To Python it is a threading.Lock for
 * ``with``; C takes its mutex without the GIL.  ``closed`` is set, under the lock,
 * when the socket is closed: nobody sends on it after that. */

#include "_native.h"

static PyObject *SocketLock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)args; (void)kwargs;
    SocketLock *l = (SocketLock *)type->tp_alloc(type, 0);
    if (l) pthread_mutex_init(&l->mutex, NULL);
    return (PyObject *)l;
}

static void SocketLock_dealloc(SocketLock *l) {
    pthread_mutex_destroy(&l->mutex);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyObject *SocketLock_enter(SocketLock *l, PyObject *unused) {
    (void)unused;
    if (pthread_mutex_trylock(&l->mutex) != 0) {
        Py_BEGIN_ALLOW_THREADS  /* the holder may need the GIL to let go */
        pthread_mutex_lock(&l->mutex);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_TRUE;
}

static PyObject *SocketLock_exit(SocketLock *l, PyObject *args) {
    (void)args;
    pthread_mutex_unlock(&l->mutex);
    Py_RETURN_FALSE;
}

static PyObject *SocketLock_get_closed(SocketLock *l, void *closure) {
    (void)closure;
    return PyBool_FromLong(l->closed);
}

static int SocketLock_set_closed(SocketLock *l, PyObject *value, void *closure) {
    (void)closure;
    if (!value) { PyErr_SetString(PyExc_TypeError, "cannot delete closed"); return -1; }
    int truth = PyObject_IsTrue(value);
    if (truth < 0) return -1;
    l->closed = truth;
    return 0;
}

static PyMethodDef SocketLock_methods[] = {
    {"__enter__", (PyCFunction)SocketLock_enter, METH_NOARGS, "Take the lock."},
    {"__exit__", (PyCFunction)SocketLock_exit, METH_VARARGS, "Let the lock go."},
    {"acquire", (PyCFunction)SocketLock_enter, METH_NOARGS, "Take the lock."},
    {"release", (PyCFunction)SocketLock_exit, METH_VARARGS, "Let the lock go."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef SocketLock_getset[] = {
    {"closed", (getter)SocketLock_get_closed, (setter)SocketLock_set_closed,
     "Whether the guarded socket is closed (set under the lock).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject SocketLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subshell_kernel.transport._native_control.SocketLock",
    .tp_basicsize = sizeof(SocketLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The lock of a socket that Python threads and the C control reader share.",
    .tp_new = SocketLock_new,
    .tp_dealloc = (destructor)SocketLock_dealloc,
    .tp_methods = SocketLock_methods,
    .tp_getset = SocketLock_getset,
};
