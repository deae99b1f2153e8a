"""The process's compiled runtime: thread counts, and compiling ahead of first use.

Threads. fastnn leaves thread counts as it finds them (OpenBLAS starts one thread per CPU).
``set_num_threads(n)`` sets the count for every BLAS library loaded in the process (NumPy's, which
the kernels call when NumPy ships OpenBLAS, and SciPy's, which Numba's ``np.dot`` calls otherwise;
see ``kernels/_blaslib.py``) and for Numba. The BLAS products use threads, and so do a small
(fused) net's ``train_step``, ``grad`` and ``fit`` on a large batch, split in two halves when
Numba's count is 2 or more (``fastnn/_threads.py``); the elementwise kernels and the optimizer
update stay on one thread (split across two threads, the large benchmark net's update took no
less time right after the products, whose OpenBLAS worker keeps spinning on the second core). Use
``set_num_threads(1)`` when several processes share the CPUs. Results are deterministic for a
given thread count (a different count may change the rounding).

Compilation. Numba compiles a kernel the first time it sees a new combination of argument types:
for fastnn, once per params dtype and network depth (the params tuple's length is part of its
type); activations, losses and optimizers are runtime codes and never trigger a compile. Compiled
code is cached on disk (``kernels/_config.py``). ``warmup`` runs every public entry point once on
a tiny net of each requested depth, so the latency-critical first call of a program does not pay
for compilation.
"""

import time

import numba
import numpy as np

from ._checks import check_dtype, check_positive_int

__all__ = ["set_num_threads", "get_num_threads", "warmup"]


def _blas_controller():
    # Without NumPy's OpenBLAS the kernels call SciPy's BLAS, which SciPy loads lazily: load it
    # first, because threadpoolctl only sees libraries that are already loaded.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def set_num_threads(n):
    """Use ``n`` threads (1 <= n <= the number of CPUs Numba sees) in BLAS and in Numba."""
    n = check_positive_int(n, "n")
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(f"n must be at most {limit}, the CPUs available to Numba; got {n}")
    _blas_controller().limit(limits=n, user_api="blas")
    numba.set_num_threads(n)
    return n


def get_num_threads():
    """{"blas": the largest thread count among loaded BLAS libraries, "numba": Numba's count}."""
    infos = [info for info in _blas_controller().info() if info.get("user_api") == "blas"]
    return {"blas": max((i["num_threads"] for i in infos), default=1), "numba": numba.get_num_threads()}


def warmup(depths=(1, 2, 3), dtypes=(np.float32, np.float64)):
    """Compile forward, predict, Predictor, grad, backward, step, train_step and fit for each depth
    (number of layers) and dtype, and every activation's and loss's forms in each dtype; returns
    the seconds it took (a fraction of a second once cached)."""
    import fastnn as fnn

    from ._codes import ACTIVATION_CODES, LOSS_CODES
    from ._kernels import activations, losses
    from .network import FUSED_MAX_WEIGHTS, FUSED_MAX_WEIGHTS_WIDE, compile_row_kernels

    if not isinstance(depths, (tuple, list)) or not depths:
        raise TypeError(f"depths must be a non-empty sequence of layer counts; got {depths!r}")
    depths = [check_positive_int(d, "depth") for d in depths]
    if not isinstance(dtypes, (tuple, list)) or not dtypes:
        raise TypeError(f"dtypes must be a non-empty sequence of float32 / float64; got {dtypes!r}")
    dtypes = [check_dtype(d) for d in dtypes]
    start = time.perf_counter()
    x = np.zeros((2, 2))
    labels = np.zeros(2, dtype=np.int64)
    opt = fnn.adam()
    # Small nets train through the fused kernels, larger ones through BLAS (``network.fused``): a
    # net whose first layer is just past either limit compiles the second kind.
    wide = max(FUSED_MAX_WEIGHTS, FUSED_MAX_WEIGHTS_WIDE) // 2 + 1
    for dtype in dtypes:
        activations.ensure_forms(ACTIVATION_CODES.values(), dtype)
        for on_fused in (True, False):
            losses.ensure_forms([*LOSS_CODES.values(), losses.SOFTMAX_CE_LABELS], dtype, on_fused)
        for depth in depths:
            net = fnn.mlp([2] * (depth + 1))
            params = fnn.init(net, seed=0, dtype=dtype)
            state = fnn.init_state(opt, params)
            fnn.forward(net, params, x)
            for xin in (x[0].astype(dtype), x.astype(dtype)):  # one sample (1-D) and a few rows
                compile_row_kernels(net, params, xin)
            fnn.predict(net, params, x, batch_size=1)
            predictor = fnn.Predictor(net, params)
            predictor(x[0].astype(dtype))
            predictor(x)
            fnn.backward(net, params, x, x)
            for trained in (net, fnn.mlp([wide] + [2] * depth)):
                params = fnn.init(trained, seed=0, dtype=dtype)
                state = fnn.init_state(opt, params)
                xt = np.zeros((2, trained.sizes[0]))
                _, grads = fnn.grad(trained, params, xt, labels, loss="softmax_cross_entropy")
                fnn.step(opt, params, grads, state)
                fnn.train_step(trained, opt, params, state, xt, labels, loss="softmax_cross_entropy")
                fnn.fit(trained, params, xt, labels, loss="softmax_cross_entropy", epochs=1,
                        validation_data=(xt, labels), progress=False)
    return time.perf_counter() - start
