"""fastnn: a JIT-accelerated, functional neural-network core.

Parameters are plain tuples of NumPy arrays ``((W1, b1), (W2, b2), ...)``; every function is pure.
``fastnn.reference`` has the same functions in plain NumPy.

The names that need the compiled kernels (``_COMPILED``) are imported on first use, so that
``import fastnn`` (and ``fastnn.reference``, ``fastnn.Net``, the optimizers...) work without
importing Numba.
"""

from importlib import import_module

from . import schedules
from .callbacks import EarlyStopping, History
from .data import batches
from .losses import LOSSES
from .metrics import METRICS, sigmoid, softmax
from .net import ACTIVATIONS, INITS, Net, init, member_seeds, mlp
from .optim import (
    OPTIMIZERS,
    AdagradState,
    AdamState,
    Optimizer,
    RMSpropState,
    SGDState,
    adagrad,
    adam,
    adamw,
    init_state,
    rmsprop,
    sgd,
)
from .persist import load, save

__version__ = "0.1.0"

# name -> the module that defines it
_COMPILED = {
    "forward": "network", "grad": "network", "backward": "network", "predict": "network",
    "Predictor": "predictor", "step": "training", "train_step": "training", "fit": "training",
    "fit_lbfgs": "lbfgs", "TabularModel": "tabular", "export_onnx": "export",
    "member": "ensemble", "stack": "ensemble", "polyak": "target", "ensemble_predict": "uncertainty", "jacobian": "sensitivity", "jvp": "sensitivity",
    "check_grad": "gradcheck", "set_num_threads": "runtime", "get_num_threads": "runtime",
    "warmup": "runtime",
}


def __getattr__(name):
    module = _COMPILED.get(name)
    if module is None:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(_COMPILED))


__all__ = [
    "ACTIVATIONS", "INITS", "LOSSES", "OPTIMIZERS",
    "Net", "mlp", "init", "member_seeds", "member", "stack", "polyak", "ensemble_predict",
    "forward", "grad", "backward", "Predictor", "jacobian", "jvp",
    "Optimizer", "sgd", "rmsprop", "adagrad", "adam", "adamw",
    "SGDState", "RMSpropState", "AdagradState", "AdamState",
    "init_state", "step", "train_step",
    "batches", "fit", "fit_lbfgs", "EarlyStopping", "History", "schedules", "METRICS",
    "predict", "softmax", "sigmoid", "check_grad", "save", "load", "TabularModel", "export_onnx",
    "set_num_threads", "get_num_threads", "warmup",
]
