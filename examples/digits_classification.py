"""Classification: scikit-learn's bundled 8x8 digits with ``fit``, accuracy and probabilities.

    python examples/digits_classification.py        # add --quick for a short run
"""

import sys

import numpy as np
from sklearn.datasets import load_digits

import fastnn as fnn


def main(quick=False):
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    net = fnn.mlp([64, 128, 64, 10], activation="relu")
    params = fnn.init(net, seed=0)
    params, history = fnn.fit(net, params, x_train, y_train, loss="softmax_cross_entropy",
                              optimizer=fnn.adam(1e-3), epochs=3 if quick else 40, batch_size=32,
                              validation_split=0.1, metrics=["accuracy"], progress=True)
    print(f"{history.epochs} epochs in {sum(history['time']):.2f} s; "
          f"validation accuracy {history['val_accuracy'][-1]:.4f}")

    probabilities = fnn.softmax(fnn.predict(net, params, x_test))
    accuracy = np.mean(np.argmax(probabilities, axis=1) == y_test)
    confident = np.max(probabilities, axis=1)
    print(f"test accuracy {accuracy:.4f}; median confidence {np.median(confident):.3f}, "
          f"lowest {confident.min():.3f} (sample {int(np.argmin(confident))}, a {y_test[np.argmin(confident)]})")
    return accuracy


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
