"""Thread control, warmup and the bench command."""

import platform
import resource
import sys

import numba
import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn.cli import bench
from fastnn.cli import main


def test_set_num_threads_governs_blas_and_numba():
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(1)
        assert fnn.get_num_threads() == {"blas": 1, "numba": 1}
        if numba.config.NUMBA_NUM_THREADS > 1:
            fnn.set_num_threads(2)
            assert fnn.get_num_threads() == {"blas": 2, "numba": 2}
    finally:
        fnn.set_num_threads(max(before["numba"], 1))


@pytest.mark.parametrize("n, error", [(0, ValueError), (1.5, TypeError), (10_000, ValueError)])
def test_set_num_threads_rejects(n, error):
    with pytest.raises(error, match="n must be"):
        fnn.set_num_threads(n)


def test_warmup_compiles_what_a_first_call_needs():
    seconds = fnn.warmup(depths=(2,), dtypes=(np.float64,))
    assert seconds >= 0
    from fastnn._kernels import fused
    from fastnn._kernels import network as knet
    from fastnn._kernels import optim as kopt
    # Every kernel the public functions call from Python: small nets' fused ones, large nets' BLAS ones.
    for kernel in (knet.forward_rows_checked_into, knet.forward_into, knet.forward_packed_into, knet.forward_packed_row_into,
                   knet.grad_into, knet.vjp_into, knet.train_step_into, knet.train_batches, kopt.update_into,
                   fused.fused_grad_checked_into, fused.fused_train_step_packed_into,
                   fused.fused_train_batches):
        assert any("float64" in str(sig) for sig in kernel.signatures), kernel.__name__
    # every activation's and loss's forms in float64 (kernels/forms.py: 0 until ensured)
    from numba import float64
    from fastnn._kernels import activations as kact
    from fastnn._kernels import losses as kloss
    for direction in (kact.FORWARD, kact.BACKWARD):
        assert all(kact.FORMS.table[kact.FORMS.slot(direction, float64, code)] for code in range(kact.FORMS.codes))
    assert all(kloss.FORMS.table[kloss.FORMS.slot(kloss.ROWS, float64, code)] for code in range(kloss.FORMS.codes))
    assert kloss.FORMS.table[kloss.FORMS.slot(kloss.TRANSPOSED, float64, kloss.SOFTMAX_CE_LABELS)]
    # forward on one 1-D sample, and on a few rows, for small nets and (releasing the GIL) large ones
    for kernel in (knet.forward_rows_checked_into, knet.forward_rows_checked_nogil_into):
        assert {sig[2].ndim for sig in kernel.signatures if "float64" in str(sig)} == {1, 2}, kernel.__name__
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fnn.warmup(dtypes=("int8",))
    with pytest.raises(ValueError, match="depth must be a positive int"):
        fnn.warmup(depths=(0,))


def test_bench_times_both_paths_and_formats_the_table():
    cases = [("forward", "tiny, one sample", "tiny", 1), ("fit", "epoch", "fit", 10_000)]
    rows = bench.run(cases, min_time=1e-3, repeats=1)
    assert [r[:2] for r in rows] == [c[:2] for c in cases]
    assert all({"fastnn", "reference"} <= set(t) and min(t.values()) > 0 for _, _, t in rows)
    md = bench.markdown(rows, 1)
    assert md.count("\n| forward | tiny, one sample |") == 1 and "1 thread(s)" in md
    assert "reference / fastnn" in bench.text_table(rows, 1)


def test_bench_gemm_floor_does_the_products_of_a_train_step(monkeypatch):
    """Forward a W per layer, then per layer from the last: a^T dz (dW) and dz W^T (dx, not for layer 0)."""
    net, params, x, *_ = bench.setup("tiny")
    run = bench.gemm_floor(net, params, x)
    shapes = []
    real = np.dot
    monkeypatch.setattr(bench.np, "dot", lambda a, b, out: shapes.append((a.shape, b.shape)) or real(a, b, out=out))
    run()
    b = x.shape[0]
    assert shapes == [((b, 16), (16, 64)), ((b, 64), (64, 64)), ((b, 64), (64, 1)),
                      ((64, b), (b, 1)), ((b, 1), (1, 64)),
                      ((64, b), (b, 64)), ((b, 64), (64, 64)),
                      ((16, b), (b, 64))]


