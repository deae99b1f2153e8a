"""Command line: ``python -m fastnn demo | train | predict | bench`` (also installed as ``fastnn``).

- ``demo``: trains a digits classifier with ``fit``, then the same with the NumPy reference.
- ``train DATA.csv --target COLUMN``: fits ``fastnn.sklearn``'s MLPClassifier or MLPRegressor on a
  CSV table (read and prepared by ``cli/tables.py``) and saves a ``fastnn.TabularModel``.
- ``predict MODEL.npz DATA.csv``: predictions for a CSV table, as CSV; ``evaluate`` scores them.
- ``bench``: times fastnn against the NumPy reference and its peers (``cli/bench.py``) and prints a table.

The library never imports this package.

Any problem with the user's files or arguments prints one line, ``fastnn: error: ...``, and exits
with status 2, without a traceback.
"""

import argparse
import csv
import os
import sys
import threading
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


def run_demo(args):
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


def _estimator(args, classification):
    """The scikit-learn estimator ``train`` fits, from its options."""
    try:
        from ..sklearn import MLPClassifier, MLPRegressor
    except ImportError:
        raise CommandError("train needs scikit-learn: pip install -e \".[sklearn]\"") from None
    progress = args.progress is not False  # a line per epoch; a live bar too on a terminal
    stops = args.patience > 0
    return (MLPClassifier if classification else MLPRegressor)(
        hidden_layer_sizes=tuple(args.hidden), activation=args.activation, solver=args.solver, alpha=args.weight_decay,
        batch_size=args.batch_size, learning_rate_init=args.lr, max_iter=args.epochs, random_state=args.seed,
        early_stopping=stops, tol=0.0, n_iter_no_change=args.patience if stops else args.epochs + 1,
        verbose=progress)


def run_train(args):
    import fastnn as fnn

    from .tables import training_table

    if args.plot:
        _check_output_path(args.plot, "--plot")  # fail before training, not after
        _pyplot()
    _check_output_path(args.out, "--out")
    table = training_table(args.data, args.target, args.task, args.val_split, args.seed, args.missing, args.drop)
    meta = table.meta
    (x, y), (x_val, y_val) = table.train, table.validation
    classification = meta["task"] == "classification"
    classes = np.unique(y) if classification else None
    sizes = [x.shape[1], *args.hidden, len(classes) if classification else 1]
    _check_fits_in_memory(sizes, args.hidden)
    estimator = _estimator(args, classification)
    listed = f"; classes {_classes_text(classes)}" if classification else ""
    print(f"{args.data}: {meta['task']} of {args.target!r} from {len(meta['features'])} features; {len(y)} "
          f"training / {len(y_val)} validation rows; net {tuple(sizes)} {args.activation}{listed}")
    if args.task is None:
        other = "regression" if classification else "classification"
        print(f"({meta['task']}: {_task_reason(meta['task'], classes)}; --task {other} to override)")
    if table.dropped:
        print(f"left out {table.dropped} rows whose {args.target!r} cell is empty or NA / nan")
    if table.filled:
        print(f"filled {table.filled} missing feature cells with their column's training mean")
    if args.threads is not None:
        fnn.set_num_threads(args.threads)
    _compile_first(estimator, x, y, classes)
    start = time.perf_counter()
    estimator.fit(x, y, validation_data=(x_val, y_val))
    seconds = time.perf_counter() - start
    model = fnn.TabularModel(estimator.net_, estimator.params_, _model_meta(meta, estimator))
    history = estimator.history_
    stopped = args.patience > 0 and args.solver != "lbfgs"
    kept = history.best_epoch if stopped else history.epochs
    which = (f"kept epoch {kept} of {history.epochs}, the best validation loss" if stopped
             else f"kept the last {'iteration' if args.solver == 'lbfgs' else 'epoch'}, {kept}")
    final = {"val_loss": history["val_loss"][kept - 1], **_validation_scores(model, x_val, y_val)}
    print("final: " + "  ".join(f"{k} {v:.4g}" for k, v in final.items()) + f"  ({which}; {seconds:.2f} s)")
    model.save(args.out)
    print(f"saved the model to {args.out}")
    if args.plot:
        metric = "accuracy" if classification else "r2"
        loss = "softmax_cross_entropy" if classification else "mse"
        _plot(history, args.plot, f"{args.target} ({meta['task']})", loss, kept)
        print(f"wrote the loss and validation {metric} curves to {args.plot}")
    return 0


