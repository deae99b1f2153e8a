"""export_onnx: the graph onnxruntime runs gives fastnn.forward's outputs, for every activation in
both dtypes, and an estimator's or a TabularModel's export includes its preparation."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor

# float32: the same operators, summed in another order; float64: decomposed activations, gelu's
# erf in float32
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", fnn.ACTIVATIONS)
def test_every_activation_runs_in_onnxruntime_as_forward_computes_it(tmp_path, activation, dtype):
    net = fnn.mlp([6, 9, 9, 4], activation=activation, output=activation)
    params = fnn.init(net, seed=1, dtype=dtype)
    x = (np.random.default_rng(0).normal(size=(33, 6)) * 3).astype(dtype)  # both signs, large |z| too
    path = fnn.export_onnx(tmp_path / "net.onnx", net, params)
    got = _run(path, x)
    assert got.dtype == dtype and got.shape == (33, 4)
    tol = dict(rtol=2e-7, atol=2e-7) if (activation == "gelu" and dtype == np.float64) else TOL[dtype]
    np.testing.assert_allclose(got, fnn.forward(net, params, x), **tol)
    model = onnx.load(path)
    assert {p.key: p.value for p in model.metadata_props}["activations"] == ",".join(net.activations)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["y"]


def test_an_estimators_export_standardises_its_inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 10, 100, 1000, 0.01] + 50
    labels = (x[:, 0] - 50 + (x[:, 1] - 50) / 10 > 0).astype(int)
    classifier = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(x, labels)
    logits = _run(fnn.export_onnx(tmp_path / "c.onnx", classifier), x.astype(np.float32))
    np.testing.assert_allclose(fnn.softmax(logits), classifier.predict_proba(x), rtol=1e-4, atol=1e-5)
    props = {p.key: p.value for p in onnx.load(tmp_path / "c.onnx").metadata_props}
    assert props["classes"] == "0,1"
    regressor = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype="float64").fit(x, x[:, 0])
    out = _run(fnn.export_onnx(tmp_path / "r.onnx", regressor), x)
    np.testing.assert_allclose(out[:, 0], regressor.predict(x), rtol=1e-10, atol=1e-10)


def test_a_tabular_models_export_predicts_in_the_targets_units(tmp_path):
    net = fnn.mlp([3, 4, 1], activation="tanh")
    meta = {"task": "regression", "target": "demand", "features": ["a", "b", "c"], "x_mean": [1.0, 2.0, 3.0],
            "x_scale": [2.0, 4.0, 8.0], "y_mean": [100.0], "y_scale": [15.0]}
    model = fnn.TabularModel(net, fnn.init(net, seed=0), meta)
    x = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32) * 5
    out = _run(fnn.export_onnx(tmp_path / "t.onnx", model), x)
    np.testing.assert_allclose(out[:, 0], model.predict(x), rtol=1e-5)


def test_bad_arguments_are_refused(tmp_path):
    net = fnn.mlp([3, 2])
    with pytest.raises(TypeError, match="params are needed with a Net"):
        fnn.export_onnx(tmp_path / "a.onnx", net)
    with pytest.raises(TypeError, match="takes a fastnn Net and params"):
        fnn.export_onnx(tmp_path / "a.onnx", "net")
    with pytest.raises(ValueError, match="params"):
        fnn.export_onnx(tmp_path / "a.onnx", net, fnn.init(fnn.mlp([4, 2]), seed=0))
    with pytest.raises(OSError, match="could not write"):
        fnn.export_onnx(tmp_path / "no" / "dir" / "a.onnx", net, fnn.init(net, seed=0))
