"""Numba-compiled kernels for fastnn.

Kernels only compute: they are loops that read their inputs and write into ``out`` arrays the
caller allocated. They never validate, never allocate on the caller's behalf, and never import
``fastnn``; every input has been checked by the public wrappers before it arrives here, because
Numba does not check bounds.
"""
