"""Online learning inside a simulation: act on one sample at a time, learn from small batches.

A simulated plant has a response that drifts slowly. At every tick the model predicts the
response to the current input on a single sample (the latency-critical call) with a
``fastnn.Predictor``, which checks and packs the params once instead of on every call; the
simulation reveals the true value, and every 16 ticks ``train_step`` learns from the 16 most
recent observations and the Predictor takes the new params. The prediction error tracks the
drift instead of growing with it.

    python examples/online_learning.py              # add --quick for a short run
"""

import sys
import time

import numpy as np

import fastnn as fnn


def plant(u, t):
    """The true response to input u (3 numbers) at time t; its shape drifts with t."""
    phase = 0.0005 * t
    return np.sin(u[0] + phase) + 0.5 * u[1] * np.cos(phase) - 0.3 * u[2] ** 2


def main(quick=False):
    rng = np.random.default_rng(0)
    net = fnn.mlp([3, 32, 32, 1], activation="tanh")
    params = fnn.init(net, seed=0)
    opt = fnn.adam(3e-3)
    state = fnn.init_state(opt, params)
    window = 16
    xs, ys = np.empty((window, 3), np.float32), np.empty((window, 1), np.float32)
    ticks = 4000 if quick else 40000
    errors, predict_time = [], 0.0
    policy = fnn.Predictor(net, params)
    for t in range(ticks):
        u = rng.uniform(-1.5, 1.5, 3).astype(np.float32)
        start = time.perf_counter()
        guess = policy(u)[0]                           # one sample in, one prediction out
        predict_time += time.perf_counter() - start
        truth = plant(u, t)
        errors.append(abs(guess - truth))
        xs[t % window], ys[t % window] = u, truth
        if t % window == window - 1:                   # a small batch of the latest observations
            params, state, _ = fnn.train_step(net, opt, params, state, xs, ys, loss="mse")
            policy.update(params)
        if (t + 1) % (ticks // 5) == 0:
            print(f"tick {t + 1:6d}  mean |error| over the last {ticks // 5} ticks: "
                  f"{np.mean(errors[-(ticks // 5):]):.4f}")
    print(f"single-sample prediction: {1e6 * predict_time / ticks:.1f} us per call on average")
    return float(np.mean(errors[-(ticks // 5):]))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
