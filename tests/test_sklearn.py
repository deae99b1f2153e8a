"""fastnn.sklearn: scikit-learn's estimator checks, every one; pipelines, search, cross-validation
on two processes, clones and pickles; DataFrames' feature names; the target kinds; standardised
inputs; agreement with scikit-learn's own MLP."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data, parametrize_with_checks

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor


def _float32_rounding(estimator):
    """The checks the default float32 estimators fail by rounding alone, with the reason."""
    return {"check_sample_weight_equivalence_on_dense_data":
            "float32 training agrees with repeated rows to float32 rounding (~1e-7 relative), where the "
            "check asks for rtol 1e-7; in float64 it passes (test_sample_weights_equal_repeated_and_removed_rows)"}


# array_api input is checked only where SCIPY_ARRAY_API is set: these estimators take NumPy arrays
# (and frames), which they convert, as scikit-learn's MLP does.
@parametrize_with_checks([MLPClassifier(max_iter=50, random_state=0), MLPRegressor(max_iter=50, random_state=0)],
                         expected_failed_checks=_float32_rounding)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_sample_weights_equal_repeated_and_removed_rows(estimator, solver):
    """scikit-learn's own check, in float64: integer weights act as repeated rows, zero weights as
    removed ones (adam in one batch of all rows, as the check's small data set makes it)."""
    model = estimator(max_iter=50, random_state=0, dtype="float64", solver=solver)
    check_sample_weight_equivalence_on_dense_data(estimator.__name__, model)


def _digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def test_pipeline_grid_search_and_parallel_cross_validation():
    x_train, x_test, y_train, y_test = _digits()
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=60, random_state=0)),
                          {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)]}, cv=2)
    search.fit(x_train, y_train)
    assert search.best_estimator_.score(x_test, y_test) > 0.9
    scores = cross_val_score(MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0), x_train, y_train,
                             cv=3, n_jobs=2)
    assert scores.shape == (3,) and (scores > 0.9).all()


def test_clones_and_pickles_predict_alike():
    x_train, x_test, y_train, _ = _digits()
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=10, random_state=1).fit(x_train, y_train)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(x_test), model.predict_proba(x_test))
    refit = clone(model).fit(x_train, y_train)  # same random_state, same data: the same model
    np.testing.assert_array_equal(refit.predict_proba(x_test), model.predict_proba(x_test))
    assert not hasattr(clone(model), "params_")


def test_fitted_attributes_are_fastnn_data():
    x_train, x_test, y_train, _ = _digits()
    model = MLPClassifier(hidden_layer_sizes=(24, 12), max_iter=5, random_state=0).fit(x_train, y_train)
    assert [W.shape for W in model.coefs_] == [(64, 24), (24, 12), (12, 10)]
    assert [b.shape for b in model.intercepts_] == [(24,), (12,), (10,)]
    assert len(model.loss_curve_) == model.n_iter_ == 5 and model.best_loss_ == min(model.loss_curve_)
    assert model.n_features_in_ == 64 and model.out_activation_ == "softmax"
    scaled = (x_test - x_train.mean(axis=0)) / np.where(x_train.std(axis=0) > 0, x_train.std(axis=0), 1)
    np.testing.assert_allclose(fnn.softmax(fnn.forward(model.net_, model.params_, scaled)),
                               model.predict_proba(x_test), rtol=1e-6, atol=1e-9)


def test_standardised_inputs_by_default():
    """Breast cancer's features span five orders of magnitude: unscaled, the same net and epochs
    lose accuracy."""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    scaled = MLPClassifier(hidden_layer_sizes=(32,), random_state=0).fit(x_train, y_train)
    raw = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, standardize=False).fit(x_train, y_train)
    assert scaled.score(x_test, y_test) >= 0.94  # 0.947-0.959 over seeds 0-3, raw 0.871-0.924
    assert scaled.score(x_test, y_test) > raw.score(x_test, y_test) + 0.02


