"""The layout's contracts: the import graph, the oracle without Numba, the installed package, short
argument lists, and an optimizer added from outside the library."""

import ast
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from typing import NamedTuple

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _codes, optim
from conftest import assert_tree_close

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_files():
    """{module name: source path} for the library as installed (kernels/ is fastnn._kernels)."""
    files = {}
    for path in (ROOT / "fastnn").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "kernels").glob("*.py"):
        name = "fastnn._kernels" + ("" if path.stem == "__init__" else "." + path.stem)
        files[name] = path
    return files


FILES = _module_files()


def _package(name):
    return name if FILES[name].name == "__init__.py" else name.rpartition(".")[0]


def _imports(name):
    """The modules that ``name`` imports anywhere in its source (module level or inside functions):
    modules of this library, and numba / llvmlite."""
    found = set()
    for node in ast.walk(ast.parse(FILES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(name).split(".")
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target in FILES:
                found.add(target)
            elif target.split(".")[0] in ("numba", "llvmlite"):
                found.add(target.split(".")[0])
    return found


def _reached(start, parents=True):
    """Every module reached from ``start`` through imports, transitively (plus numba / llvmlite
    when some reached module imports them); with ``parents``, also the packages that importing a
    module runs first."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in FILES:
            todo.extend(_imports(name))
            if parents and "." in name:
                todo.append(name.rpartition(".")[0])  # importing a.b runs a first
    return seen - {start}


def test_the_import_graph_finds_what_it_should():
    """The graph sees relative, absolute and nested imports: the compiled path reaches the kernels."""
    assert "fastnn._kernels.network" in _reached("fastnn.training")
    assert "numba" in _reached("fastnn.network")
    assert "fastnn.optim" in _reached("fastnn.reference")


def test_kernels_never_reach_fastnn():
    """The kernels' sources import only each other (installed, importing one runs the fastnn
    package first; from the repository folder, kernels/ imports as a package of its own)."""
    for name in FILES:
        if name.startswith("fastnn._kernels"):
            outside = {m for m in _reached(name, parents=False) if m in FILES and not m.startswith("fastnn._kernels")}
            assert not outside, (name, outside)


def test_the_reference_never_reaches_kernels_or_numba():
    reached = _reached("fastnn.reference")
    assert not {m for m in reached if m.startswith("fastnn._kernels") or m in ("numba", "llvmlite")}, reached


def test_the_library_never_imports_its_scikit_learn_estimators_or_scikit_learn():
    """fastnn.sklearn is an optional extra: no other module of the library imports it, nor sklearn
    (the command line and fastnn.dask aside, which build on it)."""
    for name in FILES:
        if name not in ("fastnn.sklearn", "fastnn.dask") and not name.startswith("fastnn.cli"):
            assert "fastnn.sklearn" not in _imports(name), name
            source = FILES[name].read_text()
            assert "import sklearn" not in source and "from sklearn" not in source, name


def test_only_fastnn_dask_imports_dask_and_only_when_called():
    for name in FILES:
        source = FILES[name].read_text()
        if name == "fastnn.dask":
            assert "\nimport dask" not in source and "\nfrom dask" not in source and "\nimport distributed" not in source
        else:
            assert not any(f"{how} {pkg}" in source for how in ("import", "from") for pkg in ("dask", "distributed")), name
    assert "fastnn.dask" not in _imports("fastnn")


def test_only_export_onnx_imports_onnx_and_only_when_called():
    for name in FILES:
        source = FILES[name].read_text()
        if name == "fastnn.export":
            assert "\nimport onnx" not in source and "\nfrom onnx" not in source  # inside export_onnx only
        else:
            assert "import onnx" not in source and "from onnx" not in source, name


def test_the_command_line_is_not_imported_by_the_library():
    for name in FILES:
        if not name.startswith("fastnn.cli") and name != "fastnn.__main__":
            assert not {m for m in _imports(name) if m.startswith("fastnn.cli")}, name


def test_the_reference_trains_where_numba_cannot_be_imported():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None  # import numba -> ImportError\n"
        "sys.modules['llvmlite'] = None\n"
        "import numpy as np\n"
        "import fastnn as fnn\n"
        "import fastnn.reference as ref\n"
        "net = fnn.mlp([3, 8, 2], activation='tanh')\n"
        "params = fnn.init(net, seed=0)\n"
        "x = np.random.default_rng(0).normal(size=(40, 3)); y = (x[:, 0] > 0).astype(int)\n"
        "params, history = ref.fit(net, params, x, y, loss='softmax_cross_entropy', optimizer=fnn.adam(1e-2),\n"
        "                          epochs=30, batch_size=8, validation_split=0.25, metrics=['accuracy'],\n"
        "                          early_stopping=50, progress=False)\n"
        "assert history['loss'][-1] < history['loss'][0] * 0.8, history['loss']\n"
        "assert not [m for m in sys.modules if m.startswith('fastnn._kernels')]\n"
        "try:\n"
        "    fnn.forward\n"
        "except ImportError:\n"
        "    print('compiled path needs numba')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled path needs numba"


def test_the_built_wheel_has_no_top_level_kernels_module(tmp_path):
    """The kernels install as fastnn._kernels: no top-level module named kernels in the wheel."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("fastnn", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True,
                   env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    (wheel,) = (tmp_path / "dist").glob("fastnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"fastnn"}, tops
    kernel_sources = {p.name for p in (ROOT / "kernels").glob("*.py")}
    assert {n.split("/")[-1] for n in names if n.startswith("fastnn/_kernels/")} == kernel_sources
    assert "fastnn/cli/__init__.py" in names


MAX_PARAMETERS = 8


def _counted(fn):
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return [n for n in names if n not in ("self", "cls", "typingctx")]


def test_no_kernel_or_private_helper_takes_more_than_eight_parameters():
    """Kernels and private helpers group their inputs into records; public functions keep their
    keyword parameters with defaults (fit's contract)."""
    long = []
    for name, path in FILES.items():
        private_module = name.rpartition(".")[2].startswith("_") or name.startswith("fastnn._kernels")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                private = private_module or (node.name.startswith("_") and not node.name.startswith("__"))
                if private and len(_counted(node)) > MAX_PARAMETERS:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(_counted(node))})")
    assert not long, long


