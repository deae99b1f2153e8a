"""``export_onnx``: a network (or a fitted estimator, or a ``TabularModel``) as a standard ONNX graph,
to run where fastnn is not installed (onnxruntime, other languages, other devices).

The graph takes ``x`` (rows, n_in) in the params' dtype and returns ``y`` (rows, n_out), the
network's raw outputs, as ``fastnn.forward`` computes them: one Gemm per layer (x W + b) and its
activation. Models that standardise their inputs (the scikit-learn estimators, a ``TabularModel``)
get (x - mean) / scale first; a ``TabularModel`` of a regression also maps ``y`` back to the
target's units, and one of a classification names its classes in the model's metadata.

Activations are ONNX operators where onnxruntime has them for the dtype (float32: Relu,
LeakyRelu, Elu, Sigmoid, Tanh, Softplus, Erf); in float64, where it lacks LeakyRelu, Elu, Softplus
and Erf, they are written from Max, Where, Exp, Log and Abs, except gelu's Erf, which is computed
in float32 (relative error ~1e-7). Needs the ``onnx`` package (``pip install -e ".[onnx]"``); the
core never imports this module.
"""

import math
import os

import numpy as np

from . import _checks
from .net import Net

__all__ = ["export_onnx"]

OPSET = 17
_IR_VERSION = 8  # the IR of opset 17, which onnxruntime releases from 1.12 read


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('export_onnx needs the onnx package: pip install -e ".[onnx]"') from None
    return onnx


class _Graph:
    """Nodes and constants of one graph, with fresh names."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.elem = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.nodes, self.constants = [], []

    def name(self, hint):
        return f"{hint}_{len(self.nodes) + len(self.constants)}"

    def constant(self, value, hint="c"):
        name = self.name(hint)
        self.constants.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def op(self, op_type, inputs, hint=None, **attributes):
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attributes))
        return out


def _activation(graph, name, h):
    """The nodes of activation ``name`` on tensor ``h``; returns the output's name. Constants as
    fastnn's kernels (kernels/activations.py) and PyTorch use them."""
    double = graph.dtype == np.float64
    if name == "identity":
        return h
    if name == "relu":
        return graph.op("Relu", [h])
    if name == "sigmoid":
        return graph.op("Sigmoid", [h])
    if name == "tanh":
        return graph.op("Tanh", [h])
    if name == "silu":
        return graph.op("Mul", [h, graph.op("Sigmoid", [h])])
    if name == "leaky_relu":
        if not double:
            return graph.op("LeakyRelu", [h], alpha=0.01)
        return graph.op("Max", [h, graph.op("Mul", [h, graph.constant(0.01)])])
    if name == "elu":
        if not double:
            return graph.op("Elu", [h], alpha=1.0)
        zero, one = graph.constant(0.0), graph.constant(1.0)
        negative = graph.op("Sub", [graph.op("Exp", [graph.op("Min", [h, zero])]), one])
        return graph.op("Where", [graph.op("Greater", [h, zero]), h, negative])
    if name == "softplus":
        if not double:
            return graph.op("Softplus", [h])
        # max(z, 0) + log(1 + exp(-|z|)): no overflow for any z
        zero, one = graph.constant(0.0), graph.constant(1.0)
        tail = graph.op("Log", [graph.op("Add", [one, graph.op("Exp", [graph.op("Neg", [graph.op("Abs", [h])])])])])
        return graph.op("Add", [graph.op("Max", [h, zero]), tail])
    if name == "gelu":  # exact form: z (1 + erf(z / sqrt 2)) / 2
        scaled = graph.op("Mul", [h, graph.constant(1.0 / math.sqrt(2.0))])
        if double:  # onnxruntime has no float64 Erf
            f32 = graph.onnx.TensorProto.FLOAT
            erf = graph.op("Cast", [graph.op("Erf", [graph.op("Cast", [scaled], to=f32)])], to=graph.elem)
        else:
            erf = graph.op("Erf", [scaled])
        half = graph.op("Mul", [h, graph.constant(0.5)])
        return graph.op("Mul", [half, graph.op("Add", [erf, graph.constant(1.0)])])
    raise ValueError(f"no ONNX form for activation {name!r}")


