"""Run a deploy net over arrays or a prepared split: the only place dentcae does inference.

    out = predict("runs/x/deploy.prototxt", "runs/x/final.caffemodel", data)   # (N, outputs...)
    out = run_net(load_net(deploy, weights), data)                              # the same, net kept
    out = predict_split(run, weights, prepared, "reg_test", gpu=None)

Batching reshapes the Input layer; the output is the net's first output blob, one row per sample.
"""
import h5py
import numpy as np

from .backend import get_caffe, set_device


def load_net(deploy, weights):
    caffe = get_caffe()
    return caffe.Net(str(deploy), str(weights), caffe.TEST)


def net_shapes(deploy):
    """({layer: [blob shapes]} of a deploy net's parameters, its first output's shape), without weights."""
    caffe = get_caffe()
    net = caffe.Net(str(deploy), caffe.TEST)
    return ({name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()},
            tuple(net.blobs[net.outputs[0]].data.shape))


def predict(deploy, weights, data, batch=16):
    """Forward (N, C, S, S) float32 arrays through a deploy net, on the current device."""
    return run_net(load_net(deploy, weights), data, batch)


def run_net(net, data, batch=16):
    """Forward arrays through a loaded deploy net in batches; its first output, one row per sample."""
    out_name = net.outputs[0]
    outs = []
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        net.blobs["data"].reshape(*chunk.shape)
        net.blobs["data"].data[...] = chunk
        outs.append(net.forward()[out_name].copy())
    return np.concatenate(outs)


def split_data(prepared, split, limit=None):
    """The mean-subtracted input arrays of a prepared split (the first `limit` only, if given)."""
    with h5py.File(prepared.h5(split), "r") as f:
        return f["data"][:limit] if limit else f["data"][...]


def predict_split(deploy, weights, prepared, split, gpu=None, batch=16):
    """Predictions for every sample of a prepared split, on CPU or CUDA device `gpu`."""
    set_device(gpu)
    return predict(deploy, weights, split_data(prepared, split), batch)
