"""Ensembles: K members stepped by one stacked ``train_step`` against K separate ``train_step``
calls (a Python loop over the members, each on its own params and state) and against
``jax.jit(jax.vmap(step))`` when JAX is installed, with the FLOP floor of the K steps measured in
turns with them (``fastnn.cli.bench.floor_call``).

Run: ``python benchmarks/ensembles.py`` (one thread, float32, adam; medians of ``REPEATS``
rounds in which the implementations take turns). ``pytest benchmarks/test_ensembles.py`` runs the
same cases under pytest-benchmark.
"""

import sys
from dataclasses import dataclass

import numpy as np

import fastnn as fnn
from fastnn.cli import bench

REPEATS = 9


@dataclass(frozen=True)
class Case:
    label: str
    sizes: tuple
    members: int
    batch: int
    own_batches: bool  # each member its own rows (a bootstrap's batches) or one batch for all


CASES = (
    Case("16 tiny nets 16-64-64-1, batch 32, one batch", (16, 64, 64, 1), 16, 32, False),
    Case("16 tiny nets 16-64-64-1, batch 32 each", (16, 64, 64, 1), 16, 32, True),
    Case("5 dynamics models 20-200-200-20, batch 256 each", (20, 200, 200, 20), 5, 256, True),
)
LR = 1e-3


def setup(case, seed=0):
    """(net, stacked params, x, y): x (K, batch, n_in) and y for own batches, else (batch, ...)."""
    net = fnn.mlp(list(case.sizes), activation="relu")
    params = fnn.init(net, seed=seed, members=case.members)
    rng = np.random.default_rng(seed)
    lead = (case.members,) if case.own_batches else ()
    x = rng.normal(size=lead + (case.batch, case.sizes[0])).astype(np.float32)
    y = rng.normal(size=lead + (case.batch, case.sizes[-1])).astype(np.float32)
    return net, params, x, y


def flops(case):
    """The K train steps' matrix-product FLOPs (``fastnn.cli.bench.flops``' count)."""
    sizes = case.sizes
    per_row = sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))
    return case.members * 2 * (3 * per_row - sizes[0] * sizes[1]) * case.batch


def callables(case):
    """{implementation: a zero-argument callable doing one training step of every member}."""
    net, params, x, y = setup(case)
    opt = fnn.adam(lr=LR)
    count = case.members
    stacked = bench.chained(lambda p, s: fnn.train_step(net, opt, p, s, x, y), params, fnn.init_state(opt, params))
    members = [fnn.member(params, k) for k in range(count)]
    loops = [bench.chained(lambda p, s, k=k: fnn.train_step(net, opt, p, s, x[k] if case.own_batches else x, y[k]
                                                            if case.own_batches else y), m, fnn.init_state(opt, m))
             for k, m in enumerate(members)]

    def separate():
        for step in loops:
            step()

    fns = {"stacked": stacked, "separate": separate}
    vmapped = jax_vmapped(case, net, params, x, y)
    if vmapped is not None:
        fns["jax.vmap"] = vmapped
    return fns


def jax_vmapped(case, net, params, x, y):
    """JAX's step (``bench.jax_step``) vmapped over the members and jitted, chained on its own
    results, or None without JAX."""
    imported = bench.import_jax()
    if imported is None:
        return None
    jax, jnp = imported
    step, _ = bench.jax_step(jax, jnp, net, "mse", LR, "adam")
    jparams = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
    t, m, v = bench.jax_state(jax, jnp, jparams)
    batch_axis = 0 if case.own_batches else None
    vmapped = jax.jit(jax.vmap(step, in_axes=(0, (None, 0, 0), batch_axis, batch_axis), out_axes=(0, (None, 0, 0), 0)))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return bench.chained(lambda p, s: jax.block_until_ready(vmapped(p, s, xj, yj)), jparams, (t, m, v))


def run(cases=CASES, repeats=REPEATS, log=print):
    """[(case, {implementation: median seconds, "floor": seconds})], one thread."""
    fnn.set_num_threads(1)
    bench.steady_malloc()
    rows = []
    for case in cases:
        fns = callables(case)
        fns["floor"], to_floor = bench.floor_call(flops(case))
        times = bench.measure(fns, 0.2, repeats)
        times["floor"] = to_floor(times["floor"])
        rows.append((case, times))
        log(f"{case.label}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in times.items()))
    return rows


def table(rows):
    """The Markdown table of ``run``'s rows."""
    lines = ["| case | separate calls | stacked | separate / stacked | jax.vmap | jax.vmap / stacked | FLOP floor | "
             "stacked / floor | separate / floor |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, t in rows:
        jax_cells = (f"{t['jax.vmap'] * 1e6:.1f} us", f"{t['jax.vmap'] / t['stacked']:.2f}x") if "jax.vmap" in t else ("-", "-")
        lines.append(f"| {case.label} | {t['separate'] * 1e6:.1f} us | {t['stacked'] * 1e6:.1f} us | "
                     f"{t['separate'] / t['stacked']:.2f}x | {jax_cells[0]} | {jax_cells[1]} | {t['floor'] * 1e6:.1f} us | "
                     f"{t['stacked'] / t['floor']:.2f}x | {t['separate'] / t['floor']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"one thread, float32, adam; one-core peak {bench.peak_flops() / 1e9:.1f} GFLOP/s", file=sys.stderr)
    print(table(run()))
