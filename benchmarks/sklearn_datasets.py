"""fastnn's estimators against scikit-learn's MLP and a linear model on scikit-learn's bundled data
sets (diabetes, breast cancer, wine, digits): test score (R^2 or accuracy) and fit time.

Run: ``python benchmarks/sklearn_datasets.py`` (one thread for fastnn and for every BLAS). Each
data set is split 75/25 with random_state 0 (stratified for classes); both MLPs take their default
settings ((100,) relu, adam, batch "auto", max_iter 200, tol 1e-4, random_state 0), scikit-learn's
behind a StandardScaler (fastnn standardises inside); the linear model is Ridge or
LogisticRegression behind a StandardScaler. Times are the median of 5 fits, after one untimed
fit (fastnn's compiling or loading its kernels).
"""

import statistics
import time
import warnings

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor

# (name, loader, classification, the MLPs' settings besides random_state). Diabetes' target (25 to
# 346) is not scaled by either MLP: with the defaults neither converges in 200 epochs (R^2 < 0), so
# it is also run with a larger learning rate and early stopping.
CASES = [("diabetes", load_diabetes, False, {}),
         ("diabetes, lr 0.01, early stopping", load_diabetes, False,
          dict(learning_rate_init=0.01, max_iter=1000, early_stopping=True)),
         ("breast cancer", load_breast_cancer, True, {}), ("wine", load_wine, True, {}),
         ("digits", load_digits, True, {})]


def _models(classification, settings):
    if classification:
        return {"fastnn": MLPClassifier(random_state=0, **settings),
                "scikit-learn MLP": make_pipeline(StandardScaler(), SkMLPClassifier(random_state=0, **settings)),
                "linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))}
    return {"fastnn": MLPRegressor(random_state=0, **settings),
            "scikit-learn MLP": make_pipeline(StandardScaler(), SkMLPRegressor(random_state=0, **settings)),
            "linear": make_pipeline(StandardScaler(), Ridge())}


def _timed_fit(model, x, y, repeats=5):
    model.fit(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    fnn.set_num_threads(1)
    print("| data set | rows x features | fastnn: score, fit | scikit-learn MLP: score, fit | linear: score, fit |")
    print("|---|---|---|---|---|")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, load, classification, settings in CASES:
            x, y = load(return_X_y=True)
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                                stratify=y if classification else None)
            cells = []
            for model in _models(classification, settings).values():
                seconds = _timed_fit(model, x_train, y_train)
                cells.append(f"{model.score(x_test, y_test):.3f}, {seconds * 1e3:.0f} ms")
            print(f"| {name} | {x.shape[0]} x {x.shape[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
