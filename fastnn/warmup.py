"""warmup: compile (or load from the on-disk cache) every kernel ahead of first use.

Numba compiles a kernel the first time it sees a new combination of argument types. For fastnn that
is one compile per params dtype and network depth (the params tuple's length is part of its type);
activations, losses and optimizers are runtime codes and never trigger a compile. ``warmup`` runs
every public entry point once on a tiny net of each requested depth, so the latency-critical first
call of a program does not pay for compilation.
"""

import time

import numpy as np

__all__ = ["warmup"]


def warmup(depths=(1, 2, 3), dtypes=(np.float32, np.float64)):
    """Compile forward, predict, Predictor, grad, backward, step, train_step and fit for each depth
    (number of layers) and dtype; returns the seconds it took (a fraction of a second once cached)."""
    import fastnn as fnn

    from ._checks import check_positive_int
    from .model import compile_row_kernels
    from .net import check_dtype

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
    for dtype in dtypes:
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
            _, grads = fnn.grad(net, params, x, labels, loss="softmax_cross_entropy")
            fnn.backward(net, params, x, x)
            fnn.step(opt, params, grads, state)
            fnn.train_step(net, opt, params, state, x, labels, loss="softmax_cross_entropy")
            fnn.fit(net, params, x, labels, loss="softmax_cross_entropy", epochs=1, validation_data=(x, labels),
                    progress=False)
    return time.perf_counter() - start
