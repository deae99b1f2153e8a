"""Validation loss reached in equal wall time: ``fit_lbfgs`` against ``fit`` with Adam.

    python benchmarks/lbfgs_against_adam.py

Three small, smooth regression problems (hundreds of rows, float64, tanh nets), a quarter of the
rows held out. Adam (lr 1e-3, batch 32) runs 400 epochs, L-BFGS 300 iterations (tol 0), each
recording its validation loss after every epoch or iteration with the time it took; the table
gives the lowest validation loss each had reached within each time budget. Kernels are compiled
first, and every case is run ``--repeats`` times (the best of each column is printed, as the
machine may be busy).
"""

import argparse

import numpy as np

import fastnn as fnn

BUDGETS = (0.02, 0.05, 0.1, 0.2)  # seconds


def problems(rng):
    """(name, x, y, layer sizes)."""
    x = rng.uniform(-2, 2, size=(300, 1))
    yield "sin(3x), 300 rows", x, np.sin(3 * x), [1, 16, 16, 1]
    x = rng.uniform(-1, 1, size=(400, 3))
    yield "sin(2a) cos(b) + c^2, 400 rows", x, np.sin(2 * x[:, :1]) * np.cos(x[:, 1:2]) + x[:, 2:3] ** 2, [3, 24, 24, 1]
    x = rng.uniform(size=(500, 5))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4])[:, None]
    yield "Friedman #1 without noise, 500 rows", (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std(), [5, 32, 32, 1]


def best_within(history, budget):
    """The lowest validation loss recorded by ``budget`` seconds (NaN if none was)."""
    elapsed = np.cumsum(history["time"])
    reached = [v for t, v in zip(elapsed, history["val_loss"]) if t <= budget]
    return min(reached, default=float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    fnn.set_num_threads(1)
    print("best validation loss reached within each time budget (Adam | L-BFGS), float64, 1 thread")
    for name, x, y, sizes in problems(np.random.default_rng(0)):
        k = x.shape[0] * 3 // 4
        train, val = (x[:k], y[:k]), (x[k:], y[k:])
        net = fnn.mlp(sizes, activation="tanh")
        start = fnn.init(net, seed=0, dtype=np.float64)
        fnn.fit(net, start, *train, epochs=1, progress=False)  # compiled before the clock starts
        fnn.fit_lbfgs(net, start, *train, max_iter=2)
        adam, lbfgs = np.full((repeats, len(BUDGETS)), np.nan), np.full((repeats, len(BUDGETS)), np.nan)
        for r in range(repeats):
            _, h_adam = fnn.fit(net, start, *train, epochs=400, batch_size=32, optimizer=fnn.adam(1e-3),
                                validation_data=val, progress=False)
            _, h_lbfgs = fnn.fit_lbfgs(net, start, *train, max_iter=300, tol=0, validation_data=val)
            adam[r] = [best_within(h_adam, b) for b in BUDGETS]
            lbfgs[r] = [best_within(h_lbfgs, b) for b in BUDGETS]
        cells = [f"{b * 1e3:.0f} ms {np.nanmin(a):.2e} | {np.nanmin(l):.2e}"
                 for b, a, l in zip(BUDGETS, adam.T, lbfgs.T)]
        print(f"{name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
