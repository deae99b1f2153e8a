"""Command line: ``python -m fastnn demo`` trains a digits classifier with fastnn and the reference."""

import argparse
import sys
import time

import numpy as np


def _digits(seed):
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("the demo needs scikit-learn: pip install -e \".[dev]\" (or the examples extra)")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _train(impl, net, opt, params, x, y, epochs, batch_size, seed, log):
    """Mini-batch training with ``impl.train_step``; returns the trained params."""
    import fastnn as fnn

    state = fnn.init_state(opt, params)
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(y))
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            params, state, loss = impl.train_step(net, opt, params, state, x[idx], y[idx],
                                                  loss="softmax_cross_entropy")
            total += loss * len(idx)
        if log and (epoch == 1 or epoch % 5 == 0 or epoch == epochs):
            print(f"  epoch {epoch:3d}  train loss {total / len(y):.4f}")
    return params


def demo(args):
    import fastnn as fnn
    import fastnn.reference as ref

    (x_train, y_train), (x_test, y_test) = _digits(args.seed)
    net = fnn.mlp([64, args.hidden, args.hidden, 10], activation="relu")
    dtype = np.dtype(args.dtype)
    params0 = fnn.init(net, seed=args.seed, dtype=dtype)
    opt = fnn.adam(lr=args.lr)
    print(f"digits: {len(y_train)} train / {len(y_test)} test samples, net {net.sizes}, "
          f"{dtype.name}, adam lr={args.lr}, batch {args.batch_size}, {args.epochs} epochs")
    fnn.train_step(net, opt, params0, fnn.init_state(opt, params0), x_train[:2], y_train[:2],
                              loss="softmax_cross_entropy")  # compile (or load from cache) before timing
    results = []
    for name, impl in (("fastnn", fnn), ("reference", ref)):
        print(f"{name}:")
        start = time.perf_counter()
        params = _train(impl, net, opt, params0, x_train, y_train, args.epochs, args.batch_size, args.seed,
                        log=name == "fastnn")
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(np.argmax(impl.forward(net, params, x_test), axis=1) == y_test))
        results.append((name, accuracy, seconds))
        print(f"  test accuracy {accuracy:.4f}  training time {seconds:.3f} s")
    (_, _, fast), (_, _, slow) = results
    print(f"fastnn trained {slow / fast:.1f}x faster than the NumPy reference")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a digits classifier with fastnn and the NumPy reference")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("epochs", "batch_size", "hidden"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer; got {getattr(args, flag)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive; got {args.lr}")
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
