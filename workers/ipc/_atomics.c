/* Acquire/release loads, stores and fences on 64-bit words in shared memory.
 *
 * Python and numpy emit no memory fences. On x86 the hardware keeps stores in order
 * anyway, but ARM (most camera boxes) may make a frame's bytes visible to another core
 * after the sequence number that says the frame is complete. These few functions give
 * the wire's seqlock the ordering it needs on every CPU; the argument is written out in
 * wire.py. Each call is a real, opaque function call, so neither the C compiler nor
 * CPython can move the surrounding numpy copies across it, and the fence instruction
 * (dmb on ARM) orders them in hardware.
 *
 * Every function takes a writable buffer (the wire's mapping) and a byte offset, and
 * checks bounds and 8-byte alignment, so a wrong offset is a ValueError, not a crash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint64_t *word_at(PyObject *buf, PyObject *offset_obj, Py_buffer *view)
{
    Py_ssize_t offset = PyLong_AsSsize_t(offset_obj);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    if (PyObject_GetBuffer(buf, view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (offset < 0 || offset + 8 > view->len) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "offset %zd is outside the %zd-byte buffer", offset,
                     view->len);
        return NULL;
    }
    uintptr_t addr = (uintptr_t)view->buf + (uintptr_t)offset;
    if (addr % 8 != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "offset %zd is not 8-byte aligned", offset);
        return NULL;
    }
    return (uint64_t *)addr;
}

static int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char *name)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    return 0;
}

/* The (buf, offset) word of a load; NULL with an exception set. */
static uint64_t *load_word(PyObject *const *args, Py_ssize_t nargs, const char *name,
                           Py_buffer *view)
{
    if (check_nargs(nargs, 2, name) < 0)
        return NULL;
    return word_at(args[0], args[1], view);
}

/* The (buf, offset) word and the value of a store; NULL with an exception set. */
static uint64_t *store_word(PyObject *const *args, Py_ssize_t nargs, const char *name,
                            Py_buffer *view, uint64_t *value)
{
    if (check_nargs(nargs, 3, name) < 0)
        return NULL;
    unsigned long long v = PyLong_AsUnsignedLongLong(args[2]);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    *value = (uint64_t)v;
    return word_at(args[0], args[1], view);
}

/* Each ordering has its own function with the order written as a constant at the
 * __atomic_* call. Passed down as an argument, the order is a run-time value wherever
 * the compiler does not inline, and GCC then treats it as seq_cst: on aarch64 a relaxed
 * load became ldar and a relaxed store stlr. packaging/arm64-check disassembles the
 * arm64 build to keep it so: acquire ldar, release stlr, relaxed plain ldr/str, fences
 * dmb. */

static PyObject *load_acquire(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t *word = load_word(args, nargs, "load_acquire", &view);
    if (word == NULL)
        return NULL;
    uint64_t value = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(value);
}

static PyObject *load_relaxed(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t *word = load_word(args, nargs, "load_relaxed", &view);
    if (word == NULL)
        return NULL;
    uint64_t value = __atomic_load_n(word, __ATOMIC_RELAXED);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(value);
}

static PyObject *store_release(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t value;
    uint64_t *word = store_word(args, nargs, "store_release", &view, &value);
    if (word == NULL)
        return NULL;
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *store_relaxed(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    uint64_t value;
    uint64_t *word = store_word(args, nargs, "store_relaxed", &view, &value);
    if (word == NULL)
        return NULL;
    __atomic_store_n(word, value, __ATOMIC_RELAXED);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *fence_acquire(PyObject *m, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    Py_RETURN_NONE;
}

static PyObject *fence_release(PyObject *m, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *fence_full(PyObject *m, PyObject *unused)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load_acquire", (PyCFunction)(void (*)(void))load_acquire, METH_FASTCALL,
     "load_acquire(buf, offset) -> int: read a u64; later reads cannot move before it."},
    {"load_relaxed", (PyCFunction)(void (*)(void))load_relaxed, METH_FASTCALL,
     "load_relaxed(buf, offset) -> int: read a u64 in one piece, no ordering."},
    {"store_release", (PyCFunction)(void (*)(void))store_release, METH_FASTCALL,
     "store_release(buf, offset, value): write a u64; earlier writes cannot move after it."},
    {"store_relaxed", (PyCFunction)(void (*)(void))store_relaxed, METH_FASTCALL,
     "store_relaxed(buf, offset, value): write a u64 in one piece, no ordering."},
    {"fence_acquire", fence_acquire, METH_NOARGS,
     "fence_acquire(): reads before it happen before reads and writes after it."},
    {"fence_release", fence_release, METH_NOARGS,
     "fence_release(): reads and writes before it happen before writes after it."},
    {"fence_full", fence_full, METH_NOARGS,
     "fence_full(): every read and write before it happens before every one after it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_atomics",
    "Acquire/release ordering for the wire's seqlock (see wire.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__atomics(void)
{
    return PyModule_Create(&module);
}
