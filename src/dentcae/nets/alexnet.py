"""AlexNet as NetSpec building blocks, with BVLC's layer names and shapes so that
bvlc_alexnet.caffemodel (and any dentcae pre-training) copies in by name.

    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train=("train.txt", "test.txt"), batch=16, test_batch=16)
    top = encoder(n, freeze, "fc8_landmarks", 8, dropout=0.5, width=4096, top_std=0.001)
    net = finish(n, test, "AlexNet_landmarks")          # -> caffe_pb2.NetParameter
    classifier(size=227, deploy=True)                    # plain BVLC AlexNet, for transfer checks

Heads (heads/) and pre-trainings (pretexts/) build their nets from these blocks: the encoder's
conv1-5 (and fc6-fc7), scratch fillers, `freeze` (layers whose lr_mult and decay_mult are 0), the
HDF5Data inputs of both phases. Only stock BVLC layer types are used.
"""
from ..runtime.atomic import write_atomic
from ..runtime.backend import get_caffe

# (name, num_output, kernel, stride, pad, group) of the encoder convolutions, as BVLC AlexNet
CONVS = [("conv1", 96, 11, 4, 0, 1), ("conv2", 256, 5, 1, 2, 2), ("conv3", 384, 3, 1, 1, 1),
         ("conv4", 384, 3, 1, 1, 2), ("conv5", 256, 3, 1, 1, 2)]
POOL_AFTER = {"conv1": ("norm1", "pool1"), "conv2": ("norm2", "pool2"), "conv5": (None, "pool5")}


def params(name, freeze, lr=1):
    """Weights lr 1, decay 1; biases lr 2, decay 0 (BVLC's choice), times `lr`; all zero when frozen."""
    if name in freeze:
        return [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
    return [dict(lr_mult=lr, decay_mult=1), dict(lr_mult=2 * lr, decay_mult=0)]


def fill(kind="msra", std=None):
    """Scratch initialisation (MSRA for ReLU nets); a copied layer overwrites it."""
    weights = dict(type=kind) if std is None else dict(type="gaussian", std=std)
    return weights, dict(type="constant", value=0)


# Inputs are mean-subtracted 0-255 values (what ImageNet AlexNet expects, std ~50): a scratch
# conv1 with std 0.001 brings them to about unit scale. Other scratch layers are MSRA
# (variance-preserving for ReLU); a head may give its top layer a std of its own (encoder's top_std).
CONV1_STD = 0.001


def inputs(n, size, deploy, train, batch, test_batch, label="label", extra=()):
    """Input layer (deploy) or HDF5Data reading datasets `data`, `label` (None: data only) and the
    `extra` ones (e.g. a loss mask)."""
    L = get_caffe().layers
    if deploy:
        n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
        return None
    names = ["data"] + ([label] if label else []) + list(extra)
    tops = L.HDF5Data(hdf5_data_param=dict(source=str(train[0]), batch_size=batch, shuffle=True),
                      include=dict(phase=get_caffe().TRAIN), ntop=len(names))
    for name, top in zip(names, tops if len(names) > 1 else [tops]):
        n[name] = top
    return dict(source=str(train[1]), batch_size=test_batch)


def convs(n, freeze, pool5=True):
    """AlexNet conv1..pool5 (or ..conv5) with BVLC names and shapes, on n.data; returns the top."""
    caffe = get_caffe()
    L, P = caffe.layers, caffe.params
    bottom = n.data
    for i, (name, out, k, s, p, g) in enumerate(CONVS, start=1):
        wf, bf = fill(std=CONV1_STD if name == "conv1" else None)
        n[name] = L.Convolution(bottom, num_output=out, kernel_size=k, stride=s, pad=p, group=g,
                                weight_filler=wf, bias_filler=bf, param=params(name, freeze))
        n[f"relu{i}"] = L.ReLU(n[name], in_place=True)
        bottom = n[name]
        norm, pool = POOL_AFTER.get(name, (None, None))
        if name == "conv5" and not pool5:
            break
        if norm:
            n[norm] = L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)
            bottom = n[norm]
        if pool:
            n[pool] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            bottom = n[pool]
    return bottom


