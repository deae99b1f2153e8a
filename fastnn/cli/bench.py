"""The benchmark driver behind ``python -m fastnn bench`` and the pytest-benchmark suite in ``benchmarks/``.

Workloads (float32, from the performance targets):

- tiny 16-64-64-1 tanh, batch 32, mse, sgd;  small 64-128-10 relu, batch 64, softmax CE, adam
- medium 784-256-128-10 relu, batch 128, softmax CE, adam;  large 1024-2048-2048-1024 relu, batch 256,
  mse, adam
- fit: one epoch over 10,000 samples on 32-64-64-10 tanh, softmax CE, adam, batch 32 and the whole set
- Predictor: ``fastnn.Predictor(net, params)(x)`` on one sample, against ``reference.forward``

Each case is timed for every implementation: ``fastnn``, ``reference`` (NumPy; for fit, a loop of
``reference.train_step``), ``torch`` (PyTorch eager) and ``jax`` (``jax.jit``) when they are installed
and, for the medium and large workloads, two floors: ``gemm``, the same matrix products done alone by
NumPy, and ``update``, the optimizer update alone (``fastnn.step``, bound by memory traffic on large
nets). A step cannot beat their sum.
train_step runs as a training loop does, each call on the previous call's params and state
(``chained``). A timing is the median over ``repeats`` measurements of the mean time of enough back-to-back calls
to fill ``min_time`` seconds; the implementations of a case take turns within each repeat (``measure``).
"""

import ctypes
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["WORKLOADS", "CASES", "setup", "gemm_floor", "update_floor", "chained", "callables", "measure", "run",
           "floor_call", "peak_range", "markdown", "text_table", "bar_chart"]


@dataclass(frozen=True)
class Workload:
    sizes: tuple
    activation: str
    batch: int
    loss: str
    optimizer: str
    lr: float


WORKLOADS = {
    "tiny": Workload((16, 64, 64, 1), "tanh", 32, "mse", "sgd", 1e-2),
    "small": Workload((64, 128, 10), "relu", 64, "softmax_cross_entropy", "adam", 1e-3),
    "narrow": Workload((32, 32, 32, 1), "tanh", 10_000, "mse", "adam", 1e-3),
    "medium": Workload((784, 256, 128, 10), "relu", 128, "softmax_cross_entropy", "adam", 1e-3),
    "large": Workload((1024, 2048, 2048, 1024), "relu", 256, "mse", "adam", 1e-3),
    "fit": Workload((32, 64, 64, 10), "tanh", 10_000, "softmax_cross_entropy", "adam", 1e-3),
}

# (op, workload label, workload, detail): the rows of the report, in order.
CASES = (
    ("train_step", "tiny", "tiny", None),
    ("train_step", "small", "small", None),
    ("train_step", "narrow, 10k rows", "narrow", None),
    ("train_step", "medium", "medium", None),
    ("train_step", "large", "large", None),
    ("forward", "tiny, one sample", "tiny", 1),
    ("Predictor", "tiny, one sample", "tiny", 1),
    ("forward", "small, batch 64", "small", None),
    ("fit", "10k samples, batch 32", "fit", 32),
    ("fit", "10k samples, whole set", "fit", 10_000),
)


def setup(name, dtype=np.float32, rows=None):
    """(net, params, x, y, loss, opt, state) for workload ``name``, ``rows`` samples (default: its batch)."""
    import fastnn as fnn

    w = WORKLOADS[name]
    rows = w.batch if rows is None else rows
    net = fnn.mlp(list(w.sizes), activation=w.activation)
    params = fnn.init(net, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, w.sizes[0])).astype(dtype)
    if w.loss == "softmax_cross_entropy":
        y = rng.integers(0, w.sizes[-1], size=rows)
    else:
        y = rng.normal(size=(rows, w.sizes[-1])).astype(dtype)
    opt = getattr(fnn, w.optimizer)(lr=w.lr)
    return net, params, x, y, w.loss, opt, fnn.init_state(opt, params)


