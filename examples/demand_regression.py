"""Regression on a table: predict product demand from price, promotion, weekday and temperature.

The whole path in a few calls: build a net from a list of layer sizes, initialise it, train with
``fit`` (validation split, early stopping, a learning-rate schedule, the loss printed as it falls),
check the error on held-out rows, and save and reload the model.

    python examples/demand_regression.py            # add --quick for a short run
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import fastnn as fnn


def make_table(n, seed=0):
    """A synthetic sales table: columns price, promo, weekday, temperature -> demand (units)."""
    rng = np.random.default_rng(seed)
    price = rng.uniform(2.0, 12.0, n)
    promo = rng.integers(0, 2, n).astype(float)
    weekday = rng.integers(0, 7, n).astype(float)
    temperature = rng.normal(18.0, 7.0, n)
    demand = (220 - 14 * price + 35 * promo + 12 * (weekday >= 5) + 2.5 * temperature
              - 0.09 * (temperature - 22) ** 2 + rng.normal(0, 6, n))
    return np.column_stack([price, promo, weekday, temperature]), demand


def main(quick=False):
    x, y = make_table(4000)
    x_train, y_train, x_test, y_test = x[:3200], y[:3200], x[3200:], y[3200:]

    # Standardise with the training rows' statistics; the same numbers scale new rows later.
    mean, std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(), y_train.std()
    scale_x = lambda a: (a - mean) / std  # noqa: E731

    net = fnn.mlp([4, 32, 32, 1], activation="silu")
    params = fnn.init(net, seed=0)
    epochs = 5 if quick else 60
    steps = epochs * -(-int(0.8 * len(y_train)) // 64)
    optimizer = fnn.adam(lr=fnn.schedules.warmup_cosine(3e-3, warmup_steps=50, total_steps=steps))

    def report(epoch, logs):
        if epoch == 1 or epoch % 10 == 0:
            print(f"epoch {epoch:3d}  loss {logs['loss']:.4f}  val_loss {logs['val_loss']:.4f}")

    params, history = fnn.fit(net, params, scale_x(x_train), (y_train - y_mean) / y_std, loss="mse",
                              optimizer=optimizer, epochs=epochs, batch_size=64, validation_split=0.2,
                              early_stopping=fnn.EarlyStopping(patience=8), metrics=["r2"], callbacks=[report])
    print(f"stopped after {history.epochs} epochs; best epoch {history.best_epoch}")

    predicted = fnn.predict(net, params, scale_x(x_test))[:, 0] * y_std + y_mean
    mae = np.mean(np.abs(predicted - y_test))
    print(f"test MAE {mae:.2f} units (demand spans {y_test.min():.0f} to {y_test.max():.0f})")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demand.npz"
        fnn.save(path, net, params, metadata={"x_mean": mean, "x_std": std, "y_mean": y_mean, "y_std": y_std})
        net2, params2, meta = fnn.load(path, with_metadata=True)
        again = fnn.predict(net2, params2, (x_test - meta["x_mean"]) / meta["x_std"])[:, 0] * meta["y_std"] + meta["y_mean"]
        assert np.array_equal(again, predicted)
        print(f"saved and reloaded {path.name}: identical predictions")
    return mae


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
