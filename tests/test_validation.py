"""Every bad input raises TypeError or ValueError naming the problem, before any kernel runs.

Each test runs against fastnn and fastnn.reference (the ``impl`` fixture); for fastnn, the
``no_kernels`` fixture replaces every kernel entry point with one that fails the test if called.
"""

import numpy as np
import pytest

import fastnn as fnn
from fastnn._kernels import losses as kloss
from fastnn._kernels import network as knet
from fastnn._kernels import optim as kopt

NET = fnn.mlp([4, 8, 3], activation="relu")
X = np.ones((5, 4))
LABELS = np.array([0, 1, 2, 1, 0])


@pytest.fixture(autouse=True)
def no_kernels(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran before validation rejected the input")

    for module in (knet, kopt, kloss):
        for name in dir(module):
            if name.endswith(("_into", "_inplace")) or name == "loss_and_grad":
                monkeypatch.setattr(module, name, forbidden)


@pytest.fixture
def params():
    return fnn.init(NET, seed=0, dtype=np.float64)


# --- input x -------------------------------------------------------------------------------------

def test_wrong_input_width(impl, params):
    with pytest.raises(ValueError, match=r"5 features.*expects 4"):
        impl.forward(NET, params, np.ones((2, 5)))


@pytest.mark.parametrize("x", [np.ones((2, 2, 4)), np.float64(1.0)], ids=["3d", "scalar"])
def test_wrong_input_rank(impl, params, x):
    with pytest.raises(ValueError, match=r"1-D .* or 2-D"):
        impl.forward(NET, params, x)


@pytest.mark.parametrize("x", [np.ones((2, 4), complex), np.array([["a"] * 4]), [[1, 2, 3, None]]],
                         ids=["complex", "strings", "object"])
def test_non_real_input(impl, params, x):
    with pytest.raises(TypeError, match="real numbers"):
        impl.forward(NET, params, x)


def test_ragged_input(impl, params):
    with pytest.raises(ValueError, match="rectangular"):
        impl.forward(NET, params, [[1, 2, 3, 4], [1, 2]])


# --- targets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss,y", [
    ("mse", np.ones((5, 2))),
    ("mse", np.ones(5)),
    ("sigmoid_cross_entropy", np.ones((4, 3))),
    ("softmax_cross_entropy", np.ones((5, 4))),
    ("softmax_cross_entropy", np.ones(4, dtype=int)),
], ids=["mse-width", "mse-1d", "sigmoid-batch", "softmax-probs", "softmax-labels"])
def test_targets_of_the_wrong_shape(impl, params, loss, y):
    with pytest.raises(ValueError, match=r"y_true|labels must have shape"):
        impl.grad(NET, params, X, y, loss=loss)


@pytest.mark.parametrize("labels", [[0, 1, 3, 1, 0], [0, -1, 2, 1, 0]], ids=["too-big", "negative"])
def test_labels_out_of_range(impl, params, labels):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        impl.grad(NET, params, X, np.array(labels), loss="softmax_cross_entropy")


def test_non_integral_labels(impl, params):
    with pytest.raises(ValueError, match="non-integral"):
        impl.grad(NET, params, X, np.array([0, 1.5, 2, 1, 0]), loss="softmax_cross_entropy")


def test_boolean_labels(impl, params):
    with pytest.raises(TypeError, match="boolean"):
        impl.grad(NET, params, X, np.ones(5, dtype=bool), loss="softmax_cross_entropy")


def test_output_gradient_of_the_wrong_shape(impl, params):
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(5, 3\)"):
        impl.backward(NET, params, X, np.ones((5, 2)))


# --- params --------------------------------------------------------------------------------------

def test_params_with_the_wrong_layer_count(impl, params):
    with pytest.raises(ValueError, match=r"1 layers.*needs 2"):
        impl.forward(NET, params[:1], X)


def test_params_with_the_wrong_shape(impl, params):
    bad = ((params[0][0].T.copy(), params[0][1]), params[1])
    with pytest.raises(ValueError, match=r"params\[0\] W has shape \(8, 4\).*\(4, 8\)"):
        impl.forward(NET, bad, X)


def test_params_with_mixed_dtypes(impl, params):
    bad = (params[0], (params[1][0].astype(np.float32), params[1][1]))
    with pytest.raises(TypeError, match="mixes dtypes"):
        impl.forward(NET, bad, X)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128])
def test_non_float_params(impl, params, dtype):
    bad = tuple((W.astype(dtype), b.astype(dtype)) for W, b in params)
    with pytest.raises(TypeError, match=r"float32 or float64; got dtype"):
        impl.forward(NET, bad, X)


@pytest.mark.parametrize("bad", [
    "weights", [np.ones((4, 8))], (np.ones((4, 8)), np.ones(8)), ((np.ones((4, 8)).tolist(), np.ones(8)),) * 2,
], ids=["string", "flat-list", "flat-pair", "nested-lists"])
def test_params_of_the_wrong_structure(impl, bad):
    with pytest.raises((TypeError, ValueError), match="params"):
        impl.forward(NET, bad, X)


