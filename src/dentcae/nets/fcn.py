"""AlexNet's conv1-5 and a fully convolutional decoder back to stride 4, with the layer names the
heatmap head and the dense pre-training share (so one's weights copy into the other by name).

    top = encoder_decoder(n, size=256, freeze=set(), width=64, lr=10)   # on n.data; `width` channels

conv5 (stride 16) is reduced by a 1x1 convolution (`hm_reduce5`), upsampled x2 by a stride-2
deconvolution (`hm_up4`), fused with a 1x1 projection of conv2 (`hm_skip4`, `hm_fuse4`) and
convolved (`hm_conv4`); the same again with conv1 (`hm_up2`, `hm_skip2`, `hm_fuse2`, `hm_conv2`,
half the channels). The output lies on conv1's grid: stride 4, its pixel p on input pixel 4p + 5.
"""
from ..runtime.backend import get_caffe
from .alexnet import alexnet_sides, conv, convs, fill, params


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


def encoder_decoder(n, size, freeze, width, lr=1):
    """conv1-5 on n.data, then the decoder to stride 4 (its layers learn at `lr` times the base rate);
    returns the top of `hm_conv2` (max(width // 2, 1) channels)."""
    conv5 = convs(n, freeze, pool5=False)
    c1, c2, c5 = alexnet_sides(size)
    reduced = conv(n, "hm_reduce5", conv5, width, 1, freeze, lr=lr)
    up4 = _up_and_fuse(n, "4", reduced, n.conv2, width, (c5, c2), freeze, lr)
    return _up_and_fuse(n, "2", up4, n.conv1, max(width // 2, 1), (c2, c1), freeze, lr)
