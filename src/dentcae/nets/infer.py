"""Run a deploy net over arrays: the only place dentcae does inference.

    check_weights(deploy, weights, 38, "values", 19)   # refuse weights that do not fit, before Caffe
    out = predict("runs/x/deploy.prototxt", "runs/x/final.caffemodel", data)   # (N, outputs...)
    out = run_net(load_net(deploy, weights), data)                              # the same, net kept

Batching reshapes the Input layer; the output is the net's first output blob, one row per sample.
"""
from pathlib import Path

import numpy as np

from ..runtime.backend import caffe_pb2, get_caffe
from .transfer import mismatches


class CheckpointError(ValueError):
    pass


def check_prototxt(path):
    """Refuse a net prototxt Caffe would abort on: missing, not parseable (a truncated file), a
    layer type this Caffe lacks, or a bottom blob no earlier layer makes."""
    from google.protobuf import text_format
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: net prototxt not found")
    net = caffe_pb2().NetParameter()
    try:
        text_format.Parse(path.read_text(errors="replace"), net)
    except text_format.ParseError as e:
        raise CheckpointError(f"{path}: not a readable net prototxt ({e}); is it truncated?") from None
    known, made = set(get_caffe().layer_type_list()), set(net.input)
    for layer in net.layer:
        if layer.type not in known:
            raise CheckpointError(f"{path}: layer '{layer.name}' has type '{layer.type}', which this Caffe lacks")
        missing = [b for b in layer.bottom if b not in made]
        if missing:
            raise CheckpointError(f"{path}: layer '{layer.name}' reads {', '.join(missing)}, which no earlier layer "
                                  "makes (a truncated or edited file?)")
        made.update(layer.top)
    if not net.layer:
        raise CheckpointError(f"{path}: the net has no layers (an empty or truncated file?)")
    return path


def load_net(deploy, weights):
    caffe = get_caffe()
    return caffe.Net(str(check_prototxt(deploy)), str(weights), caffe.TEST)


def net_shapes(deploy):
    """({layer: [blob shapes]} of a deploy net's parameters, its first output's shape), without weights."""
    caffe = get_caffe()
    net = caffe.Net(str(check_prototxt(deploy)), caffe.TEST)
    return ({name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()},
            tuple(net.blobs[net.outputs[0]].data.shape))


def check_weights(deploy, weights, channels, what, num_landmarks):
    """Refuse, before predicting, weights that do not fill the deploy net exactly (Caffe would keep
    missing layers random, or abort on a shape) and a net whose first output does not have the
    `channels` (`what`: "values", "heatmaps") that K landmarks need."""
    expected, out_shape = net_shapes(deploy)
    problems = mismatches(expected, weights)
    if out_shape[1] != channels:
        problems.append(f"the net outputs {out_shape[1]} {what} per sample, the data has {num_landmarks} "
                        f"landmarks per sample (needs {channels})")
    if problems:
        raise CheckpointError(f"{weights} does not fit {deploy} and this data: " + "; ".join(problems))


def predict(deploy, weights, data, batch=16):
    """Forward (N, C, S, S) float32 arrays through a deploy net, on the current device."""
    return run_net(load_net(deploy, weights), data, batch)


def run_net(net, data, batch=16, blob=None):
    """Forward arrays through a loaded deploy net in batches; its first output (or the blob `blob`),
    one row per sample."""
    out_name = blob or net.outputs[0]
    outs = []
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        net.blobs["data"].reshape(*chunk.shape)
        net.blobs["data"].data[...] = chunk
        net.forward()
        outs.append(net.blobs[out_name].data.copy())
    return np.concatenate(outs)


def deepest_map(net):
    """The name of a net's deepest feature map: of its 4-D blobs, the one with the fewest positions
    (the last such: the encoder's end, before a decoder grows them again)."""
    maps = [(name, b.data.shape) for name, b in net.blobs.items() if b.data.ndim == 4 and name != "data"]
    fewest = min(h * w for _, (_, _, h, w) in maps)
    return [name for name, (_, _, h, w) in maps if h * w == fewest][-1]