def test_net_must_be_a_net(impl, params):
    with pytest.raises(TypeError, match="fastnn.Net"):
        impl.forward([4, 8, 3], params, X)


# --- names ---------------------------------------------------------------------------------------

def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'.*identity, relu.*silu"):
        fnn.mlp([2, 3], activation="swish", output="swish")


def test_unknown_loss_lists_the_valid_ones(impl, params):
    with pytest.raises(ValueError, match=r"unknown loss 'mean_squared'.*mse, mae, huber"):
        impl.grad(NET, params, X, np.ones((5, 3)), loss="mean_squared")


def test_unknown_optimizer_lists_the_valid_ones(impl, params):
    bogus = fnn.Optimizer("lion", 0.1, ())
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'.*sgd, rmsprop, adagrad, adam, adamw"):
        impl.step(bogus, params, params, fnn.SGDState(0, None))


def test_optimizer_must_be_an_optimizer(impl, params):
    with pytest.raises(TypeError, match="fastnn optimizer"):
        impl.step("adam", params, params, None)


def test_unknown_init_scheme():
    with pytest.raises(ValueError, match=r"unknown init 'xavier'.*glorot_uniform"):
        fnn.init(NET, init="xavier")


# --- sizes and numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[4, 0, 3], [4, -2, 3]])
def test_non_positive_sizes(sizes):
    with pytest.raises(ValueError, match="positive"):
        fnn.mlp(sizes)


@pytest.mark.parametrize("sizes,error", [([4, 2.5, 3], TypeError), ([4], ValueError), ([4, True], TypeError)])
def test_malformed_sizes(sizes, error):
    with pytest.raises(error, match="sizes"):
        fnn.mlp(sizes)


def test_activation_count_must_match_layers():
    with pytest.raises(ValueError, match="one activation per layer"):
        fnn.Net(sizes=(2, 3, 4), activations=("relu",))


@pytest.mark.parametrize("make", [fnn.sgd, fnn.adam, fnn.adamw, fnn.rmsprop, fnn.adagrad])
@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_non_positive_learning_rates(make, lr):
    with pytest.raises(ValueError, match="learning rate lr must be a positive finite number"):
        make(lr=lr)


def test_learning_rate_must_be_a_number_or_callable():
    with pytest.raises(TypeError, match="learning rate"):
        fnn.adam(lr="0.1")


def test_schedule_returning_a_negative_rate(impl, params):
    opt = fnn.sgd(lr=lambda count: -0.1)
    with pytest.raises(ValueError, match=r"lr schedule returned -0.1 at count 0"):
        impl.step(opt, params, params, fnn.init_state(opt, params))


@pytest.mark.parametrize("call,match", [
    (lambda: fnn.adam(betas=(0.9, 1.0)), r"betas\[1\] must lie in \[0, 1\)"),
    (lambda: fnn.adam(betas=0.9), "betas must be a pair"),
    (lambda: fnn.sgd(0.1, momentum=-0.5), r"momentum must lie in \[0, 1\]"),
    (lambda: fnn.sgd(0.1, nesterov=True), "nesterov needs momentum > 0"),
    (lambda: fnn.adamw(weight_decay=-1), "weight_decay must be a finite number >= 0"),
    (lambda: fnn.rmsprop(eps=float("nan")), "eps must be a finite number >= 0"),
])
def test_bad_optimizer_settings(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dtype=np.float16), TypeError, "float32 or float64"),
    (dict(dtype="int32"), TypeError, "float32 or float64"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed=None), TypeError, "seed must be an int"),
])
def test_bad_init_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fnn.init(NET, **kwargs)


# --- optimizer state and grads -------------------------------------------------------------------

def test_state_for_other_params(impl, params):
    opt = fnn.adam()
    other = fnn.init(fnn.mlp([4, 9, 3]), seed=0, dtype=np.float64)
    with pytest.raises(ValueError, match=r"state.exp_avg\[0\] W has shape \(4, 9\).*belongs to other params"):
        impl.step(opt, params, params, fnn.init_state(opt, other))


def test_state_with_another_dtype(impl, params):
    opt = fnn.adam()
    other = fnn.init(NET, seed=0, dtype=np.float32)
    with pytest.raises(TypeError, match=r"float32.*belongs to other params"):
        impl.step(opt, params, params, fnn.init_state(opt, other))


def test_state_of_another_optimizer(impl, params):
    with pytest.raises(TypeError, match="state for adam must be a AdamState"):
        impl.step(fnn.adam(), params, params, fnn.init_state(fnn.sgd(0.1), params))


