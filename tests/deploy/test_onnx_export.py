"""deploy/onnx_export.py: Caffe deploy nets written as ONNX, run by ONNX Runtime, equal to Caffe's outputs."""
import numpy as np
import pytest

from dentcae.deploy.onnx_export import ExportError, to_onnx

pytestmark = pytest.mark.slow


def _save(caffe, n, tmp_path, name):
    proto = tmp_path / f"{name}.prototxt"
    proto.write_text(str(n.to_proto()))
    net = caffe.Net(str(proto), caffe.TEST)
    rng = np.random.default_rng(1)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.2, b.data.shape)
    weights = tmp_path / f"{name}.caffemodel"
    net.save(str(weights))
    return proto, weights, net


def _onnx_out(model, x):
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": x})[0]


def test_every_exported_layer_type_matches_caffe(caffe, tmp_path):
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 23, 23]))
    n.conv = L.Convolution(n.data, num_output=6, kernel_size=3, stride=2, pad=1, group=3)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.norm = L.LRN(n.conv, local_size=3, alpha=1e-2, beta=0.75)
    n.pool = L.Pooling(n.norm, pool=P.Pooling.MAX, kernel_size=3, stride=2)      # 12 -> 6, rounded up
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1))
    n.skip = L.Convolution(n.pool, num_output=4, kernel_size=1)
    n.skip_up = L.Deconvolution(n.skip, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1))
    n.fuse = L.Eltwise(n.up, n.skip_up)
    n.avg = L.Pooling(n.fuse, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    n.fc = L.InnerProduct(n.avg, num_output=5)
    n.drop = L.Dropout(n.fc, dropout_ratio=0.5, in_place=True)
    n.prob = L.Softmax(n.fc)
    proto, weights, net = _save(caffe, n, tmp_path, "all")
    x = np.random.default_rng(2).normal(0, 50, (3, 3, 23, 23)).astype(np.float32)
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    want = net.forward()["prob"].copy()
    model = to_onnx(proto, weights)
    assert [o.name for o in model.graph.output] == ["prob"]
    np.testing.assert_allclose(_onnx_out(model, x), want, rtol=1e-4, atol=1e-6)     # a batch of 3: dynamic


def test_a_layer_without_an_onnx_twin_is_named(caffe, tmp_path):
    L = caffe.layers
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=3)
    n.squash = L.Sigmoid(n.conv)
    proto, weights, _ = _save(caffe, n, tmp_path, "sigmoid")
    with pytest.raises(ExportError, match="'squash' has type 'Sigmoid'"):
        to_onnx(proto, weights)
