"""fastnn on Dask's distributed scheduler: batch inference over the blocks of a dask array or the
partitions of a dask DataFrame, many independent fits across workers, one estimator trained block
by block on data larger than memory, and synchronous data-parallel training of one network.

Every function takes a ``distributed.Client`` (``client=None``: the default client, as Dask's own
functions do). Start one on this machine with ``Client(LocalCluster(n_workers=2))``, or point at
a running scheduler with ``Client("tcp://scheduler:8786")``. Needs the ``distributed`` extra
(``pip install -e ".[distributed]"``); the core never imports this module.

Searches over fastnn's scikit-learn estimators need nothing from here: scikit-learn's joblib runs
them on the cluster (``docs/scaling-out.md``).
"""

import copy
import math
import traceback
from typing import NamedTuple

import numpy as np

from . import _checks
from .network import forward, grad
from .optim import adam, check_optimizer, init_state
from .training import fit, step

__all__ = ["predict", "map_fits", "FitResult", "fit_incremental", "fit_data_parallel"]


def _distributed():
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError:
        raise ImportError('fastnn.dask needs dask and distributed: pip install -e ".[distributed]"') from None
    return distributed


def _client(client):
    distributed = _distributed()
    if client is None:
        return distributed.default_client()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client; got {type(client).__name__}")
    return client


# Batch inference

def _forward_block(block, net, params):
    """``forward`` on one block of rows (a NumPy array or a pandas DataFrame)."""
    values = block.to_numpy() if hasattr(block, "to_numpy") else block
    if values.shape[0] == 0:
        return np.empty((0, net.sizes[-1]), dtype=params[0][0].dtype)
    return forward(net, params, values)


def predict(net, params, X, client=None):
    """``fnn.predict`` mapped over the blocks of a dask array ``X`` (rows, n_in) (row chunks; the
    features in one chunk) or the partitions of a dask DataFrame (its columns the features, in
    order): a lazy dask array (rows, n_out) in the params' dtype, computed on ``client``'s cluster.
    The params are one node of the task graph (``dask.delayed``), which each worker receives
    once, not a copy in every block's task."""
    import dask
    import dask.array as da

    _client(client)
    params, dtype = _checks.check_params(net, params)
    n_in, n_out = net.sizes[0], net.sizes[-1]
    shared = dask.delayed(params, pure=True)
    if hasattr(X, "map_partitions"):  # a dask DataFrame
        if len(X.columns) != n_in:
            raise ValueError(f"X has {len(X.columns)} columns; net expects {n_in}")
        return X.to_dask_array(lengths=True).map_blocks(
            _forward_block, net, shared, dtype=dtype, chunks=None, drop_axis=1, new_axis=1,
            meta=np.empty((0, n_out), dtype)).rechunk({1: n_out})
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array or a dask DataFrame; got {type(X).__name__}")
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f"X must be 2-D (rows, {n_in}); got shape {X.shape}")
    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: n_in})  # a block must hold whole rows
    return X.map_blocks(_forward_block, net, shared, dtype=dtype, chunks=(X.chunks[0], (n_out,)),
                        meta=np.empty((0, n_out), dtype))


# Many independent fits

class FitResult(NamedTuple):
    """One configuration's outcome in ``map_fits``: ``params`` and ``history`` from ``fnn.fit``, or
    ``error`` (the exception's text, its traceback last) when that fit failed."""

    config: dict
    params: tuple = None
    history: object = None
    error: str = None


_FIT_KEYS = {"net", "params", "seed", "init_seed", "dtype", "loss", "optimizer", "epochs", "batch_size", "shuffle",
             "validation_split", "split", "early_stopping", "metrics"}