def _model_meta(meta, estimator):
    """The saved model's preparation: the table's, the estimator's standardisation and classes."""
    kept = dict(meta, x_mean=estimator.input_mean_, x_scale=estimator.input_scale_)
    if meta["task"] == "classification":
        kept["classes"] = estimator.classes_
    return kept


def _validation_scores(model, x_val, y_val):
    """Accuracy, or R^2 and MAE in the target's units, of the model on the validation rows (y_val:
    class names, or the standardised target)."""
    predicted = model.predict(x_val)
    if model.classes is not None:
        return {"val_accuracy": float(np.mean(predicted == y_val))}
    truth = y_val * model.y_scale + model.y_mean
    return _regression_scores(truth, predicted, "val_")


def _regression_scores(truth, predicted, prefix=""):
    """{R^2, MAE} of predictions against the truth."""
    r2 = 1.0 - float(np.sum((truth - predicted) ** 2)) / max(float(np.sum((truth - truth.mean()) ** 2)),
                                                            np.finfo(float).tiny)
    return {prefix + "r2": r2, prefix + "mae": float(np.mean(np.abs(truth - predicted)))}


# Seconds of compiling after which ``train`` says that it is compiling
COMPILE_NOTICE_SECONDS = 1.0


def _compile_first(estimator, x, y, classes):
    """Compile (or load from the cache) what training needs with one epoch on a few rows (one of
    each class), saying "compiling kernels (first run only)..." on stderr if that takes longer
    than COMPILE_NOTICE_SECONDS: the first run on a new machine compiles for ~20 s."""
    from sklearn.base import clone

    notice = threading.Timer(COMPILE_NOTICE_SECONDS,
                             lambda: print("compiling kernels (first run only)...", file=sys.stderr, flush=True))
    notice.daemon = True
    notice.start()
    rows = np.unique(y, return_index=True)[1] if classes is not None else np.arange(min(2, len(y)))
    try:
        clone(estimator).set_params(max_iter=1, early_stopping=False, verbose=False).fit(x[rows], y[rows])
    finally:
        notice.cancel()