def test_accuracy_within_a_point_or_two_of_scikit_learns_mlp():
    """Same data, hidden layer, solver, learning rate, batch size and epochs, inputs scaled the
    same way; the initialisations differ."""
    x_train, x_test, y_train, y_test = _digits()
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    settings = dict(hidden_layer_sizes=(64,), max_iter=30, batch_size=32, learning_rate_init=1e-3, random_state=0)
    ours = MLPClassifier(**settings, n_iter_no_change=30).fit(x_train, y_train).score(x_test, y_test)
    with pytest.warns(Warning):  # ConvergenceWarning: 30 epochs do not converge
        theirs = SkMLPClassifier(**settings, n_iter_no_change=30).fit(x_train, y_train).score(x_test, y_test)
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "eel"]), np.array([3, 7, 11]), np.array([0.0, 1.0, 2.0]), np.array([False, True]),
])
def test_labels_of_every_kind_come_back_as_given(labels):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    index = np.argmax(x[:, :len(labels)], axis=1)
    y = labels[index]
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=1e-2, random_state=0).fit(x, y)
    assert model.predict(x).dtype == y.dtype and set(model.predict(x)) <= set(labels)
    assert list(model.classes_) == sorted(labels.tolist())
    assert model.score(x, y) > 0.8
    proba = model.predict_proba(x)
    assert proba.shape == (90, len(labels)) and np.allclose(proba.sum(axis=1), 1)


def test_multilabel_and_multi_output():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 5))
    indicator = (x[:, :3] > 0).astype(int)
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, learning_rate_init=1e-2, random_state=0)
    model.fit(x, indicator)
    assert model.out_activation_ == "logistic" and model.predict(x).shape == (120, 3)
    assert (model.predict(x) == indicator).mean() > 0.9
    assert model.predict_proba(x).shape == (120, 3)
    x_r, y_r = make_regression(n_samples=150, n_features=6, n_targets=2, noise=1.0, random_state=0)
    y_r = y_r / y_r.std(axis=0)  # the targets are not scaled inside, as in scikit-learn
    regressor = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x_r, y_r)
    assert regressor.predict(x_r).shape == (150, 2) and regressor.score(x_r, y_r) > 0.9
    single = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x_r, y_r[:, 0])
    assert single.predict(x_r).shape == (150,)


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_regressor_losses_and_solvers(loss, solver):
    x, y = make_regression(n_samples=200, n_features=5, noise=2.0, random_state=0)
    y = y / y.std()
    model = MLPRegressor(hidden_layer_sizes=(32,), solver=solver, loss=loss, max_iter=300, random_state=0,
                         learning_rate_init=1e-2).fit(x, y)
    assert model.score(x, y) > 0.9, model.loss_curve_[-5:]


def test_partial_fit_and_warm_start_continue_training():
    x_train, x_test, y_train, y_test = _digits()
    model = MLPClassifier(hidden_layer_sizes=(32,), random_state=0)
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(x_train, y_train)
    for _ in range(20):
        model.partial_fit(x_train, y_train, classes=np.arange(10))
    assert model.n_iter_ == 20 and model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.score(x_test, y_test) > 0.85
    warm = MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, warm_start=True, random_state=0)
    warm.fit(x_train, y_train)
    first = warm.coefs_[0].copy()
    warm.fit(x_train, y_train)
    assert warm.n_iter_ == 6 and len(warm.loss_curve_) == 6 and not np.array_equal(first, warm.coefs_[0])


def test_early_stopping_holds_out_a_validation_fraction():
    x_train, _, y_train, _ = _digits()
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, early_stopping=True, n_iter_no_change=3,
                          random_state=0).fit(x_train, y_train)
    assert model.n_iter_ < 300 and len(model.validation_scores_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_) > 0.9 and model.best_loss_ is None


def test_frames_record_feature_names_and_reject_other_columns():
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, y)
    assert list(model.feature_names_in_) == list(x.columns)
    model.predict(x)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(x[list(reversed(x.columns))])
    with pytest.raises(ValueError, match="feature names"):
        model.predict(x.rename(columns={x.columns[0]: "something else"}))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(x.iloc[:, 1:])
    with pytest.raises(ValueError, match="29 features, but MLPClassifier is expecting 30"):
        with pytest.warns(UserWarning, match="valid feature names"):
            model.predict(x.to_numpy()[:, 1:])
    assert isinstance(x, pd.DataFrame)


def test_polars_frames_record_feature_names_and_reject_other_columns():
    pl = pytest.importorskip("polars")  # in the dev extra: CI runs this
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    frame = pl.from_pandas(x)
    model = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(frame, y.to_numpy())
    assert list(model.feature_names_in_) == frame.columns
    np.testing.assert_array_equal(model.predict(frame), model.predict(x))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame.select(list(reversed(frame.columns))))


@pytest.mark.parametrize("params, match", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(activation="swish"), "activation"),
    (dict(solver="newton"), "solver"),
    (dict(dtype="int8"), "dtype"),
    (dict(validation_fraction=1.5), "validation_fraction"),
])
def test_bad_parameters_raise_at_fit(params, match):
    x, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(x[:50], y[:50])


