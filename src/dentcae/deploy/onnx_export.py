"""A deploy net and its weights as an ONNX model, written layer by layer from the Caffe files.

    model = to_onnx("runs/x/deploy.prototxt", "runs/x/final.caffemodel")    # onnx.ModelProto
    onnx.save(model, "bundle/first.onnx")

Written here rather than with a converter from the package registry: caffe2onnx 2.0.1 (the one
on PyPI) pins onnx==1.6.0, which does not install on Python 3.11, imports only with the pure-Python
protobuf, and fixes the batch at 1 (measured on our heatmap net: it converts, within 6e-8 of Caffe).
dentcae's nets use ten Caffe layer types, each one ONNX operator with the same arithmetic:
Convolution (grouped) -> Conv, Deconvolution -> ConvTranspose, InnerProduct -> Flatten + Gemm,
Pooling -> MaxPool/AveragePool with ceil_mode (Caffe rounds pooled sides up), LRN -> LRN (Caffe's
alpha is divided by local_size as ONNX's is), ReLU, Eltwise (sum/product/max), Dropout and Softmax.
The batch is dynamic; the input is `data` (N, 3, S, S), the output the net's output blob by name.
Only the Caffe protobuf definitions are read (no net is built).
"""
from pathlib import Path

import numpy as np

from ..runtime.backend import caffe_pb2

OPSET = 17


class ExportError(ValueError):
    pass


def _read_net(deploy, weights):
    """(NetParameter of the deploy prototxt, {layer: [arrays]} of the weights file)."""
    from google.protobuf import text_format
    pb2 = caffe_pb2()
    net = pb2.NetParameter()
    text_format.Parse(Path(deploy).read_text(), net)
    trained = pb2.NetParameter()
    trained.ParseFromString(Path(weights).read_bytes())
    blobs = {}
    for layer in list(trained.layer) + list(trained.layers):
        if layer.blobs:
            blobs[layer.name] = [np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim) or (b.num, b.channels,
                                 b.height, b.width)) for b in layer.blobs]
    return net, blobs


def _hw(p, name, repeated, default, split=None):
    """(h, w) of a Caffe parameter given as `name` (repeated or single) or as <split>_h and <split>_w."""
    split = split or name
    if p.HasField(f"{split}_h") or p.HasField(f"{split}_w"):
        return [int(getattr(p, f"{split}_h")), int(getattr(p, f"{split}_w"))]
    values = list(getattr(p, name)) if repeated else ([getattr(p, name)] if p.HasField(name) else [])
    return [int(values[0])] * 2 if len(values) == 1 else ([int(v) for v in values] or [default] * 2)


def _conv_attrs(p):
    pad = _hw(p, "pad", True, 0)
    return {"kernel_shape": _hw(p, "kernel_size", True, 1, "kernel"),
            "strides": _hw(p, "stride", True, 1), "pads": pad + pad, "dilations": [int(p.dilation[0])] * 2 if p.dilation else [1, 1],
            "group": int(p.group or 1)}


class _Graph:
    """ONNX nodes and initializers in the making; Caffe blob names -> current ONNX tensor names."""

    def __init__(self, helper):
        self.helper, self.nodes, self.inits, self.tensor = helper, [], [], {}

    def weight(self, name, array):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def add(self, op, layer, inputs, top, **attrs):
        out = f"{layer.name}:{len(self.nodes)}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=f"{layer.name}:{op}", **attrs))
        self.tensor[top] = out
        return out


def _convolution(g, layer, x, w, deconv=False):
    attrs = _conv_attrs(layer.convolution_param)
    inputs = [x, g.weight(f"{layer.name}_W", w[0])]
    if layer.convolution_param.bias_term and len(w) > 1:
        inputs.append(g.weight(f"{layer.name}_b", w[1]))
    g.add("ConvTranspose" if deconv else "Conv", layer, inputs, layer.top[0], **attrs)


def _inner_product(g, layer, x, w):
    flat = g.add("Flatten", layer, [x], layer.top[0] + ":flat", axis=int(layer.inner_product_param.axis or 1))
    inputs = [flat, g.weight(f"{layer.name}_W", w[0].reshape(w[0].shape[-2:]) if w[0].ndim > 2 else w[0])]
    if layer.inner_product_param.bias_term and len(w) > 1:
        inputs.append(g.weight(f"{layer.name}_b", w[1].reshape(-1)))
    g.add("Gemm", layer, inputs, layer.top[0], transB=1)