def _task_reason(task, classes):
    if task == "regression":
        return "the target holds numbers that are not a few whole values"
    return f"the target holds {len(classes)} distinct values, text or a few whole numbers"


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or CommandError when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise CommandError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _check_output_path(path, option):
    """CommandError unless ``path`` names a file that can be written: not a directory, in a
    folder that exists and is writable."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"{option} {path} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise CommandError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CommandError(f"{option} {path}: the folder {folder} is not writable")


def _plot(history, path, title, loss, kept):
    """The training and validation loss (log scale) and the validation metric per epoch, the kept
    epoch marked on both."""
    plt = _pyplot()

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, history.epochs + 1)
    for key in ("loss", "val_loss"):
        ax_loss.plot(epochs, history[key], label=key)
    ax_loss.set(xlabel="epoch", ylabel=f"{loss} loss (standardised target)" if loss == "mse" else f"{loss} loss",
                yscale="log", title=title)
    metric = "val_accuracy" if "val_accuracy" in history else "val_r2"
    ax_metric.plot(epochs, history[metric], color="C2", label=metric)
    ax_metric.set(xlabel="epoch", ylabel=metric.removeprefix("val_"), title=f"validation {metric.removeprefix('val_')}")
    for ax in (ax_loss, ax_metric):
        ax.axvline(kept, color="grey", linestyle=":", label=f"kept epoch {kept}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _model_and_table(fnn, tables, args):
    """(the ``TabularModel`` in args.model, the ``tables.Table`` of args.data, its rows' raw outputs)."""
    model = fnn.TabularModel.load(args.model)
    table = tables.Table(args.data)
    table.require(model.features, "feature column")
    x = tables.fill_missing(args.data, table.numbers(model.features), model.features, model.x_fill)
    return model, table, model.outputs(x)


def _scores(tables, model, table, predicted):
    """{metric: value} of the predictions against the data's target column, over the rows whose
    target cell holds a value; None when the data has no target column."""
    target = model.target
    if target not in table.header:
        return None
    truth, numeric = table.column(target)
    known = ~tables.is_missing(truth, numeric)
    if model.classes is not None:
        names = tables.class_names(truth[known], numeric)
        return {"accuracy": float(np.mean(predicted[known] == names)), "rows": int(known.sum())}
    if not numeric:
        raise CommandError(f"{table.path}: column {target!r} must be numeric to score a regression")
    scores = _regression_scores(truth[known], np.asarray(predicted, dtype=np.float64)[known])
    return {**scores, "rows": int(known.sum())}


def _scores_text(scores):
    return "  ".join(f"{k} {v:.4g}" if k != "rows" else f"({v} rows)" for k, v in scores.items())


def run_predict(args):
    import fastnn as fnn

    from . import tables

    model, table, out = _model_and_table(fnn, tables, args)
    classification = model.classes is not None
    if args.proba and not classification:
        raise CommandError(f"--proba needs a classification model; {args.model} is a regression model")
    if args.id is not None and args.id not in table.header:
        raise CommandError(f"{args.data}: no column {args.id!r} for --id; the file has {', '.join(table.header)}")
    ids = table.strings(args.id) if args.id else None
    predicted = model.decode(out)
    head = ([args.id] if args.id else []) + [model.target]
    if args.proba:
        head += [f"P({c})" for c in model.classes]
        probabilities = fnn.softmax(out)
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(stream)
        writer.writerow(head)
        for i, value in enumerate(predicted):
            row = ([ids[i]] if args.id else []) + [value if classification else f"{value:.10g}"]
            if args.proba:
                row += [f"{q:.6g}" for q in probabilities[i]]
            writer.writerow(row)
    finally:
        if args.out:
            stream.close()
    if args.out:
        print(f"wrote {len(predicted)} predictions to {args.out}", file=sys.stderr)
    scores = _scores(tables, model, table, predicted)
    if scores is not None:
        print(f"score against the {model.target} column: {_scores_text(scores)}", file=sys.stderr)
    return 0


def run_evaluate(args):
    import fastnn as fnn

    from . import tables

    model, table, out = _model_and_table(fnn, tables, args)
    scores = _scores(tables, model, table, model.decode(out))
    if scores is None:
        raise CommandError(f"{args.data}: no column {model.target!r} (the model's target) to evaluate "
                           f"against; the file has {', '.join(table.header)}")
    print(f"{args.model} on {args.data}: {_scores_text(scores)}")
    return 0


def run_bench(args):
    import fastnn as fnn

    from . import bench as fbench

    if args.png:
        _pyplot()  # fail before measuring, not after
    fnn.set_num_threads(args.threads)
    cases = [c for c in fbench.CASES if not args.only or c[0] in args.only]
    print(f"fastnn {fnn.__version__}: {len(cases)} cases, {args.threads} thread(s); compiling or loading "
          "kernels first", file=sys.stderr, flush=True)
    log = (lambda line: print(line, file=sys.stderr, flush=True))
    log(f"one-core float32 peak: {fbench.peak_flops() / 1e9:.1f} GFLOP/s now; each case's FLOP floor is "
        "its FLOPs at the peak, measured in turns with it")
    rows = fbench.run(cases, min_time=0.02 if args.quick else 0.2, repeats=3 if args.quick else 7, log=log,
                      floor_in_turns=True)
    peak = fbench.peak_range(rows, cases)
    print(fbench.text_table(rows, args.threads, peak))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(fbench.markdown(rows, args.threads, peak))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.png:
        fbench.bar_chart(rows, args.threads, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


# Training holds about this many float32 numbers per weight: params, gradient, the optimizer's two
# moments, and fit's spare set of params and moments.
_NUMBERS_PER_WEIGHT = 8


def _check_fits_in_memory(sizes, hidden):
    """CommandError when training a net of these layer ``sizes`` in float32 needs more than this
    machine's memory."""
    weights = sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))
    need = weights * 4 * _NUMBERS_PER_WEIGHT
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: let allocation decide
        return
    if need > have:
        raise CommandError(f"--hidden {','.join(map(str, hidden))} makes a model of {weights:,} weights; "
                           f"training it needs about {need / 2**30:.1f} GiB, and this machine has "
                           f"{have / 2**30:.1f} GiB")


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text!r}")
    return value


_seed = _non_negative_int


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}")
    return value


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


def _names(text):
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names; got {text!r}")
    return names


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option's line with its default, unless it has none to show."""

    def _get_help_string(self, action):
        nothing = any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.default == []
        if nothing or action.help is None:
            return action.help
        return super()._get_help_string(action)