# The workloads whose train_step is bound by its matrix products: their products and their
# optimizer update are also timed alone (``gemm_floor``, ``update_floor``).
GEMM_FLOOR_WORKLOADS = ("medium", "large")
FLOORS = ("gemm", "update")


def gemm_floor(net, params, x):
    """A callable doing the train step's matrix products alone (forward, dW, dx) with NumPy."""
    acts = [x]
    for W, _ in params:
        acts.append(acts[-1] @ W)
    outs_f = [np.empty_like(a) for a in acts[1:]]
    outs_w = [np.empty_like(W) for W, _ in params]
    outs_d = [np.empty_like(a) for a in acts[1:-1]]

    def run():
        for l, (W, _) in enumerate(params):
            np.dot(acts[l], W, out=outs_f[l])
        for l in range(len(params) - 1, -1, -1):
            np.dot(acts[l].T, acts[l + 1], out=outs_w[l])
            if l:
                np.dot(acts[l + 1], params[l][0].T, out=outs_d[l - 1])
    return run


def update_floor(opt, params, state):
    """A callable doing the train step's optimizer update alone (``fastnn.step``, gradients of 1e-3)."""
    import fastnn as fnn

    grads = tuple((np.full_like(W, 1e-3), np.full_like(b, 1e-3)) for W, b in params)
    return lambda: fnn.step(opt, params, grads, state)


def torch_call(op, name, detail):
    """The case in PyTorch eager mode (same weights, data, loss and optimizer), or None without torch.

    train_step: zero_grad, forward, loss, backward, optimizer step; forward under no_grad; fit: one
    epoch of such steps over a fresh permutation. Tensors are made once, outside the timing.
    """
    try:
        import torch
    except ImportError:
        return None
    from ..runtime import get_num_threads

    torch.set_num_threads(get_num_threads()["numba"])  # the same thread count as fastnn's
    w = WORKLOADS[name]
    net, params, x, y, loss, _, _ = setup(name, rows=w.batch)
    layers = []
    for (W, b), act in zip(params, net.activations):
        linear = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear] + ([] if act == "identity" else [{"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[act]()])
    model = torch.nn.Sequential(*layers)
    xt = torch.from_numpy(x)
    if loss == "mse":
        yt, loss_fn = torch.from_numpy(y), torch.nn.functional.mse_loss
    else:
        yt, loss_fn = torch.from_numpy(y.astype(np.int64)), torch.nn.functional.cross_entropy
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[w.optimizer](model.parameters(), lr=w.lr)

    def step(xb, yb):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()

    if op in ("forward", "Predictor"):
        xf = xt[0] if detail == 1 else xt

        def forward():
            with torch.no_grad():
                model(xf)
        return forward
    if op == "fit":
        def epoch():
            order = torch.randperm(xt.shape[0])
            for start in range(0, xt.shape[0], detail):
                idx = order[start:start + detail]
                step(xt[idx], yt[idx])
        return epoch
    return lambda: step(xt, yt)


def import_jax():
    """(jax, jax.numpy) ready to run, or None without jax. With one fastnn thread and jax not yet
    imported, jax's threads are confined to one core (Linux); otherwise jax uses every core it sees."""
    import os
    import sys

    from ..runtime import get_num_threads

    pin = "jax" not in sys.modules and get_num_threads()["numba"] == 1 and hasattr(os, "sched_setaffinity")
    if pin:
        # XLA's CPU client ignores the old thread-count flags (measured: 2 cores busy with them set).
        # Its worker threads inherit the affinity of the thread that creates them, so create them
        # while this thread is pinned to one core, then unpin it.
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
    try:
        import jax
        import jax.numpy as jnp

        jax.jit(lambda a: a + 1)(jnp.ones(2)).block_until_ready()
    except ImportError:
        return None
    finally:
        if pin:
            os.sched_setaffinity(0, cores)
    return jax, jnp


def jax_step(jax, jnp, net, loss, lr, optimizer):
    """(step, forward) in JAX for ``net``, not yet jitted: step(params, state, x, y) -> (params,
    state, loss) with sgd, or adam written out as torch.optim.Adam does it (state = (t, m, v), see
    ``jax_state``); params a list of (W, b) pairs; loss "mse" or softmax cross-entropy on labels."""
    acts = [{"relu": jax.nn.relu, "tanh": jnp.tanh, "identity": lambda z: z}[a] for a in net.activations]

    def forward(ps, xb):
        for (W, b), f in zip(ps, acts):
            xb = f(xb @ W + b)
        return xb

    def loss_fn(ps, xb, yb):
        out = forward(ps, xb)
        if loss == "mse":
            return jnp.mean((out - yb) ** 2)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), yb[:, None], axis=1))

    def step(ps, state, xb, yb):
        value, grads = jax.value_and_grad(loss_fn)(ps, xb, yb)
        if optimizer == "sgd":
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, ps, grads), state, value
        t, m, v = state
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, grads)
        bc1, bc2 = 1 - 0.9 ** t, jnp.sqrt(1 - 0.999 ** t)
        ps = jax.tree_util.tree_map(lambda p, m, v: p - (lr / bc1) * m / (jnp.sqrt(v) / bc2 + 1e-8), ps, m, v)
        return ps, (t, m, v), value

    return step, forward