@pytest.mark.parametrize("name", ["forward", "grad", "backward", "step", "train_step", "fit", "fit_lbfgs"])
def test_the_reference_has_the_same_signatures(name):
    assert inspect.signature(getattr(fnn, name)) == inspect.signature(getattr(ref, name))


# An optimizer defined entirely in this test: heavy-ball momentum, b <- beta b + g (b = g at the
# first update), p <- p - lr b. It reuses the SGD kernel rule (torch's SGD with dampening 0).

class HeavyBallState(NamedTuple):
    count: int
    velocity: tuple  # like params


def heavy_ball(lr, beta=0.9):
    return optim.Optimizer("heavy_ball", lr, (("beta", beta),))


def _heavy_ball_hyperparameters(opt, lr, t):
    return {"lr": lr, "weight_decay": 0.0, "clip_norm": 0.0, "momentum": opt.beta, "dampening": 0.0,
            "nesterov": 0.0, "first_step": (t == 1) * 1.0}


def _heavy_ball_reference(p, g, m, h):
    velocity = g if h["t"] == 1 else h["beta"] * m["velocity"] + g
    return p - h["lr"] * velocity, {"velocity": velocity}


@pytest.fixture
def with_heavy_ball(monkeypatch):
    """The toy optimizer's record in fastnn.optim and its rule in the reference; nothing else."""
    monkeypatch.setitem(optim.RULES, "heavy_ball", optim.Rule(
        HeavyBallState, lambda opt: (True,), _heavy_ball_hyperparameters, "sgd"))
    monkeypatch.setitem(ref.RULES, "heavy_ball", _heavy_ball_reference)


@pytest.mark.usefixtures("with_heavy_ball")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_optimizer_added_outside_the_library_runs_everywhere(dtype):
    net = fnn.mlp([3, 5, 2], activation="tanh")
    params = fnn.init(net, seed=1, dtype=dtype)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    opt = heavy_ball(0.05, beta=0.8)
    state = fnn.init_state(opt, params)
    assert isinstance(state, HeavyBallState) and state.count == 0
    _, grads = fnn.grad(net, params, x, y)
    for impl in (fnn, ref):
        assert impl.step(opt, params, grads, state)[1].count == 1
    fast, slow = fnn.step(opt, params, grads, state), ref.step(opt, params, grads, state)
    assert_tree_close(fast[0], slow[0], dtype)
    assert_tree_close(fast[1].velocity, slow[1].velocity, dtype)
    # Two fused steps: the second reads the velocity the first wrote.
    p1, s1, _ = fnn.train_step(net, opt, params, state, x, y)
    p2, s2, _ = fnn.train_step(net, opt, p1, s1, x, y)
    r1, t1, _ = ref.train_step(net, opt, params, state, x, y)
    r2, t2, _ = ref.train_step(net, opt, r1, t1, x, y)
    assert_tree_close(p2, r2, dtype)
    assert_tree_close(s2.velocity, t2.velocity, dtype)
    kw = dict(optimizer=opt, epochs=3, batch_size=5, progress=False)
    (fit_fast, h_fast), (fit_slow, h_slow) = fnn.fit(net, params, x, y, **kw), ref.fit(net, params, x, y, **kw)
    assert_tree_close(fit_fast, fit_slow, dtype)
    assert h_fast.state.count == h_slow.state.count == 9
    assert _codes.kernel_code(opt) == _codes.KERNEL_RULES["sgd"]