def _parser():
    from ..net import ACTIVATIONS
    from . import tables

    parser = argparse.ArgumentParser(
        prog="fastnn", description="Train, run and benchmark small neural networks on the CPU with fastnn.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, summary):
        return sub.add_parser(name, help=summary, description=summary, formatter_class=_HelpWithDefaults)

    p = command("demo", "train a digits classifier with fastnn and the NumPy reference, and compare their times")
    p.add_argument("--epochs", type=_positive_int, default=30, help="passes over the training set")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="rows per update")
    p.add_argument("--hidden", type=_positive_int, default=64, help="width of each of the two hidden layers")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the params' float type")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the split, the init and the batch order")
    p.set_defaults(run=run_demo)

    p = command("train", "train on a CSV table and save the model with its preparation (scaling, classes)")
    p.add_argument("data", metavar="DATA.csv", help="a CSV file with a header row (',', ';' or tab separated)")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    p.add_argument("--task", choices=["regression", "classification"],
                   help="default: classification when the target holds text, booleans or a few whole "
                        "numbers (at most 20, each for 20 rows on average), else regression")
    p.add_argument("--hidden", type=_widths, default=[64, 64], metavar="W1,W2,...", help="hidden layer widths")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="hidden layers' activation")
    p.add_argument("--epochs", type=_positive_int, default=50, help="most passes over the training rows")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="rows per update")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    p.add_argument("--solver", choices=["adam", "sgd", "lbfgs"], default="adam",
                   help="the update rule (lbfgs: full-batch L-BFGS, --epochs its iterations)")
    p.add_argument("--val-split", type=_fraction, default=0.2,
                   help="fraction of rows held out for validation, drawn after a seeded shuffle (stratified "
                        "for classification)")
    p.add_argument("--missing", choices=tables.MISSING_POLICIES, default="error",
                   help="empty, NA or nan feature cells: an error, or filled with the column's training mean "
                        "(kept with the model for predictions)")
    p.add_argument("--drop", type=_names, default=[], metavar="COL1,COL2,...",
                   help="columns that are not features (ids, leaks); default none")
    p.add_argument("--patience", type=_non_negative_int, default=10,
                   help="stop after this many epochs without a better validation loss and keep the best "
                        "epoch (0, or --no-early-stopping: train every epoch and keep the last)")
    p.add_argument("--no-early-stopping", dest="patience", action="store_const", const=0,
                   help="train every epoch and keep the last (--patience 0)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=1e-4,
                   help="L2 penalty on the weights (scikit-learn's alpha)")
    p.add_argument("--threads", type=_positive_int, help="compute threads (default: fastnn's own choice)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the split, the init and the batch order")
    p.add_argument("--out", default="model.npz", help="where to save the model")
    p.add_argument("--plot", metavar="LOSS.png",
                   help="write the loss and validation metric curves, the kept epoch marked (needs matplotlib)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a line per epoch on stderr, and a live bar with the running loss, elapsed time "
                        "and ETA on a terminal (default: on)")
    p.set_defaults(run=run_train)

    p = command("predict", "predict a CSV table with a model saved by train; the score on stderr when the "
                           "table holds the target")
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by train")
    p.add_argument("data", metavar="DATA.csv", help="rows with the model's feature columns")
    p.add_argument("--out", metavar="PREDICTIONS.csv", help="default: standard output")
    p.add_argument("--proba", action="store_true", help="also write each class's probability (classification)")
    p.add_argument("--id", metavar="COLUMN", help="a column of DATA.csv to copy into each prediction row")
    p.set_defaults(run=run_predict)

    p = command("evaluate", "score a model saved by train on a CSV table that holds its target: accuracy, or "
                            "R^2 and MAE")
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by train")
    p.add_argument("data", metavar="DATA.csv", help="rows with the model's feature and target columns")
    p.set_defaults(run=run_evaluate)

    p = command("bench", "time fastnn against the NumPy reference and its peers and print a table")
    p.add_argument("--threads", type=_positive_int, default=1, help="BLAS and Numba threads")
    p.add_argument("--only", nargs="+", choices=["train_step", "forward", "Predictor", "fit"],
                   help="run only these ops")
    p.add_argument("--quick", action="store_true", help="fewer, shorter measurements (noisier)")
    p.add_argument("--markdown", metavar="TABLE.md", help="also write the table as Markdown")
    p.add_argument("--png", metavar="CHART.png", help="also write a bar chart (needs matplotlib)")
    p.set_defaults(run=run_bench)
    return parser


def main(argv=None):
    from .tables import TableError

    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, TableError, FloatingPointError) as exc:
        message = str(exc)
    except MemoryError:
        message = "out of memory: try a smaller model (--hidden) or batch (--batch-size)"
    except (OSError, ValueError) as exc:  # unreadable or invalid model files, unwritable outputs
        message = f"{exc}" if isinstance(exc, ValueError) else f"{exc.strerror or exc}: {exc.filename}"
        if isinstance(exc, OSError) and exc.strerror and str(exc.filename) in exc.strerror:
            message = exc.strerror  # it names the file already
    print(f"fastnn: error: {message}", file=sys.stderr)
    return EXIT_USAGE
