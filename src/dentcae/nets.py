"""NetSpec generators: the AlexNet auto-encoder (CAE), the augmentation classifier, the landmark
regressor and heatmap detector, a plain classifier.

    train, deploy = for_config(cfg, num_landmarks=4, sources=("train.txt", "test.txt"))
    cae(size=224, train=("cae_train.txt", "cae_test.txt"), batch=16)   -> caffe_pb2.NetParameter
    regressor(num_outputs=8, size=224, deploy=True)                     -> ...
    classifier(size=227, deploy=True)

`for_config` is the one mapping from a config to its nets: `stage: pretrain` builds the pretext net
named by `model.pretext`, `stage: finetune` the head named by `model.head` (PRETEXTS and HEADS
below). A new head or pretext task is a builder here plus its label codec and a config.

The encoder is BVLC AlexNet layer for layer (names and parameter shapes), so its .caffemodel copies
in by name. The CAE decoder mirrors it with `dec_*` layers: fully connected back to 256x6x6, a
Reshape, then Deconvolutions mirroring conv5..conv1 with stride-2 deconvolutions where the encoder
pools (6 -> 13 -> 27 -> 55 -> 227), and a Crop to the input's size when that is not 227.
Only stock BVLC layer types are used. `freeze` lists layers whose lr_mult and decay_mult are 0.
"""
from .atomic import write_atomic
from .backend import get_caffe

# (name, num_output, kernel, stride, pad, group) of the encoder convolutions, as BVLC AlexNet
CONVS = [("conv1", 96, 11, 4, 0, 1), ("conv2", 256, 5, 1, 2, 2), ("conv3", 384, 3, 1, 1, 1),
         ("conv4", 384, 3, 1, 1, 2), ("conv5", 256, 3, 1, 1, 2)]
POOL_AFTER = {"conv1": ("norm1", "pool1"), "conv2": ("norm2", "pool2"), "conv5": (None, "pool5")}