def jax_state(jax, jnp, jparams):
    """The initial (t, m, v) of ``jax_step``'s adam for jparams (any leading axes)."""
    zeros = jax.tree_util.tree_map(jnp.zeros_like, jparams)
    return jnp.float32(0.0), zeros, zeros


def jax_call(op, name, detail):
    """The case in JAX, each step one ``jax.jit``-compiled function, or None without jax.

    train_step: loss, gradients and update (``jax_step``) in one compiled call, each on the last
    call's results (``chained``); forward: a compiled forward; fit: one epoch of such steps over a
    fresh permutation, batches gathered in Python. Every call waits for its result
    (block_until_ready). Threads as ``import_jax`` sets them.
    """
    imported = import_jax()
    if imported is None:
        return None
    jax, jnp = imported
    w = WORKLOADS[name]
    net, params, x, y, loss, _, _ = setup(name, rows=w.batch)
    jparams = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
    xj = jnp.asarray(x)
    yj = jnp.asarray(y.astype(np.int32) if loss != "mse" else y)
    raw_step, forward = jax_step(jax, jnp, net, loss, w.lr, w.optimizer)
    step = jax.jit(raw_step)
    state = jax_state(jax, jnp, jparams)
    if op in ("forward", "Predictor"):
        xf = xj[0] if detail == 1 else xj
        compiled = jax.jit(forward)
        return lambda: compiled(jparams, xf).block_until_ready()
    if op == "fit":
        rng = np.random.default_rng(0)

        def epoch():
            ps, st = jparams, state
            order = rng.permutation(x.shape[0])
            for start in range(0, x.shape[0], detail):
                idx = order[start:start + detail]
                ps, st, _ = step(ps, st, xj[idx], yj[idx])
            jax.block_until_ready(ps)
        return epoch
    return chained(lambda p, s: jax.block_until_ready(step(p, s, xj, yj)), jparams, state)


def chained(step, params, state):
    """A zero-argument callable that runs ``step(params, state) -> (params, state, loss)`` on its
    own last results, as a training loop does: each call takes the previous call's params and
    state (torch's optimizer steps its model in place the same way)."""
    current = [params, state]

    def run():
        current[0], current[1], value = step(current[0], current[1])
        return value

    return run


