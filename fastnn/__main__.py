"""Command line: ``python -m fastnn demo | train | predict | bench`` (also installed as ``fastnn``).

- ``demo``: trains a digits classifier with ``fit``, then the same with the NumPy reference.
- ``train DATA.csv --target COLUMN``: trains on a CSV table and saves the model with its scaling.
- ``predict MODEL.npz DATA.csv``: predictions for a CSV table, as CSV.
- ``bench``: times fastnn against the NumPy reference (``fastnn.bench``) and prints a table.

Any problem with the user's files or arguments prints one line, ``fastnn: error: ...``, and exits
with status 2, without a traceback.
"""

import argparse
import csv
import sys
import time

import numpy as np

EXIT_USAGE = 2


class CommandError(Exception):
    """A problem with the user's input, reported in one line with exit status 2."""


def _digits(seed):
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], split 80/20."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise CommandError("the demo needs scikit-learn: pip install -e \".[dev]\" (or the examples extra)")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


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
    settings = dict(loss="softmax_cross_entropy", optimizer=opt, batch_size=args.batch_size, seed=args.seed)
    start = time.perf_counter()
    fnn.fit(net, params0, x_train[:2], y_train[:2], epochs=1, progress=False, **settings)
    print(f"compiled (or loaded from the cache) in {time.perf_counter() - start:.2f} s")
    results = []
    for name, impl in (("fastnn", fnn), ("reference", ref)):
        print(f"{name}.fit:", flush=True)
        start = time.perf_counter()
        params, _ = impl.fit(net, params0, x_train, y_train, epochs=args.epochs,
                             progress=True if name == "fastnn" else False, **settings)
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(np.argmax(impl.forward(net, params, x_test), axis=1) == y_test))
        results.append(seconds)
        print(f"  test accuracy {accuracy:.4f}  training time {seconds:.3f} s", flush=True)
    print(f"fastnn trained {results[1] / results[0]:.1f}x faster than the NumPy reference")
    return 0


def _classes_text(classes):
    return ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")


def train(args):
    import fastnn as fnn
    from fastnn import tabular

    if args.plot:
        _pyplot()  # fail before training, not after
    header, columns = tabular.read_table(args.data)
    if args.target not in columns:
        raise CommandError(f"{args.data}: no column {args.target!r}; the file has {', '.join(header)}")
    names = [h for h in header if h != args.target]
    x = tabular.features(args.data, columns, names)
    raw_y = columns[args.target]
    task = args.task or ("regression" if tabular.is_numeric(raw_y) else "classification")
    meta = {"task": task, "target": args.target, "features": names}
    if task == "classification":
        classes, y = tabular.encode_labels(raw_y)
        if len(classes) < 2:
            raise CommandError(f"{args.data}: target {args.target!r} has a single class {classes[0]!r}; "
                               "classification needs at least two")
        meta["classes"] = classes
        loss, n_out, metrics = "softmax_cross_entropy", len(classes), ["accuracy"]
    else:
        y_raw = tabular.numeric(args.data, args.target, raw_y)
        y_scaler = tabular.Scaler.fit(y_raw[:, None])
        y = y_scaler.transform(y_raw[:, None])
        meta.update(y_mean=y_scaler.mean, y_scale=y_scaler.scale)
        loss, n_out, metrics = "mse", 1, ["mae", "r2"]
    if len(y) < 2:
        raise CommandError(f"{args.data}: {len(y)} data row; training needs at least 2 (one held out)")

    # Shuffle once, hold out the last part, and scale with statistics of the training part only.
    order = np.random.default_rng(args.seed).permutation(len(y))
    x, y = x[order], y[order]
    n_val = min(max(1, int(round(args.val_split * len(y)))), len(y) - 1)
    cut = len(y) - n_val
    scaler = tabular.Scaler.fit(x[:cut])
    x = scaler.transform(x)
    meta.update(x_mean=scaler.mean, x_scale=scaler.scale)

    net = fnn.mlp([x.shape[1], *args.hidden, n_out], activation=args.activation)
    params = fnn.init(net, seed=args.seed, dtype=np.float32)
    optimizer = getattr(fnn, args.optimizer)(lr=args.lr)
    print(f"{args.data}: {task} of {args.target!r} from {len(names)} features; {cut} training / {n_val} "
          f"validation rows; net {net.sizes} {args.activation}"
          + (f"; classes {_classes_text(classes)}" if task == "classification" else ""))
    params, history = fnn.fit(net, params, x[:cut], y[:cut], loss=loss, optimizer=optimizer,
                              epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                              validation_data=(x[cut:], y[cut:]), metrics=metrics, progress=args.progress)
    final = {k: v[-1] for k, v in history.items() if k.startswith("val_")}
    if task == "regression":  # report the error in the target's own units
        final["val_mae"] *= float(y_scaler.scale[0])
    print("final: " + "  ".join(f"{k} {v:.4g}" for k, v in final.items()))
    fnn.save(args.out, net, params, metadata=meta)
    print(f"saved the model to {args.out}")
    if args.plot:
        _plot(history, args.plot, f"{args.target} ({task})")
        print(f"wrote the loss curve to {args.plot}")
    return 0


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or CommandError when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _plot(history, path, title):
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, history.epochs + 1)
    for key in ("loss", "val_loss"):
        ax.plot(epochs, history[key], label=key)
    ax.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def predict(args):
    import fastnn as fnn
    from fastnn import tabular

    net, params, meta = fnn.load(args.model, with_metadata=True)
    if "features" not in meta or "x_mean" not in meta:
        raise CommandError(f"{args.model}: the model has no feature scaling; predict reads models "
                           "saved by `fastnn train`")
    names = [str(n) for n in meta["features"]]
    header, columns = tabular.read_table(args.data)
    x = tabular.Scaler(meta["x_mean"], meta["x_scale"]).transform(tabular.features(args.data, columns, names))
    out = fnn.predict(net, params, x, batch_size=4096)
    target = str(meta["target"])
    if str(meta["task"]) == "classification":
        values = [str(c) for c in meta["classes"][np.argmax(out, axis=1)]]
    else:
        values = [f"{v:.10g}" for v in tabular.Scaler(meta["y_mean"], meta["y_scale"]).inverse(out)[:, 0]]
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(stream)
        writer.writerow([target])
        writer.writerows([v] for v in values)
    finally:
        if args.out:
            stream.close()
    if args.out:
        print(f"wrote {len(values)} predictions to {args.out}", file=sys.stderr)
    return 0