def _params(name, freeze, lr=1):
    """Weights lr 1, decay 1; biases lr 2, decay 0 (BVLC's choice), times `lr`; all zero when frozen."""
    if name in freeze:
        return [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
    return [dict(lr_mult=lr, decay_mult=1), dict(lr_mult=2 * lr, decay_mult=0)]


def _fill(kind="msra", std=None):
    """Scratch initialisation (MSRA for ReLU nets); a copied layer overwrites it."""
    weights = dict(type=kind) if std is None else dict(type="gaussian", std=std)
    return weights, dict(type="constant", value=0)


# Inputs are mean-subtracted 0-255 values (what ImageNet AlexNet expects, std ~50): a scratch
# conv1 with std 0.001 brings them to about unit scale; a regression head with std 0.001 starts
# near 0 against labels in [0, 1]. Other scratch layers are MSRA (variance-preserving for ReLU).
SCRATCH_STD = {"conv1": 0.001, "fc8_landmarks": 0.001}


def _inputs(n, size, deploy, train, batch, test_batch, label="label"):
    """Input layer (deploy) or HDF5Data reading datasets `data` and `label` (None: data only)."""
    L = get_caffe().layers
    if deploy:
        n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
        return None
    tops = L.HDF5Data(hdf5_data_param=dict(source=str(train[0]), batch_size=batch, shuffle=True),
                      include=dict(phase=get_caffe().TRAIN), ntop=2 if label else 1)
    if label:
        n.data, n[label] = tops
    else:
        n.data = tops
    return dict(source=str(train[1]), batch_size=test_batch)


def _convs(n, freeze, pool5=True):
    """AlexNet conv1..pool5 (or ..conv5) with BVLC names and shapes, on n.data; returns the top."""
    caffe = get_caffe()
    L, P = caffe.layers, caffe.params
    bottom = n.data
    for i, (name, out, k, s, p, g) in enumerate(CONVS, start=1):
        wf, bf = _fill(std=SCRATCH_STD.get(name))
        n[name] = L.Convolution(bottom, num_output=out, kernel_size=k, stride=s, pad=p, group=g,
                                weight_filler=wf, bias_filler=bf, param=_params(name, freeze))
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


def _encoder(n, freeze, top_fc="fc8", fc8_outputs=1000, dropout=0.5, width=4096):
    """AlexNet conv1..fc7 (fc6/fc7 `width` wide) and the top fully connected layer, BVLC names."""
    L = get_caffe().layers
    bottom = _convs(n, freeze)
    for i, name in ((6, "fc6"), (7, "fc7")):
        wf, bf = _fill()
        n[name] = L.InnerProduct(bottom, num_output=width, weight_filler=wf, bias_filler=bf,
                                 param=_params(name, freeze))
        n[f"relu{i}"] = L.ReLU(n[name], in_place=True)
        n[f"drop{i}"] = L.Dropout(n[name], dropout_ratio=dropout, in_place=True)
        bottom = n[name]
    wf, bf = _fill("xavier", std=SCRATCH_STD.get(top_fc))
    n[top_fc] = L.InnerProduct(bottom, num_output=fc8_outputs, weight_filler=wf, bias_filler=bf,
                               param=_params(top_fc, freeze))
    return n[top_fc]


def _decoder(n, code, size, freeze, width=4096):
    """Mirror of the encoder from the 1000-d code back to a 3 x size x size reconstruction."""
    L = get_caffe().layers
    bottom = code
    for name, out in (("dec_fc7", width), ("dec_fc6", width), ("dec_pool5", 256 * 6 * 6)):
        wf, bf = _fill()
        n[name] = L.InnerProduct(bottom, num_output=out, weight_filler=wf, bias_filler=bf,
                                 param=_params(name, freeze))
        n[f"{name}_relu"] = L.ReLU(n[name], in_place=True)
        bottom = n[name]
    n.dec_pool5_map = L.Reshape(bottom, shape=dict(dim=[0, 256, 6, 6]))
    bottom = n.dec_pool5_map
    # (name, num_output, kernel, stride, pad, group): unpool = stride-2 deconvolution, 3x3
    layers = [("dec_unpool5", 256, 3, 2, 0, 1), ("dec_conv5", 384, 3, 1, 1, 2),
              ("dec_conv4", 384, 3, 1, 1, 2), ("dec_conv3", 256, 3, 1, 1, 1),
              ("dec_unpool2", 256, 3, 2, 0, 1), ("dec_conv2", 96, 5, 1, 2, 2),
              ("dec_unpool1", 96, 3, 2, 0, 1), ("dec_conv1", 3, 11, 4, 0, 1)]
    for name, out, k, s, p, g in layers:
        wf, bf = _fill()
        n[name] = L.Deconvolution(bottom, param=_params(name, freeze), convolution_param=dict(
            num_output=out, kernel_size=k, stride=s, pad=p, group=g, weight_filler=wf,
            bias_filler=bf))
        if name != "dec_conv1":
            n[f"{name}_relu"] = L.ReLU(n[name], in_place=True)
        bottom = n[name]
    if size == 227:
        return bottom
    if size > 227:
        raise ValueError(f"CAE input size {size} > 227: the AlexNet decoder reconstructs at most 227")
    n.reconstruction = L.Crop(bottom, n.data, axis=2, offset=[0])
    return n.reconstruction


def _finish(n, test_data, name, with_label):
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


def cae(size=224, train=None, batch=16, test_batch=16, deploy=False, freeze=(), dropout=0.5, width=4096):
    """AlexNet convolutional auto-encoder; train variant: `train` = (train list, test list)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = _inputs(n, size, deploy, train, batch, test_batch, label=None)
    code = _encoder(n, set(freeze), "fc8", 1000, dropout, width)
    recon = _decoder(n, code, size, set(freeze), width)
    if not deploy:
        # loss_weight 1/(3*size*size): the loss is half the mean squared error per input value
        n.loss = caffe.layers.EuclideanLoss(recon, n.data, loss_weight=1.0 / (3 * size * size))
    return _finish(n, test, "AlexNet_CAE", False)


def regressor(num_outputs=8, size=224, train=None, batch=16, test_batch=16, deploy=False,
              freeze=(), dropout=0.5, width=4096):
    """AlexNet with fc8 replaced by `fc8_landmarks` (num_outputs = 2 x landmarks) and EuclideanLoss."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = _inputs(n, size, deploy, train, batch, test_batch)
    out = _encoder(n, set(freeze), "fc8_landmarks", num_outputs, dropout, width)
    if not deploy:
        n.loss = caffe.layers.EuclideanLoss(out, n.label)
    return _finish(n, test, "AlexNet_landmarks", True)


def classifier(size=227, train=None, batch=16, test_batch=16, deploy=True, freeze=(), width=4096):
    """Plain BVLC AlexNet classifier (fc8: 1000 classes) with Softmax, for weight-transfer tests."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = _inputs(n, size, deploy, train, batch, test_batch)
    fc8 = _encoder(n, set(freeze), width=width)
    if deploy:
        n.prob = caffe.layers.Softmax(fc8)
    else:
        n.loss = caffe.layers.SoftmaxWithLoss(fc8, n.label)
    return _finish(n, test, "AlexNet", True)


def augment_classifier(num_methods, size=224, train=None, batch=16, test_batch=16, deploy=False, freeze=(),
                       dropout=0.5, width=4096):
    """AlexNet naming which of `num_methods` augmentations made its input (the paper's other
    unsupervised pre-training): fc8 replaced by `fc8_pretext`, SoftmaxWithLoss, and an Accuracy
    on the test phase; conv1-5 and fc6 transfer to the landmark heads as the CAE's do."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = _inputs(n, size, deploy, train, batch, test_batch)
    scores = _encoder(n, set(freeze), "fc8_pretext", num_methods, dropout, width)
    if deploy:
        n.prob = caffe.layers.Softmax(scores)
    else:
        n.loss = caffe.layers.SoftmaxWithLoss(scores, n.label)
        n.accuracy = caffe.layers.Accuracy(scores, n.label, include=dict(phase=caffe.TEST))
    return _finish(n, test, "AlexNet_augment_pretext", True)


def _conv(n, name, bottom, out, kernel, freeze, std=None, relu=True, lr=1):
    L = get_caffe().layers
    wf, bf = _fill(std=std)
    n[name] = L.Convolution(bottom, num_output=out, kernel_size=kernel, pad=kernel // 2,
                            weight_filler=wf, bias_filler=bf, param=_params(name, freeze, lr))
    if relu:
        n[f"{name}_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def alexnet_sides(size):
    """Sides of conv1, conv2 (= pool1) and conv5 (= pool2) for a size x size input (Caffe pools round up)."""
    c1 = (size - 11) // 4 + 1
    p1 = -(-(c1 - 3) // 2) + 1
    return c1, p1, -(-(p1 - 3) // 2) + 1


def _up_and_fuse(n, tag, bottom, skip, out, sides, freeze, lr):
    """Upsample x2 with a stride-2 deconvolution sized to land exactly on the skip connection's
    side (sides: from, to), add a 1x1 projection of the skip, ReLU, then a 3x3 convolution."""
    L = get_caffe().layers
    wf, bf = _fill()
    kernel = sides[1] - 2 * (sides[0] - 1) + 2     # out = (in - 1) * 2 - 2 * pad + kernel, pad 1: 4 or 5
    n[f"hm_up{tag}"] = L.Deconvolution(bottom, param=_params(f"hm_up{tag}", freeze, lr), convolution_param=dict(
        num_output=out, kernel_size=kernel, stride=2, pad=1, weight_filler=wf, bias_filler=bf))
    proj = _conv(n, f"hm_skip{tag}", skip, out, 1, freeze, relu=False, lr=lr)
    n[f"hm_fuse{tag}"] = L.Eltwise(n[f"hm_up{tag}"], proj)
    n[f"hm_fuse{tag}_relu"] = L.ReLU(n[f"hm_fuse{tag}"], in_place=True)
    return _conv(n, f"hm_conv{tag}", n[f"hm_fuse{tag}"], out, 3, freeze, lr=lr)


def heatmap_net(num_landmarks, size=448, train=None, batch=8, test_batch=8, deploy=False, freeze=(),
                width=128, head_lr=1):
    """AlexNet conv1-5 (BVLC names and shapes, so ImageNet and CAE weights copy in) and a fully
    convolutional head: conv5 (stride 16) is upsampled twice with skip connections from conv2
    (stride 8) and conv1 (stride 4) to `heatmaps`, one per landmark at stride 4 (heatmap.py is
    its codec), trained with a Euclidean loss against Gaussian targets (HDF5 dataset `heatmap`).
    `width` is the head's channel count (halved after the second upsampling); its layers learn at
    `head_lr` times the base learning rate (a fresh head beside a pre-trained encoder)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    freeze = set(freeze)
    test = _inputs(n, size, deploy, train, batch, test_batch, label="heatmap")
    conv5 = _convs(n, freeze, pool5=False)
    c1, c2, c5 = alexnet_sides(size)
    reduced = _conv(n, "hm_reduce5", conv5, width, 1, freeze, lr=head_lr)
    up4 = _up_and_fuse(n, "4", reduced, n.conv2, width, (c5, c2), freeze, head_lr)
    up2 = _up_and_fuse(n, "2", up4, n.conv1, max(width // 2, 1), (c2, c1), freeze, head_lr)
    _conv(n, "heatmaps", up2, num_landmarks, 1, freeze, std=0.001, relu=False, lr=head_lr)
    if not deploy:
        n.loss = caffe.layers.EuclideanLoss(n.heatmaps, n.heatmap)
    return _finish(n, test, "AlexNet_heatmaps", True)


# What each stage builds: {name: (file stem, builder(K, model config, **net keywords))}.
PRETEXTS = {"cae": ("cae", lambda k, m, **kw: cae(dropout=m["dropout"], width=m["fc_width"], **kw)),
            "augment": ("pretext", lambda k, m, **kw: augment_classifier(
                len(m["pretext_methods"]), dropout=m["dropout"], width=m["fc_width"], **kw))}
HEADS = {"regression": ("landmarks", lambda k, m, **kw: regressor(2 * k, dropout=m["dropout"],
                                                                   width=m["fc_width"], **kw)),
         "heatmap": ("heatmaps", lambda k, m, **kw: heatmap_net(k, width=m["head_width"],
                                                              head_lr=m["head_lr_mult"], **kw))}


def stage_builder(cfg):
    """(file stem, builder) of a config's stage: its pretext task or its landmark head."""
    m = cfg["model"]
    return PRETEXTS[m["pretext"]] if cfg["stage"] == "pretrain" else HEADS[m["head"]]


def for_config(cfg, num_landmarks, sources, test_batch=None):
    """The (train, deploy) NetParameters of a config's stage. `sources` are the train and test
    HDF5 list files; `num_landmarks` is K per sample (ignored by pretext tasks)."""
    m, sc = cfg["model"], cfg["solver"]
    size = m["refine"]["patch"] if cfg["stage"] == "refine" else cfg["prepare"]["input_size"]
    _, build = stage_builder(cfg)
    train = build(num_landmarks, m, size=size, train=tuple(str(s) for s in sources), batch=sc["batch_size"],
                  test_batch=test_batch or sc["test_batch_size"], freeze=m["freeze"])
    deploy = build(num_landmarks, m, size=size, deploy=True)
    return train, deploy


def write_net(net, path):
    write_atomic(path, str(net))
    return path
