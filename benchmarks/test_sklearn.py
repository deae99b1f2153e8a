"""fastnn.sklearn's estimators against scikit-learn's MLP: the same data, settings and epochs.

Run: ``pytest benchmarks/test_sklearn.py`` (one thread unless FASTNN_BENCH_THREADS says otherwise;
scikit-learn's BLAS is limited to the same count). Each case first checks that the two reach test
scores within two points, so the suite doubles as a smoke test. fastnn trains in float32 (its
default), scikit-learn in float64 (its dtype follows X).
"""

import warnings

import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fastnn.sklearn import MLPClassifier

IMPLS = {"fastnn": MLPClassifier, "scikit-learn": SkMLPClassifier}
# (hidden layers, batch size): the first as the benchmark's small net, the second scikit-learn's
# default width and batch ("auto": 200 rows)
SETTINGS = {"(64,), batch 32": ((64,), 32), "(100,), batch auto": ((100,), "auto")}


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_test), y_train, y_test


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_fit_digits(benchmark, digits, threads, setting, impl):
    """fit: 1347 rows of 64 features, 10 classes, 30 epochs of adam (lr 1e-3)."""
    x_train, x_test, y_train, y_test = digits
    hidden, batch = SETTINGS[setting]
    kw = dict(hidden_layer_sizes=hidden, batch_size=batch, max_iter=30, n_iter_no_change=30, random_state=0)
    benchmark.group = f"estimator fit|digits {setting}"
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 30 epochs do not converge
        scores = {name: cls(**kw).fit(x_train, y_train).score(x_test, y_test) for name, cls in IMPLS.items()}
        assert abs(scores["fastnn"] - scores["scikit-learn"]) <= 0.02, scores
        benchmark(lambda: IMPLS[impl](**kw).fit(x_train, y_train))