def _one_fit(config, x, y):
    """``fnn.fit`` for one configuration (see map_fits); a failure becomes a FitResult's error."""
    try:
        settings = {k: v for k, v in config.items() if k not in ("net", "params", "init_seed", "dtype")}
        net = config["net"]
        params = config.get("params")
        if params is None:
            params = _init(net, config)
        params, history = fit(net, params, x, y, progress=False, **settings)
        return FitResult(config, params, history)
    except Exception as exc:  # reported with its configuration; the other fits go on
        return FitResult(config, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def _init(net, config):
    from .net import init

    return init(net, seed=config.get("init_seed", config.get("seed", 0)), dtype=config.get("dtype", np.float32))


def map_fits(configs, x, y, client=None):
    """Run ``fnn.fit`` once per configuration across the cluster's workers; returns a list of
    ``FitResult`` in the order of ``configs``.

    A configuration is a dict: ``net`` (required); ``params`` (default: ``fnn.init(net,
    seed=init_seed or seed, dtype=dtype or float32)``); and any of fit's keywords ``seed, loss,
    optimizer, epochs, batch_size, shuffle, validation_split, split, early_stopping, metrics``.
    ``x`` and ``y`` go to the cluster once (broadcast), not with every fit. A fit that fails (a
    loss that becomes NaN raises ``FloatingPointError``) comes back with its ``error`` set; the
    others are unaffected. Dask reruns the fits of a worker that dies."""
    client = _client(client)
    if not isinstance(configs, (list, tuple)) or not configs:
        raise TypeError("configs must be a non-empty list of dicts, each with a 'net'")
    for i, config in enumerate(configs):
        if not isinstance(config, dict) or "net" not in config:
            raise TypeError(f"configs[{i}] must be a dict with a 'net'; got {config!r}")
        unknown = set(config) - _FIT_KEYS
        if unknown:
            raise ValueError(f"configs[{i}] has keys fit does not take: {sorted(unknown)}; known: {sorted(_FIT_KEYS)}")
    x, y = _checks.check_dataset(x, y)
    x_remote, y_remote = client.scatter([x, y], broadcast=True, hash=False)
    futures = [client.submit(_one_fit, config, x_remote, y_remote, pure=False) for config in configs]
    return client.gather(futures)


# One estimator, block by block

def _blocks_of(X, what):
    """The row blocks of a dask array (row chunks; columns in one chunk) or the partitions of a
    dask DataFrame or Series, as a list of dask objects."""
    import dask.array as da

    if hasattr(X, "to_delayed") and hasattr(X, "npartitions") and not isinstance(X, da.Array):
        return [X.get_partition(i) for i in range(X.npartitions)]
    if not isinstance(X, da.Array):
        raise TypeError(f"{what} must be a dask array or a dask DataFrame / Series; got {type(X).__name__}")
    if X.ndim == 2 and len(X.chunks[1]) != 1:
        X = X.rechunk({1: X.shape[1]})
    return [X.blocks[i] for i in range(X.numblocks[0])]


def _score_in_blocks(estimator, X_val, y_val, client):
    """The estimator's score (accuracy or R^2) on validation blocks pulled one at a time, as the
    mean over the rows (accuracy) or from summed squares (R^2)."""
    from sklearn.base import is_classifier

    correct = rows = 0
    sums = np.zeros(3)  # sum of y, sum of y^2, sum of squared errors
    for xb, yb in zip(_blocks_of(X_val, "X_val"), _blocks_of(y_val, "y_val")):
        xb, yb = client.compute([xb, yb], sync=True, optimize_graph=False)
        xb, yb = np.asarray(xb), np.asarray(yb)
        predicted = estimator.predict(xb)
        if is_classifier(estimator):
            correct += int(np.sum(predicted == yb))
        else:
            yb = yb.astype(np.float64)
            sums += (yb.sum(), (yb * yb).sum(), ((yb - predicted) ** 2).sum())
        rows += len(yb)
    if is_classifier(estimator):
        return correct / rows
    total = sums[1] - sums[0] ** 2 / rows
    return 1.0 - sums[2] / total if total > 0 else 0.0


def fit_incremental(estimator, X, y, epochs=1, shuffle_blocks=True, validation_data=None, patience=None, client=None):
    """Train a fastnn.sklearn estimator with ``partial_fit`` over the row blocks of a dask array
    (or the partitions of a dask DataFrame) ``X`` and ``y``, pulling one block at a time to this
    process: memory here stays bounded by a block. Each epoch visits the blocks in an order drawn
    from the estimator's ``random_state`` (``shuffle_blocks``) and trains one epoch on each.

    ``validation_data=(X_val, y_val)`` (dask, scored block by block after each epoch):
    ``estimator.validation_scores_`` gets the scores (accuracy or R^2); with ``patience``,
    training stops after that many epochs without a better score and the best epoch's estimator
    is returned. The estimator standardises its inputs with the first block's statistics (pass
    ``standardize=False`` and scale beforehand to use the whole array's). Returns the estimator."""
    import dask.array as da
    from sklearn.base import is_classifier
    from sklearn.utils import check_random_state

    client = _client(client)
    epochs = _checks.check_positive_int(epochs, "epochs")
    if patience is not None:
        patience = _checks.check_positive_int(patience, "patience")
        if validation_data is None:
            raise ValueError("patience needs validation_data to watch")
    x_blocks, y_blocks = _blocks_of(X, "X"), _blocks_of(y, "y")
    if len(x_blocks) != len(y_blocks):
        raise ValueError(f"X and y must have the same row blocks; got {len(x_blocks)} and {len(y_blocks)}")
    classes = None
    if is_classifier(estimator) and not hasattr(estimator, "classes_"):
        classes = np.unique(client.compute(y.unique() if hasattr(y, "unique") else da.unique(y), sync=True))
    rng = check_random_state(estimator.random_state)  # as dask-ml's Incremental draws its block order
    scores, best, best_score, waited = [], None, -math.inf, 0
    for _ in range(epochs):
        order = rng.permutation(len(x_blocks)) if shuffle_blocks else range(len(x_blocks))
        for i in order:
            xb, yb = client.compute([x_blocks[i], y_blocks[i]], sync=True, optimize_graph=False)
            xb, yb = np.asarray(xb), np.asarray(yb)
            if len(yb) == 0:
                continue
            if classes is not None:
                estimator.partial_fit(xb, yb, classes=classes)
                classes = None
            else:
                estimator.partial_fit(xb, yb)
        if validation_data is None:
            continue
        score = _score_in_blocks(estimator, *validation_data, client)
        scores.append(score)
        if score > best_score:
            best, best_score, waited = copy.deepcopy(estimator), score, 0
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    result = best if (patience is not None and best is not None) else estimator
    if validation_data is not None:
        result.validation_scores_ = scores
        result.best_validation_score_ = best_score
    return result


# One network, data-parallel

def _block_grad(net, params, x, y, loss):
    """(mean loss, gradient, rows) of one block."""
    x, y = np.asarray(x), np.asarray(y)
    value, grads = grad(net, params, x, y, loss)
    return value, grads, x.shape[0]


def fit_data_parallel(net, params, X, y, loss="mse", optimizer=None, epochs=10, client=None):
    """Full-batch synchronous training of one network on a dask array's row blocks: each step,
    every block's gradient is computed where the block lives (``fnn.grad``), the driver averages
    them weighted by rows (the whole data's mean gradient) and takes one optimizer step
    (``fnn.step``); the new params go to the workers once per step. Equal to ``fnn.fit`` with
    ``batch_size`` = all rows to rounding. Returns (params, history) with history["loss"], the
    mean loss before each step.

    It pays when a block's gradient takes much longer than sending the params to a worker and
    back (about 8 bytes per weight each way per step): large blocks of a small-to-medium net."""
    from .callbacks import History

    client = _client(client)
    params, dtype = _checks.check_params(net, params)
    opt = adam() if optimizer is None else check_optimizer(optimizer)
    epochs = _checks.check_positive_int(epochs, "epochs")
    _checks.check_loss(loss)
    x_blocks, y_blocks = _blocks_of(X, "X"), _blocks_of(y, "y")
    x_parts = client.compute(x_blocks)  # kept on the workers, one future per block
    y_parts = client.compute(y_blocks)
    state = init_state(opt, params)
    history = History()
    for _ in range(epochs):
        shared = client.scatter(params, broadcast=True, hash=False)  # fresh keys: no race with a released copy
        parts = client.gather([client.submit(_block_grad, net, shared, xb, yb, loss, pure=False)
                               for xb, yb in zip(x_parts, y_parts)])
        rows = sum(n for _, _, n in parts)
        mean = tuple(tuple(sum(g[l][i].astype(np.float64) * (n / rows) for _, g, n in parts).astype(dtype)
                           for i in range(2)) for l in range(len(params)))
        value = sum(v * n for v, _, n in parts) / rows
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} after {history.epochs} steps; the model diverged")
        params, state = step(opt, params, mean, state)
        history.record({"loss": value})
    history.state = state
    return params, history
