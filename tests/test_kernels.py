"""Kernel-level contracts: float32 stays float32, options come from _config, the cache falls back.

The import boundaries are checked in test_layout.py."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn._codes import ACTIVATION_CODES
from fastnn._kernels import _config
from fastnn._kernels import activations as kact
from fastnn._kernels import network as knet
from fastnn._kernels import optim as kopt

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _float32_ir(dispatcher):
    """LLVM IR of the kernel's float32 specialisation, compiled afresh (cached code has no IR)."""
    sigs = [s for s in dispatcher.signatures if "float32" in str(s)]
    assert sigs, f"{dispatcher.__name__} has no float32 specialisation yet"
    fresh = numba.njit(**_config.OPTIONS)(dispatcher.py_func)
    fresh.compile(sigs[0])
    ir = fresh.inspect_llvm(sigs[0])
    assert re.search(r"\bfloat\b", ir), "no float32 in the IR: not the real IR"
    return ir


def test_float32_kernels_never_widen_to_float64():
    """No fpext (float -> double) in the float32 forward, backward and optimizer kernels.

    The loss kernel is exempt on purpose: it accumulates the returned loss value in float64.
    """
    net = fnn.Net(sizes=(3, 4, 2), activations=("gelu", "silu"))
    params = fnn.init(net, seed=0, dtype=np.float32)
    x = np.ones((8, 3), np.float32)  # more than forward's ROWS_WITHOUT_BLAS: forward_into compiles
    fnn.forward(net, params, x)
    fnn.backward(net, params, x, np.ones((8, 2)))
    opts = [fnn.sgd(0.1, momentum=0.9), fnn.rmsprop(centered=True, momentum=0.5), fnn.adagrad(), fnn.adamw()]
    for opt in opts:
        fnn.step(opt, params, params, fnn.init_state(opt, params))
    for kernel in (knet.forward_into, knet.vjp_into, kopt.update_into):
        ir = _float32_ir(kernel)
        assert "fpext float" not in ir, f"{kernel.__name__} widens float32 to float64"
    # The activations' forms, each compiled on its own (kernels/activations.py, ensure_forms)
    f32 = numba.types.float32
    for name, code in ACTIVATION_CODES.items():
        for direction, form in enumerate(kact.FORMS.forms):
            signature = kact.FORMS.signature(direction, f32, code)
            fresh = numba.njit(**_config.OPTIONS)(form.py_func)
            fresh.compile(signature)
            ir = fresh.inspect_llvm(signature)
            assert re.search(r"\bfloat\b", ir), "no float32 in the IR: not the real IR"
            assert "fpext float" not in ir, f"{name}'s {('forward', 'derivative')[direction]} widens to float64"


def test_kernels_take_decorator_options_from_config():
    for path in (ROOT / "kernels").glob("*.py"):
        if path.name != "_config.py":
            text = path.read_text()
            assert "numba.njit" not in text and "@njit" not in text, path.name


# Compiles (or loads) one kernel of a copied kernels folder imported as ``kernels``, and checks it.
_RUN_A_LOSS_KERNEL = (
    "import numpy as np\n"
    "out = np.array([[1.0, 2.0]]); d = np.empty_like(out)\n"
    "losses.ensure_forms([losses.MSE], np.float64)\n"
    "v = losses.loss_and_grad(losses.MSE, out, np.zeros((1, 2)), np.empty(0, np.int64), np.empty(0), d, 1.0)\n"
    "assert abs(v - 2.5) < 1e-12, v\n"
)


