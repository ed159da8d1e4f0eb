"""Copy layers by name from a .caffemodel into a net, checking every shape; report what happened.

    report = copy_layers(solver.net, "bvlc_alexnet.caffemodel", ["conv1", ..., "fc6"])
    # {"source": ..., "copied": {"conv1": [[96, 3, 11, 11], [96]], ...}, "fresh": ["fc7", ...]}

Nothing is skipped silently: a listed layer that is missing in the source or the target, or whose
blob shapes differ, is an error naming it. Layers with parameters that were not copied are listed
as `fresh` (they keep the net's own initialisation).
"""
import hashlib
from pathlib import Path

import numpy as np

from ..runtime.backend import caffe_pb2

BVLC_ALEXNET_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"
BVLC_ALEXNET_HELP = (
    "bvlc_alexnet.caffemodel (233 MB, sha1 " + BVLC_ALEXNET_SHA1 + ") is BVLC's ImageNet AlexNet: "
    "get it from the Caffe model zoo (models/bvlc_alexnet in the BVLC caffe repository, "
    "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel), set model.imagenet_weights to its "
    "path, or set model.init: scratch to train without ImageNet weights")


class TransferError(ValueError):
    pass


def _blob_array(blob):
    if blob.shape.dim:
        shape = tuple(blob.shape.dim)
    else:  # legacy 4-d blobs (V1 caffemodels such as bvlc_alexnet)
        shape = (blob.num, blob.channels, blob.height, blob.width)
    values = blob.data if len(blob.data) else blob.double_data
    return np.asarray(values, dtype=np.float32).reshape(shape)


def read_caffemodel(path, wanted=None):
    """{layer name: [arrays]} of a binary .caffemodel (V1 `layers` or V2 `layer`)."""
    path = Path(path)
    if not path.exists():
        raise TransferError(f"weights file not found: {path}")
    net = caffe_pb2().NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise TransferError(f"{path}: not a readable .caffemodel ({e})") from None
    out = {}
    for layer in list(net.layer) + list(net.layers):
        if layer.blobs and (wanted is None or layer.name in wanted):
            out[layer.name] = [_blob_array(b) for b in layer.blobs]
    return out


def _squeeze_shape(shape):
    """Legacy inner-product blobs are (1, 1, out, in); modern ones (out, in): compare without 1s."""
    return tuple(d for d in shape if d != 1) or (1,)


def copy_layers(net, source, layers):
    """Copy `layers` from the .caffemodel `source` into pycaffe `net` (in place)."""
    weights = read_caffemodel(source, set(layers))
    copied = {}
    for name in layers:
        if name not in net.params:
            raise TransferError(f"cannot copy layer '{name}': the target net has no such layer "
                                f"(it has: {', '.join(net.params.keys())})")
        if name not in weights:
            raise TransferError(f"cannot copy layer '{name}': {source} has no weights for it")
        src, dst = weights[name], net.params[name]
        if len(src) != len(dst):
            raise TransferError(f"layer '{name}': {source} has {len(src)} blobs, the net {len(dst)}")
        for i, (s, d) in enumerate(zip(src, dst)):
            if s.shape != d.data.shape and _squeeze_shape(s.shape) != _squeeze_shape(d.data.shape):
                raise TransferError(f"layer '{name}' blob {i}: shape {list(s.shape)} in {source} "
                                    f"!= {list(d.data.shape)} in the net")
        for s, d in zip(src, dst):
            d.data[...] = s.reshape(d.data.shape)
        copied[name] = [list(d.data.shape) for d in dst]
    fresh = [n for n in net.params.keys() if n not in copied]
    return {"source": str(source), "copied": copied, "fresh": fresh}


def check_imagenet_weights(path):
    """The ImageNet AlexNet file must exist; a checksum other than BVLC's is reported, not fatal."""
    path = Path(path)
    if not path.exists():
        raise TransferError(f"ImageNet weights not found at {path}. {BVLC_ALEXNET_HELP}")
    h = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    return None if digest == BVLC_ALEXNET_SHA1 else (
        f"warning: {path} has sha1 {digest}, not BVLC's {BVLC_ALEXNET_SHA1}; using it as given")


def mismatches(expected, source):
    """What keeps the .caffemodel `source` from filling a net whose parameters have the shapes
    `expected` ({layer: [shapes]}): missing layers and differing shapes, as readable lines."""
    saved = read_caffemodel(source)
    problems = []
    for name, shapes in expected.items():
        if name not in saved:
            problems.append(f"layer '{name}' is not in {source}")
            continue
        got = [tuple(a.shape) for a in saved[name]]
        if len(got) != len(shapes) or any(a != b and _squeeze_shape(a) != _squeeze_shape(b)
                                          for a, b in zip(got, shapes)):
            problems.append(f"layer '{name}': {source} has shapes {got}, the net needs {shapes}")
    return problems
