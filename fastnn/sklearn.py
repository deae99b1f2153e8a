"""scikit-learn estimators on fastnn: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's MLP parameters where the concept is the same and train with fastnn's
``fit`` (adam, sgd) or ``fit_lbfgs`` (lbfgs). The inputs are standardised inside the estimator
by default (``standardize=True``: each feature's mean and standard deviation from the first
``fit``, applied again at predict time), so ``coefs_[0]`` acts on standardised features.
``net_`` and ``params_`` are plain fastnn data for every fastnn function (on standardised
inputs). ``fit`` and ``partial_fit`` take ``sample_weight`` (the classifier ``class_weight`` too):
the loss becomes their weighted mean, computed in fastnn's kernels, and the standardisation a
weighted one. Needs scikit-learn >= 1.6 (``pip install -e ".[sklearn]"``); fastnn's core never imports
this module.

Where they differ from scikit-learn's MLP: the L2 penalty ``alpha`` reaches the biases too with
adam and sgd (as weight decay alpha / batch size; with lbfgs only the weights, as scikit-learn);
``loss_curve_`` holds fastnn's losses (the regressor's squared error is the mean square, twice
scikit-learn's, and alpha and tol are doubled to match);
a binary classifier has a two-unit softmax output (``out_activation_`` "softmax"); the validation
split of ``early_stopping`` is random (stratified for classifiers), or the caller's
(``fit(..., validation_data=)``), and the stopping rule watches the validation loss rather than
the score. Beyond scikit-learn's attributes: ``history_`` (fastnn's per-epoch record),
``validation_loss_curve_``, ``input_mean_`` and ``input_scale_``.
"""

import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, validate_data

import fastnn as fnn

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names, and fastnn's own
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", **{name: name for name in fnn.ACTIVATIONS}}
_SOLVERS = ("adam", "sgd", "lbfgs")
_REGRESSION_LOSSES = {"squared_error": "mse", "absolute_error": "mae", "huber": "huber"}


def _standardisation(X, weights, standardize):
    """(mean, scale) of each feature, weighted by the samples' weights when given (so that a
    sample of weight 0 changes nothing); a constant feature's scale is 1."""
    if not standardize:
        return np.zeros(X.shape[1]), np.ones(X.shape[1])
    mean = np.average(X, axis=0, weights=weights)
    scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
    return mean, np.where(scale > 0, scale, 1.0)


# The parameters both estimators take after (hidden_layer_sizes, activation), keyword only, with
# their defaults: scikit-learn's MLP's where it has the parameter.
SHARED_DEFAULTS = {
    "solver": "adam", "alpha": 1e-4, "batch_size": "auto", "learning_rate_init": 1e-3, "max_iter": 200,
    "shuffle": True, "random_state": None, "tol": 1e-4, "verbose": False, "warm_start": False, "momentum": 0.9,
    "nesterovs_momentum": True, "early_stopping": False, "validation_fraction": 0.1, "beta_1": 0.9, "beta_2": 0.999,
    "epsilon": 1e-8, "n_iter_no_change": 10, "max_fun": 15000, "standardize": True, "dtype": "float32",
}


def _estimator_init(own_defaults):
    """An estimator's __init__: (hidden_layer_sizes, activation) positional or by name, then the
    keyword parameters of SHARED_DEFAULTS and ``own_defaults``, each stored as given under its
    name. Its ``__signature__`` lists every parameter: scikit-learn's get_params, clone and grid
    search read the parameters from it, and its checks reject a visible **kwargs."""
    defaults = {**SHARED_DEFAULTS, **own_defaults}

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", **params):
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(unknown)}")
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        for name, default in defaults.items():
            setattr(self, name, params.get(name, default))

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", positional), inspect.Parameter("hidden_layer_sizes", positional, default=(100,)),
         inspect.Parameter("activation", positional, default="relu")]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in defaults.items()])
    return __init__