def _imbalanced():
    x, y = load_breast_cancer(return_X_y=True)
    keep = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:40]]  # 357 of one class, 40 of the other
    return x[keep], y[keep]


def test_class_weight_is_a_sample_weight_per_class():
    x, y = _imbalanced()
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    for class_weight, per_sample in [({0: 4.0, 1: 0.5}, np.where(y == 0, 4.0, 0.5)),
                                     ("balanced", len(y) / (2 * np.bincount(y)[y]))]:
        weighted = MLPClassifier(class_weight=class_weight, **kw).fit(x, y)
        expected = MLPClassifier(**kw).fit(x, y, sample_weight=per_sample)
        np.testing.assert_allclose(weighted.predict_proba(x), expected.predict_proba(x), rtol=1e-6, atol=1e-7)
        plain = MLPClassifier(**kw).fit(x, y)
        assert np.abs(plain.predict_proba(x) - weighted.predict_proba(x)).max() > 1e-3
    balanced = MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, random_state=0, class_weight="balanced").fit(x, y)
    plain = MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, random_state=0).fit(x, y)
    minority = y == 0
    assert (balanced.predict(x[minority]) == 0).mean() >= (plain.predict(x[minority]) == 0).mean()


def test_samples_of_weight_zero_change_nothing():
    x, y = _imbalanced()
    w = np.ones(len(y))
    w[::3] = 0
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    weighted = MLPClassifier(**kw).fit(x, y, sample_weight=w)
    dropped = MLPClassifier(**kw).fit(x[w > 0], y[w > 0])
    np.testing.assert_allclose(weighted.predict_proba(x), dropped.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_integer_weights_equal_repeated_rows_with_lbfgs():
    x, y = make_regression(n_samples=60, n_features=4, noise=1.0, random_state=0)
    w = np.random.default_rng(0).integers(1, 4, size=60)
    kw = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=8, random_state=0, dtype="float64", alpha=1e-3)
    weighted = MLPRegressor(**kw).fit(x, y, sample_weight=w)
    repeated = MLPRegressor(**kw).fit(np.repeat(x, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.predict(x), repeated.predict(x), rtol=1e-6, atol=1e-6)


def test_weights_in_partial_fit_and_early_stopping():
    x, y = _imbalanced()
    w = np.where(y == 0, 5.0, 1.0)
    model = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    model.partial_fit(x, y, classes=[0, 1], sample_weight=w)
    model.partial_fit(x, y, sample_weight=w)
    assert model.n_iter_ == 2
    stopped = MLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, max_iter=30, random_state=0)
    stopped.fit(x, y, sample_weight=w)
    assert len(stopped.validation_scores_) == stopped.n_iter_
    with pytest.raises(ValueError, match="(?i)negative"):
        MLPRegressor(max_iter=1).fit(x, y.astype(float), sample_weight=-w)
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(max_iter=1, class_weight="even").fit(x, y)
    with pytest.raises(ValueError, match="class_weight names classes"):
        MLPClassifier(max_iter=1, class_weight={7: 1.0}).fit(x, y)


def test_validation_data_is_recorded_and_watched_by_early_stopping():
    from sklearn.metrics import log_loss

    x_train, x_test, y_train, y_test = _digits()
    model = MLPClassifier(hidden_layer_sizes=(16,), early_stopping=True, n_iter_no_change=3, max_iter=60,
                          random_state=0).fit(x_train, y_train, validation_data=(x_test, y_test))
    history = model.history_
    assert len(model.validation_loss_curve_) == len(model.validation_scores_) == model.n_iter_ == history.epochs
    best = history.best_epoch
    # the params kept are the best epoch's, on exactly the rows passed as validation_data
    assert log_loss(y_test, model.predict_proba(x_test)) == pytest.approx(history["val_loss"][best - 1], rel=1e-4)
    assert model.validation_scores_[best - 1] == pytest.approx(model.score(x_test, y_test))
    np.testing.assert_allclose(model.input_mean_, x_train.mean(axis=0))  # every training row, none held out
    plain = MLPRegressor(max_iter=3, random_state=0).fit(x_train, y_train.astype(float),
                                                         validation_data=(x_test, y_test.astype(float)))
    assert len(plain.validation_loss_curve_) == 3 and plain.history_.epochs == 3
    with pytest.raises(TypeError, match="validation_data must be a pair"):
        MLPClassifier(max_iter=1).fit(x_train, y_train, validation_data=x_test)
    with pytest.raises(ValueError, match="labels not among classes_"):
        MLPClassifier(max_iter=1).fit(x_train[y_train < 5], y_train[y_train < 5], validation_data=(x_test, y_test))