def test_state_missing_a_moment(impl, params):
    opt = fnn.sgd(0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum_buffer is None"):
        impl.step(opt, params, params, fnn.init_state(fnn.sgd(0.1), params))


def test_state_with_a_negative_count(impl, params):
    opt = fnn.adam()
    state = fnn.init_state(opt, params)._replace(count=-1)
    with pytest.raises(ValueError, match="count must be an int >= 0"):
        impl.step(opt, params, params, state)


def test_grads_that_do_not_mirror_params(impl, params):
    opt = fnn.sgd(0.1)
    with pytest.raises(ValueError, match=r"grads has 1 layers; params have 2"):
        impl.step(opt, params, params[:1], fnn.init_state(opt, params))


def test_train_step_validates_state_before_running(impl, params):
    opt = fnn.adam()
    other = fnn.init(fnn.mlp([4, 9, 3]), seed=0, dtype=np.float64)
    with pytest.raises(ValueError, match="belongs to other params"):
        impl.train_step(NET, opt, params, fnn.init_state(opt, other), X, LABELS, loss="softmax_cross_entropy")


def test_the_kernel_guard_is_armed(params):
    """The no_kernels fixture really intercepts: a valid call reaches it and fails."""
    with pytest.raises(AssertionError, match="a kernel ran"):
        fnn.forward(NET, params, X)


# --- fit, batches, predict, check_grad --------------------------------------------------------------

FIT_ERRORS = [
    (dict(epochs=0), ValueError, "epochs must be a positive int; got 0"),
    (dict(epochs=2.0), TypeError, "epochs must be a positive int"),
    (dict(batch_size=-1), ValueError, "batch_size must be a positive int"),
    (dict(optimizer="adam"), TypeError, "must be a fastnn optimizer"),
    (dict(loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (dict(metrics=["f1"]), ValueError, "unknown metric 'f1'"),
    (dict(metrics=7), TypeError, "metrics must be a name or a list"),
    (dict(callbacks=[print, 3]), TypeError, "callbacks must be a callable"),
    (dict(validation_split=1.0), ValueError, r"validation_split must lie in \(0, 1\)"),
    (dict(validation_split=0.01), ValueError, "leaves 5 for training and 0 for validation"),
    (dict(validation_split=0.2, validation_data=(X, LABELS)), ValueError, "not both"),
    (dict(validation_data=X), TypeError, "validation_data must be a pair"),
    (dict(validation_data=(np.ones((2, 3)), [0, 1])), ValueError, "validation x has 3 features"),
    (dict(validation_data=(X, [0, 1])), ValueError, "same number of samples"),
    (dict(early_stopping="yes"), TypeError, "early_stopping must be None, a patience"),
    (dict(early_stopping=fnn.EarlyStopping(monitor="val_loss")), ValueError, "no validation data"),
    (dict(progress="auto"), TypeError, "progress must be True, False or None"),
    (dict(seed=-3), ValueError, "seed must be >= 0"),
    (dict(seed="x"), TypeError, "seed must be an int"),
    (dict(batch_size=8, drop_last=True), ValueError, "leaves no batch"),
    (dict(state=fnn.init_state(fnn.sgd(0.1), fnn.init(NET, seed=0))), TypeError, "must be a AdamState"),
]


@pytest.mark.parametrize("kwargs, error, match", FIT_ERRORS, ids=[m for _, _, m in FIT_ERRORS])
def test_fit_arguments(impl, params, kwargs, error, match):
    kw = dict(loss="softmax_cross_entropy", progress=False)
    kw.update(kwargs)
    with pytest.raises(error, match=match):
        impl.fit(NET, params, X, LABELS, **kw)


@pytest.mark.parametrize("x, y, match", [
    (X, LABELS[:3], "same number of samples; got 5 and 3"),
    (X[:0], LABELS[:0], "holds no samples"),
    (X[0], LABELS[0], r"x must be 2-D \(samples, features\)"),
    (X, [0, 1, 2, 3, 9], r"class labels must lie in \[0, 3\)"),
])
def test_fit_data(impl, params, x, y, match):
    with pytest.raises(ValueError, match=match):
        impl.fit(NET, params, x, y, loss="softmax_cross_entropy", progress=False)


def test_early_stopping_settings():
    with pytest.raises(ValueError, match="patience must be a positive int"):
        fnn.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be a finite number >= 0"):
        fnn.EarlyStopping(min_delta=-1)
    with pytest.raises(TypeError, match="monitor must be a history key"):
        fnn.EarlyStopping(monitor=3)


def test_early_stopping_unknown_monitor_is_named(impl, params):
    with pytest.raises(ValueError, match="monitors 'accuracy', which fit does not record"):
        impl.fit(NET, params, X, LABELS, loss="softmax_cross_entropy", progress=False,
                 early_stopping=fnn.EarlyStopping(monitor="accuracy"))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=X, y=LABELS[:2], batch_size=2), ValueError, "same number of samples"),
    (dict(x=X, y=LABELS, batch_size=0), ValueError, "batch_size must be a positive int"),
    (dict(x=X, y=LABELS, batch_size=2, seed=1.5), TypeError, "seed must be an int"),
])
def test_batches_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        list(fnn.batches(**kwargs))


def test_predict_and_check_grad_arguments(params):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fnn.predict(NET, params, X, batch_size=0)
    with pytest.raises(ValueError, match="5 features"):
        fnn.predict(NET, params, np.ones((2, 5)))
    with pytest.raises(ValueError, match="eps must be a positive"):
        fnn.check_grad(NET, params, X, LABELS, loss="softmax_cross_entropy", eps=0)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        fnn.check_grad(NET, params, X, [0, 1, 2, 3, 4], loss="softmax_cross_entropy")
