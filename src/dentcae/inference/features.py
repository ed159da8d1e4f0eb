"""What a trained detector's encoder sees in an image: one feature vector per image, for choosing
which images to label (annotation/select.py).

    feats = encoder_features(model, greys)      # (N, C): the first net's deepest map, averaged

The first member's first net reads each image as prediction does (its samples, resized to the net's
input, mean subtracted); the vector is its deepest feature map (nets/infer.deepest_map: the
encoder's end) averaged over positions, then over the image's samples (both halves of a bilateral
image), scaled to unit length.
"""
import numpy as np

from ..data.geometry import resize_sample
from ..data.inputs import to_input
from ..nets.infer import deepest_map, load_net, run_net
from ..runtime.backend import set_device
from .detector import cut_samples


def encoder_features(model, greys, gpu=None, progress=lambda xs: xs):
    """(N, C) float32 of the images `greys` (grey pixels in [0, 255])."""
    member = model.members[0]
    set_device(gpu)
    net = load_net(member.nets["first"]["prototxt"], member.nets["first"]["caffemodel"])
    blob, out = deepest_map(net), []
    for grey in progress(greys):
        samples = [resize_sample(crop, member.input_size, member.resize)[0]
                   for _, crop, _ in cut_samples(np.asarray(grey, np.float32), model.layout)]
        maps = run_net(net, to_input(np.stack(samples).astype(np.float32), member.mean_bgr), blob=blob)
        v = maps.mean(axis=(2, 3)).mean(0)
        out.append(v / max(float(np.linalg.norm(v)), 1e-9))
    return np.stack(out).astype(np.float32)