def _parts(model, params):
    """(net, params, input (mean, scale) or None, output (mean, scale) or None, metadata) of what
    export_onnx was given."""
    if isinstance(model, Net):
        if params is None:
            raise TypeError("export_onnx(path, net, params): params are needed with a Net")
        return model, params, None, None, {}
    if params is not None:
        raise TypeError(f"export_onnx takes params only with a Net; got {type(model).__name__} and params")
    if hasattr(model, "net_") and hasattr(model, "input_mean_"):  # a fitted fastnn.sklearn estimator
        meta = {"classes": ",".join(map(str, model.classes_))} if hasattr(model, "classes_") else {}
        return model.net_, model.params_, (model.input_mean_, model.input_scale_), None, meta
    if hasattr(model, "x_mean") and hasattr(model, "features"):  # a TabularModel
        meta = {"features": ",".join(model.features), "target": model.target}
        output = None
        if model.classes is not None:
            meta["classes"] = ",".join(model.classes)
        else:
            output = (model.y_mean, model.y_scale)
        if model.x_fill is not None:
            meta["note"] = "missing cells must be filled with x_fill before the graph: it takes no NaN"
        return model.net, model.params, (model.x_mean, model.x_scale), output, meta
    raise TypeError(f"export_onnx takes a fastnn Net and params, a fitted fastnn.sklearn estimator or a "
                    f"fastnn.TabularModel; got {type(model).__name__}")


def export_onnx(path, model, params=None):
    """Write ``model`` as an ONNX file at ``path``: a ``Net`` with its ``params``
    (``export_onnx(path, net, params)``), a fitted ``fastnn.sklearn`` estimator (its input
    standardisation included) or a ``fastnn.TabularModel`` (standardisation in and, for a
    regression, the target's units out). Returns the path. The graph: input ``x`` (rows, n_in),
    output ``y`` (rows, n_out), in the params' dtype; ``y`` is what ``fastnn.forward`` returns
    (logits for a classifier: apply softmax for probabilities)."""
    onnx = _onnx()
    net, params, inputs, outputs, meta = _parts(model, params)
    params, dtype = _checks.check_params(net, params)
    graph = _Graph(onnx, dtype)
    h = "x"
    if inputs is not None:
        mean, scale = (np.asarray(v, dtype=np.float64) for v in inputs)
        h = graph.op("Div", [graph.op("Sub", [h, graph.constant(mean, "mean")]), graph.constant(scale, "scale")])
    for l, ((W, b), activation) in enumerate(zip(params, net.activations)):
        h = graph.op("Gemm", [h, graph.constant(W, f"W{l}"), graph.constant(b, f"b{l}")], hint=f"dense{l}")
        h = _activation(graph, activation, h)
    if outputs is not None:
        h = graph.op("Add", [graph.op("Mul", [h, graph.constant(outputs[1], "y_scale")]),
                             graph.constant(outputs[0], "y_mean")])
    graph.nodes.append(onnx.helper.make_node("Identity", [h], ["y"]))
    n_in, n_out = net.sizes[0], net.sizes[-1]
    proto = onnx.helper.make_graph(
        graph.nodes, "fastnn", [onnx.helper.make_tensor_value_info("x", graph.elem, ["rows", n_in])],
        [onnx.helper.make_tensor_value_info("y", graph.elem, ["rows", n_out])], initializer=graph.constants)
    model_proto = onnx.helper.make_model(proto, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                         producer_name="fastnn", ir_version=_IR_VERSION)
    onnx.helper.set_model_props(model_proto, {"activations": ",".join(net.activations), **meta})
    onnx.checker.check_model(model_proto)
    path = os.fspath(path)
    try:
        onnx.save(model_proto, path)
    except OSError as exc:
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from None
    return path
