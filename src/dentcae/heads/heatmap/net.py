"""The heatmap head's net: AlexNet conv1-5 with BVLC names and shapes, the fully convolutional
decoder of nets/fcn.py, and `heatmaps`, one per landmark at stride 4. The first net and the refine
net are both this one.

    net = build(19, cfg["model"], size=256, deploy=True)
"""
import numpy as np

from ...codecs import heatmap as codec
from ...nets.alexnet import conv, finish, inputs
from ...nets.fcn import encoder_decoder
from ...runtime.backend import get_caffe


def heatmap_net(num_landmarks, size=448, train=None, batch=8, test_batch=8, deploy=False, freeze=(),
                width=128, head_lr=1, masked=False):
    """AlexNet conv1-5 (BVLC names and shapes, so ImageNet and CAE weights copy in) and a fully
    convolutional head: conv5 (stride 16) is upsampled twice with skip connections from conv2
    (stride 8) and conv1 (stride 4) to `heatmaps`, one per landmark at stride 4, trained with a
    Euclidean loss against Gaussian targets (HDF5 dataset `heatmap`). `width` is the head's channel
    count (halved after the second upsampling); its layers learn at `head_lr` times the base
    learning rate (a fresh head beside a pre-trained encoder). `masked`: the HDF5 files also hold
    `heatmap_mask` (N, K), and each heatmap enters the loss times its landmark's mask (Scale), so a
    masked landmark's channel gets no gradient (its target is stored as zeros)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    freeze = set(freeze)
    test = inputs(n, size, deploy, train, batch, test_batch, label="heatmap",
                  extra=("heatmap_mask",) if masked else ())
    up2 = encoder_decoder(n, size, freeze, width, head_lr)
    conv(n, "heatmaps", up2, num_landmarks, 1, freeze, std=0.001, relu=False, lr=head_lr)
    if not deploy and masked:
        n.heatmaps_masked = caffe.layers.Scale(n.heatmaps, n.heatmap_mask, axis=0, bias_term=False)
        n.loss = caffe.layers.EuclideanLoss(n.heatmaps_masked, n.heatmap)
    elif not deploy:
        n.loss = caffe.layers.EuclideanLoss(n.heatmaps, n.heatmap)
    return finish(n, test, "AlexNet_heatmaps")


def build(k, model, **net):
    masked = model["partial_labels"] and not net.get("deploy")
    return heatmap_net(k, width=model["head_width"], head_lr=model["head_lr_mult"], masked=masked, **net)


def encoder_for(size, sigma, mask=None):
    """labels (N, 2K) -> {"heatmap": (N, K, H, H) Gaussian targets} of a size x size input: the
    HDF5 dataset the train net's `heatmap` top reads. With a `mask` (N, K) of 0 and 1 (or "labelled":
    1 where a landmark's label is finite) also `heatmap_mask`, and the targets of masked landmarks
    (mask 0) are zeros."""
    def encode(labels):
        points = labels.reshape(len(labels), labels.shape[1] // 2, 2)
        targets = codec.encode(points, size, sigma)
        if mask is None:
            return {"heatmap": targets}
        m = np.isfinite(points).all(-1) if isinstance(mask, str) else mask
        m = np.asarray(m, np.float32)
        return {"heatmap": targets * m[:, :, None, None], "heatmap_mask": m}
    return encode