def encoder(n, freeze, top_fc="fc8", fc8_outputs=1000, dropout=0.5, width=4096, top_std=None):
    """AlexNet conv1..fc7 (fc6/fc7 `width` wide) and the top fully connected layer `top_fc`, BVLC
    names; the top starts Xavier, or Gaussian with `top_std`."""
    L = get_caffe().layers
    bottom = convs(n, freeze)
    for i, name in ((6, "fc6"), (7, "fc7")):
        wf, bf = fill()
        n[name] = L.InnerProduct(bottom, num_output=width, weight_filler=wf, bias_filler=bf,
                                 param=params(name, freeze))
        n[f"relu{i}"] = L.ReLU(n[name], in_place=True)
        n[f"drop{i}"] = L.Dropout(n[name], dropout_ratio=dropout, in_place=True)
        bottom = n[name]
    wf, bf = fill("xavier", std=top_std)
    n[top_fc] = L.InnerProduct(bottom, num_output=fc8_outputs, weight_filler=wf, bias_filler=bf,
                               param=params(top_fc, freeze))
    return n[top_fc]


def finish(n, test_data, name):
    """NetParameter with a TEST-phase HDF5Data layer next to the TRAIN one (NetSpec can't share tops)."""
    caffe = get_caffe()
    net = n.to_proto()
    net.name = name
    if test_data is None:
        return net
    test = net.layer.add()
    test.CopyFrom(net.layer[0])
    test.hdf5_data_param.source = test_data["source"]
    test.hdf5_data_param.batch_size = test_data["batch_size"]
    test.hdf5_data_param.shuffle = False
    test.include[0].phase = caffe.TEST
    layers = list(net.layer)
    del net.layer[:]
    net.layer.extend([layers[0], layers[-1]] + layers[1:-1])
    return net


def classifier(size=227, train=None, batch=16, test_batch=16, deploy=True, freeze=(), width=4096):
    """Plain BVLC AlexNet classifier (fc8: 1000 classes) with Softmax, for weight-transfer tests."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train, batch, test_batch)
    fc8 = encoder(n, set(freeze), width=width)
    if deploy:
        n.prob = caffe.layers.Softmax(fc8)
    else:
        n.loss = caffe.layers.SoftmaxWithLoss(fc8, n.label)
    return finish(n, test, "AlexNet")


def conv(n, name, bottom, out, kernel, freeze, std=None, relu=True, lr=1):
    """A `kernel` x `kernel` convolution (same padding) with its ReLU `<name>_relu` unless relu=False."""
    L = get_caffe().layers
    wf, bf = fill(std=std)
    n[name] = L.Convolution(bottom, num_output=out, kernel_size=kernel, pad=kernel // 2,
                            weight_filler=wf, bias_filler=bf, param=params(name, freeze, lr))
    if relu:
        n[f"{name}_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def alexnet_sides(size):
    """Sides of conv1, conv2 (= pool1) and conv5 (= pool2) for a size x size input (Caffe pools round up)."""
    c1 = (size - 11) // 4 + 1
    p1 = -(-(c1 - 3) // 2) + 1
    return c1, p1, -(-(p1 - 3) // 2) + 1


def scale_learning_rates(net, layers, factor):
    """Multiply the lr_mult of every parameter of `layers` (None: every layer) of a NetParameter
    by `factor` (in place): gentle fine-tuning of copied layers. Frozen layers stay at 0."""
    for layer in net.layer:
        if layers is None or layer.name in layers:
            for p in layer.param:
                p.lr_mult = p.lr_mult * factor
    return net


def write_net(net, path):
    """A NetParameter as a prototxt, written atomically; returns the path."""
    write_atomic(path, str(net))
    return path
