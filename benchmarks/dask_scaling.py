"""fastnn.dask on this machine's 2-worker LocalCluster: a 16-candidate grid search (sequential,
joblib threads, the cluster), the memory high-water mark of fit_incremental on an array 10x its
block, and fit_data_parallel against fnn.fit.

Run: ``python benchmarks/dask_scaling.py`` (needs the distributed extra). Times are wall-clock
seconds of one run each; the cluster's start is timed apart.
"""

import time
import tracemalloc

import dask.array as da
import joblib
import numpy as np
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

import fastnn as fnn
import fastnn.dask as fdask
from fastnn.sklearn import MLPClassifier, MLPRegressor

# 16 candidates whose fits take 0.1-0.5 s each here: with fits of ~30 ms, the ~20-40 ms each task
# costs on the cluster (scheduling, sending the estimator and the folds' indices, the results
# back) eats the second worker's gain
GRID = {"hidden_layer_sizes": [(128,), (256,), (128, 128), (256, 256)], "alpha": [1e-5, 1e-4, 1e-3, 1e-2]}


def _search(x, y, n_jobs):
    return GridSearchCV(MLPClassifier(max_iter=60, random_state=0), GRID, cv=3, n_jobs=n_jobs).fit(x, y)


def _timed(label, run):
    start = time.perf_counter()
    result = run()
    print(f"{label}: {time.perf_counter() - start:.2f} s")
    return result


def _block(block_info=None):
    rng = np.random.default_rng(block_info[None]["chunk-location"][0])
    return rng.normal(size=(20_000, 20))


def main():
    x, y = load_digits(return_X_y=True)
    _search(x[:100], y[:100], 1)  # compile or load the kernels in this process
    sequential = _timed("grid search, 16 candidates x 3 folds, sequential", lambda: _search(x, y, 1))
    with joblib.parallel_backend("threading", n_jobs=2):
        _timed("  joblib threads (2)", lambda: _search(x, y, 2))
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    print(f"LocalCluster of 2 worker processes started in {time.perf_counter() - start:.2f} s")
    with joblib.parallel_backend("dask", scatter=[x, y]):
        _search(x[:100], y[:100], -1)  # the workers compile or load the kernels
        found = _timed("  2-worker LocalCluster (joblib's Dask backend)", lambda: _search(x, y, -1))
    same = np.array_equal(found.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    print(f"  the same scores as the sequential search: {same}")

    # fit_incremental on 10 blocks of 20,000 x 20 float64 (3.2 MB each, 32 MB in all), drawn on
    # the workers; the learner's memory traced in this process
    X = da.map_blocks(_block, dtype=np.float64, chunks=((20_000,) * 10, (20,)))
    target = X[:, 0] - 2 * X[:, 1] + X[:, 2] * X[:, 3]
    tracemalloc.start()
    model = fdask.fit_incremental(MLPRegressor(hidden_layer_sizes=(32,), random_state=0), X, target, epochs=2,
                                  client=client)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"fit_incremental, 10 blocks of 3.2 MB (32 MB in all), 2 epochs: peak traced memory {peak / 1e6:.1f} MB; "
          f"R^2 on the last block {model.score(*client.compute([X.blocks[9], target.blocks[9]], sync=True)):.3f}")

    # fit_data_parallel: full-batch Adam on 8 blocks of 25,000 rows against fnn.fit in one process
    net = fnn.mlp([20, 64, 64, 1], activation="tanh")
    params = fnn.init(net, seed=0)
    x_big = np.random.default_rng(1).normal(size=(200_000, 20)).astype(np.float32)
    y_big = (x_big[:, :1] - x_big[:, 1:2]).astype(np.float32)
    opt = fnn.adam(1e-3)
    fnn.fit(net, params, x_big[:1000], y_big[:1000], optimizer=opt, epochs=1, batch_size=1000, progress=False)
    _timed("fnn.fit, 10 full-batch steps of 200,000 rows, one process",
           lambda: fnn.fit(net, params, x_big, y_big, optimizer=opt, epochs=10, batch_size=200_000, shuffle=False,
                           progress=False))
    X_big, Y_big = da.from_array(x_big, chunks=(25_000, 20)), da.from_array(y_big, chunks=(25_000, 1))
    fdask.fit_data_parallel(net, params, X_big[:50_000], Y_big[:50_000], optimizer=opt, epochs=1, client=client)
    _timed("fit_data_parallel, the same 10 steps on 2 worker processes",
           lambda: fdask.fit_data_parallel(net, params, X_big, Y_big, optimizer=opt, epochs=10, client=client))
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
