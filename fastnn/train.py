"""train_step: one fused forward + loss + backward + optimizer update in a single compiled call."""

from kernels import network as _knet

from .model import activation_codes, empty_like_params, prepare_batch, workspace
from .optim import check_optimizer, new_state, prepare_step


def train_step(net, opt, params, state, x, y_true, loss="mse"):
    """(new params, new state, loss) after one update on the batch (x, y_true).

    ``loss`` is the mean loss at the params passed in (before the update), as a Python float.
    Equivalent to ``grad`` followed by ``step``, without materialising anything in between.
    An empty batch still takes an update with zero gradients (and advances ``state.count``).
    """
    check_optimizer(opt)
    params, dtype, x2d, code, target, labels = prepare_batch(net, params, x, y_true, loss)
    state, opt_code, hp, slots_in, slots_out = prepare_step(opt, params, state)
    buffers = workspace(net, params, x2d.shape[0], dtype)
    params_out = empty_like_params(params)
    value = _knet.train_step_into(params, activation_codes(net), code, (x2d, target, labels), buffers,
                                  opt_code, hp, slots_in, (params_out, slots_out))
    return params_out, new_state(state, slots_out), float(value)
