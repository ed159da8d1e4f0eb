"""Run a net on input arrays, with Caffe or ONNX Runtime: the forwards a Detector is built from.

    forward = caffe_forward("runs/x/deploy.prototxt", "runs/x/final.caffemodel")   # x: (N, 3, S, S)
    forward = onnx_forward("models/x/nets/first.onnx")
    diff = onnx_difference(prototxt, caffemodel, onnx_path)     # max |ONNX Runtime - Caffe| on a random input
"""
import numpy as np

BATCH = 16


def caffe_forward(prototxt, weights, gpu=None):
    """Run a Caffe deploy net on input arrays (N, 3, S, S): its first output."""
    from ..nets.infer import load_net, run_net
    from ..runtime.backend import set_device
    set_device(gpu)
    net = load_net(prototxt, weights)
    return lambda x: run_net(net, x, BATCH)


def onnx_forward(path):
    """Run an ONNX model on input arrays with ONNX Runtime (CPU): its first output."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("the onnx backend needs onnxruntime: pip install 'dentcae[onnx]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(x):
        return np.concatenate([session.run(None, {"data": np.ascontiguousarray(x[i:i + BATCH], np.float32)})[0]
                               for i in range(0, len(x), BATCH)])
    return forward


def onnx_difference(prototxt, caffemodel, onnx_path, size):
    """max |ONNX Runtime - Caffe| of a net's outputs on a fixed random input of side `size`."""
    x = np.random.default_rng(0).normal(0, 60, (2, 3, size, size)).astype(np.float32)
    return float(np.abs(caffe_forward(prototxt, caffemodel)(x) - onnx_forward(onnx_path)(x)).max())