def test_bench_update_floor_is_the_steps_optimizer_update():
    net, params, x, y, loss, opt, state = bench.setup("small")
    new_params, new_state = bench.update_floor(opt, params, state)()
    grads = tuple((np.full_like(W, 1e-3), np.full_like(b, 1e-3)) for W, b in params)
    want_params, want_state = ref.step(opt, params, grads, state)
    assert new_state.count == want_state.count == 1
    for (W, b), (Wr, br), (W0, _) in zip(new_params, want_params, params):
        np.testing.assert_allclose(W, Wr, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b, br, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(W, W0)


def test_bench_table_sums_the_floors_and_rates_the_peers():
    rows = [("train_step", "large", {"fastnn": 0.1, "reference": 0.2, "gemm": 0.08, "update": 0.015, "jax": 0.12}),
            ("train_step", "tiny", {"fastnn": 2e-5, "reference": 6e-5})]
    md = bench.markdown(rows, 1)
    # 0.1 / (0.08 + 0.015) = 1.0526; jax / fastnn = 1.2
    assert "| gemm 80.00 ms + update 15.00 ms = 95.00 ms (fastnn takes 1.05x), jax 0.120 s (jax / fastnn 1.20x) |" in md
    assert "| train_step | tiny | 20.0 µs | 60.0 µs | 3.00x | - | - |  |" in md


def test_bench_floor_is_the_cases_flops_at_the_peak():
    """FLOPs: 2 per multiply-add of the forward products, dW of every layer, dx of all but the first."""
    assert bench.flops("forward", "tiny", 1) == 2 * (16 * 64 + 64 * 64 + 64 * 1)
    assert bench.flops("forward", "small", None) == 2 * 64 * (64 * 128 + 128 * 10)
    assert bench.flops("train_step", "tiny", None) == 2 * 32 * (3 * (16 * 64 + 64 * 64 + 64) - 16 * 64)
    assert bench.flops("fit", "fit", 32) == 2 * 10_000 * (3 * (32 * 64 + 64 * 64 + 64 * 10) - 32 * 64)
    rows = bench.run([("forward", "tiny, one sample", "tiny", 1)], min_time=1e-3, repeats=1, peak=1e9)
    t = rows[0][2]
    assert t["floor"] == pytest.approx(bench.flops("forward", "tiny", 1) / 1e9)
    md = bench.markdown(rows, 1, peak=1e9)
    assert md.startswith("Medians, float32, 1 thread(s); one-core peak 1.0 GFLOP/s.")
    assert f"| {t['fastnn'] / t['floor']:.2f}x |" in md


def test_bench_floor_in_turns_is_the_cases_flops_at_the_peak_measured_beside_it():
    """The floor timed in turns with the implementations (FLOOR_REPEAT times the FLOPs in one
    peak_fma call, scaled back): its rate lies within a factor of the peak measured alone, and the
    title gives the range of the rates."""
    cases = [("forward", "tiny, one sample", "tiny", 1), ("train_step", "tiny", "tiny", None)]
    rows = bench.run(cases, min_time=1e-3, repeats=3, floor_in_turns=True)
    low, high = bench.peak_range(rows, cases)
    alone = bench.peak_flops(repeats=3)
    assert alone / 3 < low <= high < alone * 3
    for (op, _, name, detail), (_, _, t) in zip(cases, rows):
        assert low <= bench.flops(op, name, detail) / t["floor"] <= high
    md = bench.markdown(rows, 1, peak=(low, high))
    assert md.startswith(f"Medians, float32, 1 thread(s); one-core peak {low / 1e9:.1f}-{high / 1e9:.1f} GFLOP/s, "
                         "measured in turns with each case.")


def test_bench_peak_is_a_plausible_rate():
    peak = bench.peak_flops(repeats=1)
    assert 1e9 < peak < 1e13


def test_bench_command_writes_markdown_and_png(tmp_path, capsys):
    md, png = tmp_path / "table.md", tmp_path / "chart.png"
    assert main(["bench", "--only", "forward", "--quick", "--markdown", str(md), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "forward" in out and "train_step" not in out
    assert md.read_text().startswith("Medians, float32, 1 thread(s); one-core peak ")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_peer_is_left_out_when_not_installed(monkeypatch, peer):
    import sys
    monkeypatch.setitem(sys.modules, peer, None)  # import torch / jax -> ImportError
    assert getattr(bench, f"{peer}_call")("train_step", "tiny", None) is None
    assert peer not in bench.callables("forward", "tiny", 1)


@pytest.mark.skipif(not (sys.platform == "linux" and platform.libc_ver()[0] == "glibc"), reason="glibc's mallopt")
def test_bench_serves_temporaries_from_the_heap_without_page_faults():
    """After ``steady_malloc``, 1.3 MB temporaries made and dropped over and over come back from
    malloc's heap: the process takes (almost) no page faults for them, whatever ran before."""
    bench.steady_malloc()
    np.ones(1 << 19)  # 4 MB: the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        a = np.ones((10_000, 32), np.float32)
        b = a * 2
        del a, b
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 50, f"{faults} page faults for 50 rounds of 1.3 MB temporaries"  # 640+ if each were mapped afresh