class _MLPBase(BaseEstimator):
    """The parameters, training and fitted attributes the two estimators share. Each estimator
    defines ``_targets(y, first, classes)`` -> (the targets as fastnn takes them, the fastnn loss,
    the output width), which also sets ``_stratify``, and ``_score_metric``, the fastnn metric
    of ``validation_scores_``."""

    def fit(self, X, y, sample_weight=None, validation_data=None):
        """Train from scratch (or from the fitted params with ``warm_start``) for up to ``max_iter``
        epochs (lbfgs: iterations); returns self. ``sample_weight``: one weight >= 0 per sample;
        the loss is their weighted mean (``fastnn.grad``), samples of weight 0 left out.
        ``validation_data=(X_val, y_val)``: rows the caller held out; their loss (and, with adam or
        sgd, score) is recorded after every epoch (``history_``), and ``early_stopping`` watches
        their loss instead of holding out ``validation_fraction`` of X."""
        return self._train(X, y, None, None, sample_weight, validation_data)

    def _check_parameters(self):
        hidden = self.hidden_layer_sizes
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        if not all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h > 0 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive ints; got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {self.activation!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {list(_SOLVERS)}; got {self.solver!r}")
        if self.dtype is not None and np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, float32 or float64; got {self.dtype!r}")
        if not (0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must lie in (0, 1); got {self.validation_fraction!r}")
        return hidden

    def _train(self, X, y, epochs, classes, sample_weight, validation_data=None):
        """fit (epochs None) or partial_fit (epochs 1)."""
        hidden = self._check_parameters()
        # A new net unless partial_fit or a warm start continues the fitted one.
        first = not hasattr(self, "params_") or (epochs is None and not self.warm_start)
        X, y = validate_data(self, X, y, reset=first, multi_output=True, dtype=(np.float64, np.float32),
                             y_numeric=isinstance(self, RegressorMixin))
        labels_or_targets, loss, n_out = self._targets(y, first, classes)
        weights = self._weights(y, sample_weight, X)
        rng = check_random_state(self.random_state)
        if first:
            self._dtype = np.dtype(self.dtype) if self.dtype is not None else X.dtype
            self.input_mean_, self.input_scale_ = _standardisation(X, weights, self.standardize)
            self.net_ = fnn.mlp([X.shape[1], *hidden, n_out], activation=_ACTIVATIONS[self.activation])
            # scikit-learn's MLP draws its weights as glorot_uniform does, for every activation
            self.params_ = fnn.init(self.net_, seed=int(rng.randint(2**31 - 1)), dtype=self._dtype,
                                    init="glorot_uniform")
            self._state = None
            self.loss_curve_, self.n_iter_ = [], 0
        x = self._scaled(X)
        validation = None if validation_data is None else self._validation(validation_data)
        if self.solver == "lbfgs":
            history, validated = self._fit_lbfgs(x, labels_or_targets, weights, loss, epochs, validation), False
        else:
            history, validated = self._fit_stochastic(x, labels_or_targets, weights, loss, epochs,
                                                      int(rng.randint(2**31 - 1)), validation)
        self._record(history, validated)
        self.coefs_ = [W for W, _ in self.params_]
        self.intercepts_ = [b for _, b in self.params_]
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = n_out
        return self

    def _validation(self, validation_data):
        """fit's validation_data as fastnn's fit takes it: inputs scaled, targets as for training."""
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val = validate_data(self, validation_data[0], reset=False, dtype=(np.float64, np.float32))
        y_val = check_array(validation_data[1], ensure_2d=False, dtype=None)
        if y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"validation_data holds {X_val.shape[0]} rows of X and {y_val.shape[0]} of y")
        return self._scaled(X_val), self._targets(y_val, False)[0]

    def _weights(self, y, sample_weight, X):
        """The samples' weights (float64), or None when every weight is 1."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)

    def _scaled(self, X):
        return ((X - self.input_mean_) / self.input_scale_).astype(self._dtype)

    def _optimizer(self, batch_weight):
        """The optimizer, its weight decay the penalty alpha / 2 ||W||^2 over a batch's weight (its
        rows times the mean sample weight), as scikit-learn divides it by the batch's rows."""
        decay = self._loss_scale * self.alpha / batch_weight
        if self.solver == "sgd":
            return fnn.sgd(self.learning_rate_init, momentum=self.momentum,
                           nesterov=bool(self.nesterovs_momentum and self.momentum > 0), weight_decay=decay)
        return fnn.adam(self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                        weight_decay=decay)

    def _fit_stochastic(self, x, y, weights, loss, epochs, seed, validation):
        n = x.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else int(np.clip(self.batch_size, 1, n))
        opt = self._optimizer(batch if weights is None else batch * float(weights.mean()))
        stopping, metrics = None, ()
        if validation is not None:
            metrics = (self._score_metric,)
        if validation is not None and epochs is None and self.early_stopping:
            stopping = fnn.EarlyStopping(patience=self.n_iter_no_change, min_delta=self._loss_scale * self.tol,
                                         monitor="val_loss")
        elif epochs is None and self.early_stopping:
            stratify = y if getattr(self, "_stratify", False) else None
            w = np.ones(n) if weights is None else weights
            x, x_val, y, y_val, w, w_val = train_test_split(x, y, w, test_size=self.validation_fraction,
                                                            random_state=seed, stratify=stratify)
            weights = None if weights is None else w
            validation = (x_val, y_val) if weights is None else (x_val, y_val, w_val)
            metrics = (self._score_metric,)
            stopping = fnn.EarlyStopping(patience=self.n_iter_no_change, min_delta=self._loss_scale * self.tol,
                                         monitor="val_loss")
        elif epochs is None:
            stopping = fnn.EarlyStopping(patience=self.n_iter_no_change, min_delta=self._loss_scale * self.tol,
                                         monitor="loss",
                                         restore_best=False)
        state = self._state if (self._state is not None and self._state_batch == batch) else None
        self.params_, history = fnn.fit(self.net_, self.params_, x, y, loss=loss, optimizer=opt,
                                        epochs=epochs or self.max_iter, batch_size=batch, seed=seed,
                                        shuffle=self.shuffle, validation_data=validation, early_stopping=stopping,
                                        metrics=metrics, progress=bool(self.verbose), state=state,
                                        sample_weight=weights)
        self._state, self._state_batch = history.state, batch
        return history, validation is not None

    def _fit_lbfgs(self, x, y, weights, loss, epochs, validation):
        # The penalty over the weights' sum (the row count when unweighted): integer weights then
        # give the fit repeating the rows gives.
        total = x.shape[0] if weights is None else float(weights.sum())
        self.params_, history = fnn.fit_lbfgs(self.net_, self.params_, x, y, loss=loss,
                                              max_iter=epochs or self.max_iter, tol=self.tol,
                                              l2=self._loss_scale * self.alpha / total, max_fun=self.max_fun,
                                              sample_weight=weights, validation_data=validation)
        return history

    def _record(self, history, validated):
        """loss_curve_ and n_iter_ go on from a warm start or partial_fit; the rest is this fit's."""
        self.history_ = history
        self.validation_loss_curve_ = [float(v) for v in history["val_loss"]] if "val_loss" in history else None
        self.loss_curve_ = self.loss_curve_ + [float(v) for v in history.get("loss", [])]
        self.n_iter_ += history.epochs
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ and not validated else None
        if validated:
            self.validation_scores_ = [float(v) for v in history["val_" + self._score_metric]]
            self.best_validation_score_ = max(self.validation_scores_)
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _outputs(self, X):
        """The net's outputs for X, in X's float type (float64 unless X is float32)."""
        check_is_fitted(self, "params_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return fnn.predict(self.net_, self.params_, self._scaled(X)).astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class MLPClassifier(ClassifierMixin, _MLPBase):
    """Multilayer-perceptron classifier: softmax cross-entropy over the classes (binary and
    multiclass, any labels ``np.unique`` orders: text, integers, booleans), or, for a 2-D
    indicator ``y``, one sigmoid cross-entropy per label (multilabel).

    ``class_weight``: None, "balanced" (n_samples / (n_classes * the class's count) in the y of
    each fit or partial_fit) or {class: weight}; each sample's weight is its class's times its
    ``sample_weight``."""

    _score_metric = "accuracy"
    _loss_scale = 1.0  # fastnn's cross-entropies are scikit-learn's

    __init__ = _estimator_init({"class_weight": None})

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y) from the current params (the first call needs ``classes``)."""
        if not hasattr(self, "params_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._train(X, y, 1, classes, sample_weight)

    def _weights(self, y, sample_weight, X):
        weights = super()._weights(y, sample_weight, X)
        if self.class_weight is None:
            return weights
        if self._multilabel:
            raise ValueError("class_weight applies to single-label targets; got a multilabel indicator y")
        if isinstance(self.class_weight, dict):
            unknown = [c for c in self.class_weight if c not in self.classes_]
            if unknown:
                raise ValueError(f"class_weight names classes not among classes_ {list(self.classes_)}: {unknown}")
        elif self.class_weight != "balanced":
            raise ValueError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}; "
                             f"got {self.class_weight!r}")
        per_class = compute_sample_weight(self.class_weight, y)
        return per_class if weights is None else per_class * weights

    def _targets(self, y, first, classes=None):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            binarizer = LabelBinarizer()
            binarizer.fit(y if classes is None else classes)
            if binarizer.y_type_ not in ("multilabel-indicator",) and len(binarizer.classes_) < 2:
                raise ValueError(f"MLPClassifier needs at least two classes; got 1 class: {binarizer.classes_[0]!r}")
            self._binarizer = binarizer
            self.classes_ = binarizer.classes_
            self._multilabel = binarizer.y_type_ == "multilabel-indicator"
            self.out_activation_ = "logistic" if self._multilabel else "softmax"
        if self._multilabel:
            self._stratify = False
            return np.asarray(y, dtype=np.float64), "sigmoid_cross_entropy", y.shape[1]
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y holds labels not among classes_ {list(self.classes_)}: {list(unknown)}")
        self._stratify = True
        return np.searchsorted(self.classes_, y).astype(np.int64), "softmax_cross_entropy", len(self.classes_)

    def predict(self, X):
        out = self._outputs(X)
        if self._multilabel:
            return (out > 0).astype(int)
        return self.classes_[np.argmax(out, axis=1)]

    def predict_proba(self, X):
        out = self._outputs(X)
        return fnn.sigmoid(out) if self._multilabel else fnn.softmax(out)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MLPBase):
    """Multilayer-perceptron regressor: squared error (default), absolute error or Huber loss on
    one output or several (a 2-D ``y``)."""

    _score_metric = "r2"

    @property
    def _loss_scale(self):
        """fastnn's mse over scikit-learn's squared error (half the mean square): alpha and tol
        are scaled by it, so that the penalty weighs against the data as in scikit-learn."""
        return 2.0 if self.loss == "squared_error" else 1.0

    __init__ = _estimator_init({"loss": "squared_error"})

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) from the current params."""
        return self._train(X, y, 1, None, sample_weight)

    def _targets(self, y, first, classes=None):
        if self.loss not in _REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {list(_REGRESSION_LOSSES)}; got {self.loss!r}")
        if first:
            self._single_output = y.ndim == 1
            self.out_activation_ = "identity"
        self._stratify = False
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        return targets.astype(np.float64), _REGRESSION_LOSSES[self.loss], targets.shape[1]

    def predict(self, X):
        out = self._outputs(X)
        return out[:, 0] if self._single_output else out