def callables(op, name, detail):
    """{implementation: zero-argument callable} for one case (peers only when installed)."""
    import fastnn as fnn
    import fastnn.reference as ref

    impls = {"fastnn": fnn, "reference": ref}
    if op == "fit":
        net, params, x, y, loss, opt, _ = setup(name)
        calls = {k: (lambda m=m: m.fit(net, params, x, y, loss=loss, optimizer=opt, epochs=1, batch_size=detail,
                                       progress=False)) for k, m in impls.items()}
    else:
        net, params, x, y, loss, opt, state = setup(name)
        if op in ("forward", "Predictor"):
            x = x[0] if detail == 1 else x
            calls = {k: (lambda m=m: m.forward(net, params, x)) for k, m in impls.items()}
            if op == "Predictor":  # fastnn's packed forward against the reference's forward
                predictor = fnn.Predictor(net, params)
                calls["fastnn"] = lambda: predictor(x)
        else:
            calls = {k: chained(lambda p, s, m=m: m.train_step(net, opt, p, s, x, y, loss), params, state)
                     for k, m in impls.items()}
            if name in GEMM_FLOOR_WORKLOADS:
                calls["gemm"] = gemm_floor(net, params, x)
                calls["update"] = update_floor(opt, params, state)
    for peer, make in (("torch", torch_call), ("jax", jax_call)):
        fn = make(op, name, detail)
        if fn is not None:
            calls[peer] = fn
    return calls


