# cython: language_level=3
#
# lazyvm.core.trace: the trace engine and read/write's copies (see trace.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.fault cimport *


cdef copy_bytes(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
           uint64_t addr, uint8_t* buf, Py_ssize_t n, bint write)
cpdef fault_range(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                uint64_t start, uint64_t end, bint write)
cpdef fault_pages(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, const int64_t[::1] addrs,
                writes, bint check_first)
cpdef access(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t addr,
           Py_ssize_t n, bint write, data=*)
cpdef read_into(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
              uint64_t addr, uint8_t[::1] out, Py_ssize_t off, Py_ssize_t n)
cpdef write_from(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
               uint64_t addr, const uint8_t[::1] src, Py_ssize_t off, Py_ssize_t n)
