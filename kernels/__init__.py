"""Numba-compiled kernels for fastnn, installed as ``fastnn._kernels``.

Kernels only compute: they are loops that read their inputs and write into ``out`` arrays the
caller allocated, and they never import ``fastnn``. Every input has been checked by the public
wrappers before it arrives here, because Numba does not check bounds. The exceptions are stated
where they are coded: a kernel may allocate private scratch that never leaves the call, the row
kernels check their shapes themselves and return False on a mismatch (so ``fastnn.forward`` can
pass a sample straight in), and the BLAS products check that shapes agree before handing raw
pointers to BLAS.
"""
