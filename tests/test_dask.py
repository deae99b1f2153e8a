"""fastnn.dask on an in-process LocalCluster of 2 workers: batch inference, many fits, block-by-block
training with bounded memory, data-parallel training, and scikit-learn searches through joblib's
Dask backend, each against its single-machine result."""

import os
import signal
import threading
import time

import dask.array as da
import dask.dataframe as dd
import joblib
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, cross_val_score

import fastnn as fnn
import fastnn.dask as fdask
from fastnn.sklearn import MLPClassifier, MLPRegressor

from conftest import assert_tree_close

NET = fnn.mlp([6, 16, 3], activation="tanh")


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with Client(cluster) as c:
        yield c
    cluster.close()


def _data(rows=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    return x, y


def test_predict_maps_forward_over_blocks_and_partitions(client):
    x, _ = _data()
    params = fnn.init(NET, seed=1)
    expected = fnn.predict(NET, params, x)
    got = fdask.predict(NET, params, da.from_array(x, chunks=(128, 6)), client=client).compute()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    frame = dd.from_pandas(pd.DataFrame(x, columns=list("abcdef")), npartitions=3)
    np.testing.assert_allclose(fdask.predict(NET, params, frame, client=client).compute(), expected,
                               rtol=1e-6, atol=1e-6)
    split = da.from_array(x, chunks=(100, 3))  # features over two chunks: rechunked to whole rows
    np.testing.assert_allclose(fdask.predict(NET, params, split, client=client).compute(), expected,
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"must be 2-D \(rows, 6\); got shape \(600, 5\)"):
        fdask.predict(NET, params, da.from_array(x[:, :5], chunks=(100, 5)), client=client)
    with pytest.raises(TypeError, match="dask array"):
        fdask.predict(NET, params, x, client=client)


def test_map_fits_returns_every_fit_and_reports_the_failing_one(client):
    x, y = _data()
    configs = [dict(net=NET, seed=s, epochs=3, loss="softmax_cross_entropy") for s in range(3)]
    (W, b), second = fnn.init(NET, seed=0)
    W = W.copy()
    W[0, 0] = np.nan  # its loss is NaN from the first batch
    configs.append(dict(net=NET, params=((W, b), second), epochs=3, loss="softmax_cross_entropy"))
    results = fdask.map_fits(configs, x, y, client=client)
    assert [r.config.get("seed") for r in results] == [0, 1, 2, None]  # in the order of configs
    for config, result in zip(configs[:3], results[:3]):
        assert result.error is None
        params, history = fnn.fit(NET, fnn.init(NET, seed=config["seed"]), x, y, loss="softmax_cross_entropy",
                                  epochs=3, seed=config["seed"], progress=False)
        assert_tree_close(result.params, params, np.float32, rtol=0, atol=0)
        assert result.history["loss"] == history["loss"]
    assert results[3].params is None and results[3].error.startswith("FloatingPointError")
    with pytest.raises(ValueError, match="keys fit does not take"):
        fdask.map_fits([dict(net=NET, epoch=3)], x, y, client=client)


def _generated(seed, block_rows, blocks):
    """A dask array whose blocks are drawn on the workers (never whole anywhere)."""
    def make(block_info=None):
        rng = np.random.default_rng(seed + block_info[None]["chunk-location"][0])
        return rng.normal(size=(block_rows, 6))
    x = da.map_blocks(make, dtype=np.float64, chunks=((block_rows,) * blocks, (6,)))
    y = x[:, 0] * 2 - x[:, 1] + 0.1 * x[:, 2] ** 2
    return x, y


def test_fit_incremental_pulls_one_block_at_a_time(client):
    x, y = _generated(0, 500, 10)
    x_val, y_val = _generated(100, 500, 2)
    model = MLPRegressor(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=1e-2)
    sizes = []
    partial_fit = model.partial_fit
    model.partial_fit = lambda xb, yb, **kw: (sizes.append(xb.shape[0]), partial_fit(xb, yb, **kw))[1]
    fitted = fdask.fit_incremental(model, x, y, epochs=4, validation_data=(x_val, y_val), patience=2,
                                   client=client)
    assert max(sizes) == 500 and len(sizes) >= 10  # one block of 500 rows at a time, never the 5000
    assert len(fitted.validation_scores_) <= 4 and fitted.best_validation_score_ > 0.8
    assert fitted.score(*client.compute([x_val, y_val], sync=True)) == pytest.approx(fitted.best_validation_score_)


def test_fit_incremental_of_a_classifier_on_a_dataframe(client):
    x, y = _data(800)
    frame = dd.from_pandas(pd.DataFrame(x), npartitions=4)
    labels = dd.from_pandas(pd.Series(y), npartitions=4)
    model = fdask.fit_incremental(MLPClassifier(hidden_layer_sizes=(16,), random_state=0, learning_rate_init=0.05,
                                                batch_size=50), frame, labels, epochs=10, client=client)
    assert list(model.classes_) == [0, 1, 2] and model.score(x, y) > 0.8


def test_fit_data_parallel_equals_full_batch_fit(client):
    x, y = _data(480)
    params = fnn.init(NET, seed=2, dtype=np.float64)
    opt = fnn.adam(1e-2)
    got, history = fdask.fit_data_parallel(NET, params, da.from_array(x, chunks=(100, 6)), da.from_array(y, chunks=100),
                                           loss="softmax_cross_entropy", optimizer=opt, epochs=5, client=client)
    expected, expected_history = fnn.fit(NET, params, x, y, loss="softmax_cross_entropy", optimizer=opt, epochs=5,
                                         batch_size=480, shuffle=False, progress=False)
    assert_tree_close(got, expected, np.float64, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(history["loss"], expected_history["loss"], rtol=1e-12)


def test_searches_on_the_cluster_equal_the_sequential_ones(client):
    x, y = _data(300)
    grid = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-2]}
    sequential = GridSearchCV(MLPClassifier(max_iter=15, random_state=0), grid, cv=2).fit(x, y)
    with joblib.parallel_backend("dask", scatter=[x, y]):
        distributed = GridSearchCV(MLPClassifier(max_iter=15, random_state=0), grid, cv=2, n_jobs=-1).fit(x, y)
        scores = cross_val_score(MLPClassifier(max_iter=15, random_state=0), x, y, cv=3, n_jobs=-1)
    np.testing.assert_array_equal(distributed.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    assert distributed.best_params_ == sequential.best_params_
    np.testing.assert_array_equal(scores, cross_val_score(MLPClassifier(max_iter=15, random_state=0), x, y, cv=3))


def _busy_workers(client, seconds=120):
    """The workers running a task, as soon as one is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        busy = [worker for worker, tasks in client.processing().items() if tasks]
        if busy:
            return busy
        time.sleep(0.02)
    raise AssertionError("no task started")


def test_a_worker_closed_mid_search_leaves_the_search_complete_and_correct():
    """Worker processes; one is closed while the search runs: Dask reruns its tasks on the other
    and the search ends as the sequential one does. (Closed, not killed: joblib scatters the
    folds' indices to one worker, and data that only a killed worker held cannot be recomputed.)"""
    x, y = _data(300)
    grid = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
    estimator = MLPClassifier(max_iter=40, random_state=0)
    sequential = GridSearchCV(estimator, grid, cv=2).fit(x, y)
    found = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:

        def search():
            with joblib.parallel_backend("dask", scatter=[x, y]):
                found["search"] = GridSearchCV(estimator, grid, cv=2, n_jobs=-1).fit(x, y)

        running = threading.Thread(target=search)
        running.start()
        busy = _busy_workers(client)
        client.retire_workers(workers=busy[:1], close_workers=True)  # moves its data, then closes it
        running.join(timeout=300)
        left = len(client.scheduler_info()["workers"])
    assert "search" in found and left == 1
    np.testing.assert_array_equal(found["search"].cv_results_["mean_test_score"],
                                  sequential.cv_results_["mean_test_score"])


def test_map_fits_survives_a_worker_killed_mid_run():
    """map_fits broadcasts the data to every worker and carries each configuration in its task, so
    a worker killed outright (SIGKILL) loses nothing Dask cannot rerun."""
    x, y = _data(400)
    configs = [dict(net=NET, seed=s, epochs=60, loss="softmax_cross_entropy", batch_size=8) for s in range(6)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        found = {}
        running = threading.Thread(target=lambda: found.update(results=fdask.map_fits(configs, x, y, client=client)))
        running.start()
        busy = _busy_workers(client)
        pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        running.join(timeout=300)
    assert [r.error for r in found["results"]] == [None] * 6
    for config, result in zip(configs, found["results"]):
        expected, _ = fnn.fit(NET, fnn.init(NET, seed=config["seed"]), x, y, loss="softmax_cross_entropy", epochs=60,
                              batch_size=8, seed=config["seed"], progress=False)
        assert_tree_close(result.params, expected, np.float32, rtol=0, atol=0)


def test_bad_arguments_are_refused_before_anything_runs(client):
    x, y = _data(100)
    X, Y = da.from_array(x, chunks=(50, 6)), da.from_array(y, chunks=50)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        fdask.map_fits([dict(net=NET)], x, y, client="tcp://nowhere")
    with pytest.raises(TypeError, match="non-empty list"):
        fdask.map_fits([], x, y, client=client)
    with pytest.raises(TypeError, match=r"configs\[0\] must be a dict with a 'net'"):
        fdask.map_fits([dict(seed=0)], x, y, client=client)
    with pytest.raises(ValueError, match="patience needs validation_data"):
        fdask.fit_incremental(MLPClassifier(), X, Y, patience=2, client=client)
    with pytest.raises(ValueError, match="same row blocks"):
        fdask.fit_incremental(MLPClassifier(), X, da.from_array(y, chunks=25), client=client)
    with pytest.raises(TypeError, match="must be a dask array"):
        fdask.fit_data_parallel(NET, fnn.init(NET), x, y, client=client)


def test_dask_mls_incremental_drives_the_estimators_as_fit_incremental_does(client):
    from dask_ml.wrappers import Incremental

    x, y = _data(800)
    X, Y = da.from_array(x, chunks=(200, 6)), da.from_array(y, chunks=200)
    settings = dict(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.05)
    wrapped = Incremental(MLPClassifier(**settings), shuffle_blocks=False).fit(X, Y, classes=[0, 1, 2])
    ours = fdask.fit_incremental(MLPClassifier(**settings), X, Y, epochs=1, shuffle_blocks=False, client=client)
    assert_tree_close(wrapped.estimator_.params_, ours.params_, np.float32, rtol=0, atol=0)
    np.testing.assert_array_equal(wrapped.predict(X).compute(), ours.predict(x))
