"""The heatmap head's net: AlexNet conv1-5 with BVLC names and shapes, and a fully convolutional
decoder to one heatmap per landmark at stride 4. The first net and the refine net are both this one.

    net = build(19, cfg["model"], size=256, deploy=True)
"""
from ...codecs import heatmap as codec
from ...nets.alexnet import alexnet_sides, conv, convs, fill, finish, inputs, params
from ...runtime.backend import get_caffe


def _up_and_fuse(n, tag, bottom, skip, out, sides, freeze, lr):
    """Upsample x2 with a stride-2 deconvolution sized to land exactly on the skip connection's
    side (sides: from, to), add a 1x1 projection of the skip, ReLU, then a 3x3 convolution."""
    L = get_caffe().layers
    wf, bf = fill()
    kernel = sides[1] - 2 * (sides[0] - 1) + 2     # out = (in - 1) * 2 - 2 * pad + kernel, pad 1: 4 or 5
    n[f"hm_up{tag}"] = L.Deconvolution(bottom, param=params(f"hm_up{tag}", freeze, lr), convolution_param=dict(
        num_output=out, kernel_size=kernel, stride=2, pad=1, weight_filler=wf, bias_filler=bf))
    proj = conv(n, f"hm_skip{tag}", skip, out, 1, freeze, relu=False, lr=lr)
    n[f"hm_fuse{tag}"] = L.Eltwise(n[f"hm_up{tag}"], proj)
    n[f"hm_fuse{tag}_relu"] = L.ReLU(n[f"hm_fuse{tag}"], in_place=True)
    return conv(n, f"hm_conv{tag}", n[f"hm_fuse{tag}"], out, 3, freeze, lr=lr)


def heatmap_net(num_landmarks, size=448, train=None, batch=8, test_batch=8, deploy=False, freeze=(),
                width=128, head_lr=1):
    """AlexNet conv1-5 (BVLC names and shapes, so ImageNet and CAE weights copy in) and a fully
    convolutional head: conv5 (stride 16) is upsampled twice with skip connections from conv2
    (stride 8) and conv1 (stride 4) to `heatmaps`, one per landmark at stride 4, trained with a
    Euclidean loss against Gaussian targets (HDF5 dataset `heatmap`). `width` is the head's channel
    count (halved after the second upsampling); its layers learn at `head_lr` times the base
    learning rate (a fresh head beside a pre-trained encoder)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    freeze = set(freeze)
    test = inputs(n, size, deploy, train, batch, test_batch, label="heatmap")
    conv5 = convs(n, freeze, pool5=False)
    c1, c2, c5 = alexnet_sides(size)
    reduced = conv(n, "hm_reduce5", conv5, width, 1, freeze, lr=head_lr)
    up4 = _up_and_fuse(n, "4", reduced, n.conv2, width, (c5, c2), freeze, head_lr)
    up2 = _up_and_fuse(n, "2", up4, n.conv1, max(width // 2, 1), (c2, c1), freeze, head_lr)
    conv(n, "heatmaps", up2, num_landmarks, 1, freeze, std=0.001, relu=False, lr=head_lr)
    if not deploy:
        n.loss = caffe.layers.EuclideanLoss(n.heatmaps, n.heatmap)
    return finish(n, test, "AlexNet_heatmaps")


def build(k, model, **net):
    return heatmap_net(k, width=model["head_width"], head_lr=model["head_lr_mult"], **net)


def encoder_for(size, sigma):
    """labels (N, 2K) -> {"heatmap": (N, K, H, H) Gaussian targets} of a size x size input: the
    HDF5 dataset the train net's `heatmap` top reads."""
    return lambda labels: {"heatmap": codec.encode(labels.reshape(len(labels), labels.shape[1] // 2, 2), size, sigma)}