def measure(fns, min_time=0.1, repeats=7):
    """{name: median over ``repeats`` of the mean seconds per call} for the zero-argument callables
    ``fns``, each one's calls batched to fill ``min_time``. The callables take turns within every
    repeat, so a ratio between two of them is measured under the same load. Timed one after the
    other, two runs on a shared VM (Zen 4, one thread) gave the tiny train step's reference /
    fastnn as 5.04x (91.3 / 18.1 us) and 6.46x (166.6 / 25.8 us): load came and went between
    the implementations' turns."""
    numbers = {}
    for name, fn in fns.items():
        fn()  # compile or load, fill caches
        numbers[name] = max(1, int(min_time / max(_seconds(fn), 1e-7)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            number = numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return {name: float(np.median(t)) for name, t in times.items()}


def flops(op, name, detail):
    """Floating-point operations of the case's matrix products (2 per multiply-add): the work the
    FLOP floor counts. A train step does the forward products, dW for every layer and dx for every
    layer but the first; an epoch of ``fit`` does that for every sample."""
    w = WORKLOADS[name]
    per_row = sum(m * n for m, n in zip(w.sizes[:-1], w.sizes[1:]))
    if op in ("forward", "Predictor"):
        return 2 * per_row * (1 if detail == 1 else w.batch)
    return 2 * (3 * per_row - w.sizes[0] * w.sizes[1]) * w.batch


def peak_flops(repeats=5):
    """This CPU's float32 peak on one core in FLOP/s: the best of ``repeats`` runs of
    ``kernels.simd.peak_fma``, independent vector FMA chains held in registers."""
    from .._kernels import simd

    x = np.ones(simd.lanes(np.float32), np.float32)
    iterations = 1_000_000
    simd.peak_fma(x, 10)  # compile or load
    best = min(_seconds(lambda: simd.peak_fma(x, iterations)) for _ in range(repeats))
    return 2 * simd.PEAK_CHAINS * simd.lanes(np.float32) * iterations / best


# The floor taken in turns runs this many times the case's FLOPs per call, so that the call's own
# ~0.3 us is a small part of it even for the one-sample forward's 10 kFLOP.
FLOOR_REPEAT = 64


def floor_call(case_flops):
    """(callable, seconds per call -> the case's floor): ``kernels.simd.peak_fma`` doing
    FLOOR_REPEAT times the case's FLOPs in one call, for timing in turns with the implementations
    (``run(floor_in_turns=True)``): the floor then moves with the machine's speed, which on a
    shared VM changes from minute to minute."""
    from .._kernels import simd

    x = np.ones(simd.lanes(np.float32), np.float32)
    per_iteration = 2 * simd.PEAK_CHAINS * simd.lanes(np.float32)
    iterations = max(1, round(FLOOR_REPEAT * case_flops / per_iteration))
    scale = case_flops / (iterations * per_iteration)
    return (lambda: simd.peak_fma(x, iterations)), (lambda seconds: seconds * scale)


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def steady_malloc():
    """Have glibc's malloc serve blocks of up to 32 MiB from its heap and keep up to 64 MiB free at
    the top of it, in this process (no-op elsewhere than Linux with glibc): then no implementation's
    time depends on what ran before it. With the default, dynamic thresholds, the reference's step
    on the narrow net took 3.7 ms alone and 8.4 ms timed in turns with fastnn, 2,468 page faults a
    step: each of its 1.3 MB temporaries was mapped afresh (one thread, Zen 4)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)


def run(cases=CASES, min_time=0.1, repeats=7, log=None, peak=None, floor_in_turns=False):
    """[(op, label, {implementation: median seconds})] for ``cases``; with ``peak`` (FLOP/s), each
    row also holds "floor": the case's FLOPs at that peak; with ``floor_in_turns``, the time of
    those FLOPs at the peak measured in turns with the implementations (``floor_call``). Calls
    ``steady_malloc`` first."""
    steady_malloc()
    rows = []
    for op, label, name, detail in cases:
        fns = callables(op, name, detail)
        if floor_in_turns:
            fns["floor"], to_floor = floor_call(flops(op, name, detail))
        timings = measure(fns, min_time, repeats)
        if floor_in_turns:
            timings["floor"] = to_floor(timings["floor"])
        elif peak:
            timings["floor"] = flops(op, name, detail) / peak
        rows.append((op, label, timings))
        if log:
            log(f"{op} {label}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in timings.items()))
    return rows


def _fmt(seconds):
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _others(t):
    """The "other" column: the floors (how far above their sum fastnn is), then the peers."""
    fast = t["fastnn"]
    parts = []
    floors = [k for k in FLOORS if k in t]
    if floors:
        total = sum(t[k] for k in floors)
        parts.append(" + ".join(f"{k} {_fmt(t[k])}" for k in floors)
                     + (f" = {_fmt(total)}" if len(floors) > 1 else "") + f" (fastnn takes {fast / total:.2f}x)")
    parts += [f"{k} {_fmt(v)} ({k} / fastnn {v / fast:.2f}x)" for k, v in t.items()
              if k not in ("fastnn", "reference", "floor") + FLOORS]
    return ", ".join(parts)


def _table(rows):
    header = ["op", "workload", "fastnn", "reference", "reference / fastnn", "FLOP floor", "fastnn / floor",
              "other"]
    body = []
    for op, label, t in rows:
        floor = t.get("floor")
        body.append([op, label, _fmt(t["fastnn"]), _fmt(t["reference"]), f"{t['reference'] / t['fastnn']:.2f}x",
                     _fmt(floor) if floor else "-", f"{t['fastnn'] / floor:.2f}x" if floor else "-", _others(t)])
    return header, body


def peak_range(rows, cases=CASES):
    """(lowest, highest) one-core peak in FLOP/s at which the floors of ``rows`` (``run``'s result
    for ``cases``) were measured."""
    peaks = [flops(op, name, detail) / t["floor"] for (_, _, t), (op, _, name, detail) in zip(rows, cases)]
    return min(peaks), max(peaks)


def _title(threads, peak):
    """``peak``: FLOP/s, or (lowest, highest) when the floors were measured in turns."""
    if isinstance(peak, tuple):
        rate = f"; one-core peak {peak[0] / 1e9:.1f}-{peak[1] / 1e9:.1f} GFLOP/s, measured in turns with each case"
    else:
        rate = f"; one-core peak {peak / 1e9:.1f} GFLOP/s" if peak else ""
    return f"medians, float32, {threads} thread(s)" + rate


def text_table(rows, threads, peak=None):
    header, body = _table(rows)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = [_title(threads, peak), "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def markdown(rows, threads, peak=None):
    header, body = _table(rows)
    title = _title(threads, peak)
    lines = [title[0].upper() + title[1:] + ".", "", "| " + " | ".join(header) + " |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def bar_chart(rows, threads, path):
    """A PNG of reference / fastnn per case (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [f"{op}\n{label}" for op, label, _ in rows]
    ratios = [t["reference"] / t["fastnn"] for _, _, t in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(rows)), ratios, color="tab:blue")
    ax.axhline(1.0, color="gray", linewidth=1)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("speed-up over the NumPy reference")
    ax.set_title(f"fastnn vs reference (float32, {threads} thread(s), medians)")
    for i, r in enumerate(ratios):
        ax.text(i, r, f"{r:.1f}x", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