def test_unwritable_cache_falls_back_to_in_memory_compilation(tmp_path):
    """With no writable cache location, import and use still work, with a warning."""
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "kernels" / "__pycache__").write_text("a file where numba wants a folder")
    env = dict(os.environ, NUMBA_CACHE_DIR="/dev/null/cache", HOME="/dev/null",
               XDG_CACHE_HOME="/dev/null/cache", PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from kernels import losses\n"
        + _RUN_A_LOSS_KERNEL +
        "assert any('cache unavailable' in str(w.message) for w in caught), [str(w.message) for w in caught]\n"
        "import kernels; print(kernels.__file__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(tmp_path) in result.stdout


def _cached_files(root):
    """Numba's cache index files below root, as paths relative to it."""
    return sorted(str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*.nbi"))


@pytest.mark.parametrize("writable", ["NUMBA_CACHE_DIR", "kernels/__pycache__", "home"])
def test_every_cache_location_is_keyed_by_the_digest(tmp_path, writable):
    """Whichever folder takes the cache (NUMBA_CACHE_DIR; failing that the kernels' own
    __pycache__; failing that the user's cache folder), the kernels are cached in the folder named
    after the digest of their sources, never where an edited kernel could find a stale entry."""
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1",
               NUMBA_CACHE_DIR=str(tmp_path / "cache") if writable == "NUMBA_CACHE_DIR" else "/dev/null/cache",
               XDG_CACHE_HOME=str(tmp_path / "home") if writable == "home" else "/dev/null/cache")
    if writable == "home":
        (tmp_path / "kernels" / "__pycache__").write_text("a file where numba wants a folder")
    code = "from kernels import losses, _config\n" + _RUN_A_LOSS_KERNEL + "print(_config._FOLDER)\n"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = result.stdout.split()[-1]
    root = {"NUMBA_CACHE_DIR": tmp_path / "cache", "kernels/__pycache__": tmp_path / "kernels" / "__pycache__",
            "home": tmp_path / "home" / "fastnn"}[writable]
    files = _cached_files(tmp_path)
    assert files and all(f.startswith(str((root / folder).relative_to(tmp_path)) + os.sep) for f in files), files


def test_editing_any_kernel_source_moves_the_cache(tmp_path):
    """Cached callers embed their callees' code, so the cache folder must follow every kernel file."""
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    code = "from kernels import _config; print(_config.__file__); print(_config.CACHE_DIRS[0])"

    def cache_dir():
        # cwd first on sys.path: the copy shadows an editable install of the real package.
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, cwd=tmp_path)
        source, folder = result.stdout.split()
        assert source.startswith(str(tmp_path))
        return folder

    before = cache_dir()
    assert before.startswith(str(tmp_path / "cache"))
    with open(tmp_path / "kernels" / "activations.py", "a") as f:
        f.write("\n# an edit\n")
    assert cache_dir() != before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_derivative_from_the_activation_alone_is_the_one_from_z(dtype):
    """Where ``needs_z`` is false the training forward keeps only a = f(z), and backward passes a
    for z: f'(z) must come out bit for bit the same, over signed zeros, subnormals, infinities
    and NaN. Where it is true, a alone gives other values somewhere (so z is kept)."""
    tiny = np.finfo(dtype).smallest_subnormal
    z = np.array([[0.0, -0.0, tiny, -tiny, 1e-3, -1e-3, 0.5, -0.5, 3.0, -3.0, 20.0, -20.0, 1e30, -1e30,
                   np.inf, -np.inf, np.nan]], dtype)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    kact.ensure_forms(ACTIVATION_CODES.values(), dtype)
    for name, code in ACTIVATION_CODES.items():
        a = z.copy()
        kact.bias_activate_inplace(code, a, np.zeros(z.shape[1], dtype))
        from_z, from_a = np.ones_like(z), np.ones_like(z)
        kact.chain_derivative_inplace(code, z.copy(), a.copy(), from_z)
        kact.chain_derivative_inplace(code, a.copy(), a.copy(), from_a)
        same = (from_z.view(bits) == from_a.view(bits)) | (np.isnan(from_z) & np.isnan(from_a))
        if kact.needs_z(code):
            assert not same.all(), f"{name}: f' from a alone matches; needs_z could be false"
        else:
            assert same.all(), f"{name}: f' from a differs at z = {z[~same]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, k", [(1, 1), (3, 2), (17, 10), (32, 3)])
def test_transposed_softmax_labels_loss_matches_the_row_kernel(dtype, rows, k):
    """losses.softmax_ce_labels_t on a transposed, padded block gives loss_and_grad's value and
    gradient (to rounding), zero in the padded columns; the batch's row count sets the mean."""
    from fastnn._kernels import losses as kloss

    rng = np.random.default_rng(rows * 10 + k)
    rp = rows + 5
    z_t = rng.normal(size=(k, rp)).astype(dtype) * 4
    labels = rng.integers(0, k, rows)
    d_t = np.full((k, rp), 7.0, dtype)
    batch = 2 * rows  # the block is half of its batch
    kloss.ensure_forms([kloss.SOFTMAX_CE_LABELS], dtype, fused=True)  # the transposed form
    kloss.ensure_forms([kloss.SOFTMAX_CE_LABELS], dtype)  # the row form
    no_weights = np.empty(0, dtype)
    value = kloss.softmax_ce_labels_t(z_t, labels, no_weights, d_t, float(batch))
    d_rows = np.empty((rows, k), dtype)
    expected = kloss.loss_and_grad(kloss.SOFTMAX_CE_LABELS, np.ascontiguousarray(z_t[:, :rows].T),
                                   np.empty((0, k), dtype), labels, no_weights, d_rows, float(batch))
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(d_t[:, :rows], d_rows.T, **tol)
    assert (d_t[:, rows:] == 0).all()
    z_t[0, 0] = np.nan  # a NaN logit makes the loss and its row's gradient NaN
    assert np.isnan(kloss.softmax_ce_labels_t(z_t, labels, no_weights, d_t, float(batch)))
    assert np.isnan(d_t[:, 0]).all()
