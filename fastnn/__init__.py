"""fastnn: a JIT-accelerated, functional neural-network core.

Parameters are plain tuples of NumPy arrays ``((W1, b1), (W2, b2), ...)``; every function is pure.
``fastnn.reference`` has the same functions in plain NumPy.
"""

from ._checks import LOSSES
from .model import backward, forward, grad, predict
from .predictor import Predictor
from .net import ACTIVATIONS, INITS, Net, init, mlp
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
    step,
)
from .train import train_step
from .data import batches
from .fit import fit
from .training import EarlyStopping, History
from .metrics import METRICS, sigmoid, softmax
from .gradcheck import check_grad
from .persist import load, save
from .threads import get_num_threads, set_num_threads
from .warmup import warmup
from . import schedules

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INITS", "LOSSES", "OPTIMIZERS",
    "Net", "mlp", "init",
    "forward", "grad", "backward", "Predictor",
    "Optimizer", "sgd", "rmsprop", "adagrad", "adam", "adamw",
    "SGDState", "RMSpropState", "AdagradState", "AdamState",
    "init_state", "step", "train_step",
    "batches", "fit", "EarlyStopping", "History", "schedules", "METRICS",
    "predict", "softmax", "sigmoid", "check_grad", "save", "load",
    "set_num_threads", "get_num_threads", "warmup",
]