def bench(args):
    import fastnn as fnn
    from fastnn import bench as fbench

    if args.png:
        _pyplot()  # fail before measuring, not after
    fnn.set_num_threads(args.threads)
    cases = [c for c in fbench.CASES if not args.only or c[0] in args.only]
    print(f"fastnn {fnn.__version__}: {len(cases)} cases, {args.threads} thread(s); compiling or loading "
          "kernels first", file=sys.stderr, flush=True)
    log = (lambda line: print(line, file=sys.stderr, flush=True))
    rows = fbench.run(cases, min_time=0.02 if args.quick else 0.2, repeats=3 if args.quick else 7, log=log)
    print(fbench.text_table(rows, args.threads))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(fbench.markdown(rows, args.threads))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.png:
        fbench.bar_chart(rows, args.threads, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
    return value


def _fraction(text):
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1); got {text!r}")
    return value


def _widths(text):
    try:
        return [_positive_int(w) for w in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive layer widths, e.g. 64,64; "
                                         f"got {text!r}") from None


def _parser():
    from fastnn.net import ACTIVATIONS
    from fastnn.optim import OPTIMIZERS

    parser = argparse.ArgumentParser(
        prog="fastnn", description="Train, run and benchmark small neural networks on the CPU with fastnn.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train a digits classifier with fastnn and the NumPy reference")
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--hidden", type=_positive_int, default=64)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)

    p = sub.add_parser("train", help="train on a CSV table and save the model")
    p.add_argument("data", metavar="DATA.csv")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    p.add_argument("--task", choices=["regression", "classification"],
                   help="default: classification when the target column holds text, else regression")
    p.add_argument("--hidden", type=_widths, default=[64, 64], metavar="W1,W2,...")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    p.add_argument("--epochs", type=_positive_int, default=50)
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--val-split", type=_fraction, default=0.2, help="fraction of rows held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="model.npz", help="where to save the model (default model.npz)")
    p.add_argument("--plot", metavar="LOSS.png", help="write the loss curve (needs matplotlib)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="per-epoch progress on stderr (default: when stderr is a terminal)")
    p.set_defaults(run=train)

    p = sub.add_parser("predict", help="predict a CSV table with a model saved by train")
    p.add_argument("model", metavar="MODEL.npz")
    p.add_argument("data", metavar="DATA.csv")
    p.add_argument("--out", metavar="PREDICTIONS.csv", help="default: standard output")
    p.set_defaults(run=predict)

    p = sub.add_parser("bench", help="time fastnn against the NumPy reference and print a table")
    p.add_argument("--threads", type=_positive_int, default=1, help="BLAS and Numba threads (default 1)")
    p.add_argument("--only", nargs="+", choices=["train_step", "forward", "Predictor", "fit"],
                   help="run only these ops")
    p.add_argument("--quick", action="store_true", help="fewer, shorter measurements (noisier)")
    p.add_argument("--markdown", metavar="TABLE.md", help="also write the table as Markdown")
    p.add_argument("--png", metavar="CHART.png", help="also write a bar chart (needs matplotlib)")
    p.set_defaults(run=bench)
    return parser


def main(argv=None):
    from fastnn.tabular import TableError

    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, TableError, FloatingPointError) as exc:
        message = str(exc)
    except (OSError, ValueError) as exc:  # unreadable or invalid model files, unwritable outputs
        message = f"{exc}" if isinstance(exc, ValueError) else f"{exc.strerror or exc}: {exc.filename}"
    print(f"fastnn: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