def _pooling(g, layer, x, pb2):
    p = layer.pooling_param
    if p.global_pooling:
        op = "GlobalMaxPool" if p.pool == pb2.PoolingParameter.MAX else "GlobalAveragePool"
        return g.add(op, layer, [x], layer.top[0])
    k = _hw(p, "kernel_size", False, 1, "kernel")
    s, pad = _hw(p, "stride", False, 1), _hw(p, "pad", False, 0)
    if any(pad) and p.pool != pb2.PoolingParameter.MAX:
        raise ExportError(f"layer '{layer.name}': padded average pooling divides differently in Caffe and ONNX")
    op = {pb2.PoolingParameter.MAX: "MaxPool", pb2.PoolingParameter.AVE: "AveragePool"}.get(p.pool)
    if op is None:
        raise ExportError(f"layer '{layer.name}': stochastic pooling has no ONNX operator")
    g.add(op, layer, [x], layer.top[0], kernel_shape=k, strides=s, pads=pad + pad, ceil_mode=1)


def _eltwise(g, layer, xs, pb2):
    p = layer.eltwise_param
    if p.coeff and any(c != 1 for c in p.coeff):
        raise ExportError(f"layer '{layer.name}': Eltwise coefficients are not exported")
    op = {pb2.EltwiseParameter.SUM: "Sum", pb2.EltwiseParameter.PROD: "Mul", pb2.EltwiseParameter.MAX: "Max"}[p.operation]
    g.add(op, layer, xs, layer.top[0])


def _layer(g, layer, blobs, pb2):
    """Add one Caffe layer's ONNX node(s)."""
    xs = [g.tensor[b] for b in layer.bottom]
    w = blobs.get(layer.name, [])
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        _convolution(g, layer, xs[0], w, deconv=t == "Deconvolution")
    elif t == "InnerProduct":
        _inner_product(g, layer, xs[0], w)
    elif t == "Pooling":
        _pooling(g, layer, xs[0], pb2)
    elif t == "LRN":
        p = layer.lrn_param
        if p.norm_region != pb2.LRNParameter.ACROSS_CHANNELS:
            raise ExportError(f"layer '{layer.name}': LRN within a channel has no ONNX operator")
        g.add("LRN", layer, xs, layer.top[0], size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta),
              bias=float(p.k))
    elif t == "ReLU":
        if layer.relu_param.negative_slope:
            g.add("LeakyRelu", layer, xs, layer.top[0], alpha=float(layer.relu_param.negative_slope))
        else:
            g.add("Relu", layer, xs, layer.top[0])
    elif t == "Eltwise":
        _eltwise(g, layer, xs, pb2)
    elif t == "Dropout":
        g.tensor[layer.top[0]] = xs[0]                  # a deploy net's Dropout passes its input on
    elif t == "Softmax":
        g.add("Softmax", layer, xs, layer.top[0], axis=int(layer.softmax_param.axis or 1))
    else:
        raise ExportError(f"layer '{layer.name}' has type '{t}', which dentcae does not export to ONNX")


def _outputs(net):
    """The net's output blobs as Caffe names them: made by a layer and read by no later one."""
    made, read = [], set()
    for layer in net.layer:
        read.update(b for b in layer.bottom if b not in layer.top)
        made += [t for t in layer.top if t not in made]
    return [t for t in made if t not in read and t != "data"]


def _output_dims(g, name):
    """Symbolic dims of an output: (N, values) after a Gemm, else (N, C, H, W)."""
    made_by = next(node.op_type for node in g.nodes if g.tensor[name] in node.output)
    return ["N", f"{name}_C"] + ([] if made_by in ("Gemm", "Flatten") else [f"{name}_H", f"{name}_W"])


def to_onnx(deploy, weights):
    """The ONNX model (opset 17) of a deploy prototxt with Input `data` and its caffemodel."""
    import onnx
    from onnx import TensorProto, helper
    pb2 = caffe_pb2()
    net, blobs = _read_net(deploy, weights)
    g = _Graph(helper)
    first = net.layer[0]
    if first.type != "Input" or list(first.top) != ["data"]:
        raise ExportError(f"{deploy}: the first layer must be Input `data` (a deploy net)")
    side = list(first.input_param.shape[0].dim)[1:]
    g.tensor["data"] = "data"
    for layer in net.layer[1:]:
        _layer(g, layer, blobs, pb2)
    outs = _outputs(net)
    for name in outs:
        g.nodes.append(helper.make_node("Identity", [g.tensor[name]], [name], name=f"{name}:output"))
    graph = helper.make_graph(g.nodes, Path(deploy).parent.name or "net",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N"] + side)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, _output_dims(g, n)) for n in outs],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dentcae")
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model
