/* The kernel's one replay history (core/protocol.py's Codec uses it where the C part is
 * built, as the C reader does): the last HISTORY_SIZE HMAC-SHA256 signatures accepted,
 * on any channel, as Python's own history keeps.  Each is kept as the 32 bytes its hex
 * spells, in a ring in arrival order (its pages are touched in turn, so memory grows
 * with use: 32 bytes a message up to 2 MiB), and found through an index, a hash table
 * with linear probing of ring positions (512 KiB).  Python's ReplayHistory holds about
 * 12.5 MiB when full (5.5 MiB of OrderedDict, 7 MiB of bytes objects). */

#include "_native.h"

#include <string.h>

static int unhex(const unsigned char *hex, unsigned char out[32]) {
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            unsigned char c = hex[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= c - '0';
            else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
            else return 0;
        }
        out[i] = (unsigned char)v;
    }
    return 1;
}

static uint32_t home_slot(const unsigned char d[32]) {
    uint32_t h;
    memcpy(&h, d, 4);  /* an HMAC: its bytes are as good as a hash */
    return h & SLOT_MASK;
}

/* the index slot that holds d, or the empty slot where it goes */
static uint32_t find_slot(const ReplayHistory *h, const unsigned char d[32]) {
    for (uint32_t i = home_slot(d);; i = (i + 1) & SLOT_MASK) {
        uint32_t e = h->index[i];
        if (e == 0 || memcmp(h->ring[e - 1], d, 32) == 0) return i;
    }
}

/* empty index slot i, moving back the entries after it that probing would no longer
 * find (linear probing's deletion, with no tombstones) */
static void empty_slot(ReplayHistory *h, uint32_t i) {
    for (;;) {
        h->index[i] = 0;
        uint32_t j = i;
        for (;;) {
            j = (j + 1) & SLOT_MASK;
            uint32_t e = h->index[j];
            if (e == 0) return;
            uint32_t k = home_slot(h->ring[e - 1]);
            /* the entry at j stays if its home slot k lies cyclically in (i, j] */
            int stays = i < j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays) {
                h->index[i] = e;
                i = j;
                break;
            }
        }
    }
}

int skn_history_add(ReplayHistory *h, const unsigned char *signature, size_t size) {
    unsigned char d[32];
    if (size != 64 || !unhex(signature, d)) return -1;
    int added = 0;
    pthread_mutex_lock(&h->mutex);
    uint32_t slot = find_slot(h, d);
    if (h->index[slot] == 0) {
        if (h->count == HISTORY_SIZE) {  /* forget the oldest, which ``next`` holds */
            empty_slot(h, find_slot(h, h->ring[h->next]));
            h->count--;
            slot = find_slot(h, d);
        }
        memcpy(h->ring[h->next], d, 32);
        h->index[slot] = h->next + 1;
        h->next = (h->next + 1) % HISTORY_SIZE;
        h->count++;
        added = 1;
    }
    pthread_mutex_unlock(&h->mutex);
    return added;
}

static PyObject *ReplayHistory_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    (void)args; (void)kwargs;
    ReplayHistory *h = (ReplayHistory *)type->tp_alloc(type, 0);
    if (!h) return NULL;
    pthread_mutex_init(&h->mutex, NULL);
    /* calloc: the pages stay the OS's zero pages until signatures land in them */
    h->ring = PyMem_RawCalloc(HISTORY_SIZE, 32);
    h->index = PyMem_RawCalloc(HISTORY_SLOTS, sizeof(uint32_t));
    if (!h->ring || !h->index) { Py_DECREF(h); return PyErr_NoMemory(); }
    return (PyObject *)h;
}

static void ReplayHistory_dealloc(ReplayHistory *h) {
    PyMem_RawFree(h->ring);
    PyMem_RawFree(h->index);
    pthread_mutex_destroy(&h->mutex);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *ReplayHistory_add(ReplayHistory *h, PyObject *arg) {
    if (!PyBytes_Check(arg)) { PyErr_SetString(PyExc_TypeError, "a signature is bytes"); return NULL; }
    int added = skn_history_add(h, (const unsigned char *)PyBytes_AS_STRING(arg),
                            (size_t)PyBytes_GET_SIZE(arg));
    if (added < 0) {
        PyErr_SetString(PyExc_ValueError, "not an HMAC-SHA256 signature (64 hex digits)");
        return NULL;
    }
    return PyBool_FromLong(added);
}

static PyMethodDef ReplayHistory_methods[] = {
    {"add", (PyCFunction)ReplayHistory_add, METH_O,
     "add(signature) -> True if it was new (and is remembered now), False if seen before."},
    {NULL, NULL, 0, NULL}};

PyTypeObject ReplayHistoryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "subshell_kernel.transport._native_control.ReplayHistory",
    .tp_basicsize = sizeof(ReplayHistory),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The signatures accepted so far, shared by Python and the C control reader.",
    .tp_new = ReplayHistory_new,
    .tp_dealloc = (destructor)ReplayHistory_dealloc,
    .tp_methods = ReplayHistory_methods,
};
