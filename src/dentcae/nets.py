"""NetSpec generators: the AlexNet auto-encoder (CAE), the landmark regressor, a plain classifier.

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


def _params(name, freeze):
    """Weights lr 1, decay 1; biases lr 2, decay 0 (BVLC's choice); all zero when frozen."""
    if name in freeze:
        return [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]
    return [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def _fill(kind="msra", std=None):
    """Scratch initialisation (MSRA for ReLU nets); a copied layer overwrites it."""
    weights = dict(type=kind) if std is None else dict(type="gaussian", std=std)
    return weights, dict(type="constant", value=0)


# Inputs are mean-subtracted 0-255 values (what ImageNet AlexNet expects, std ~50): a scratch
# conv1 with std 0.001 brings them to about unit scale; a regression head with std 0.001 starts
# near 0 against labels in [0, 1]. Other scratch layers are MSRA (variance-preserving for ReLU).
SCRATCH_STD = {"conv1": 0.001, "fc8_landmarks": 0.001}


def _inputs(n, size, deploy, train, batch, test_batch, with_label):
    L = get_caffe().layers
    if deploy:
        n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
        return None
    ntop = 2 if with_label else 1
    tops = L.HDF5Data(hdf5_data_param=dict(source=str(train[0]), batch_size=batch, shuffle=True),
                      include=dict(phase=get_caffe().TRAIN), ntop=ntop)
    if with_label:
        n.data, n.label = tops
    else:
        n.data = tops
    return dict(source=str(train[1]), batch_size=test_batch)


def _encoder(n, freeze, top_fc="fc8", fc8_outputs=1000, dropout=0.5, width=4096):
    """AlexNet conv1..fc7 (fc6/fc7 `width` wide) and the top fully connected layer, BVLC names."""
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
        if norm:
            n[norm] = L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)
            bottom = n[norm]
        if pool:
            n[pool] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            bottom = n[pool]
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
    test = _inputs(n, size, deploy, train, batch, test_batch, with_label=False)
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
    test = _inputs(n, size, deploy, train, batch, test_batch, with_label=True)
    out = _encoder(n, set(freeze), "fc8_landmarks", num_outputs, dropout, width)
    if not deploy:
        n.loss = caffe.layers.EuclideanLoss(out, n.label)
    return _finish(n, test, "AlexNet_landmarks", True)


def classifier(size=227, train=None, batch=16, test_batch=16, deploy=True, freeze=(), width=4096):
    """Plain BVLC AlexNet classifier (fc8: 1000 classes) with Softmax, for weight-transfer tests."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = _inputs(n, size, deploy, train, batch, test_batch, with_label=True)
    fc8 = _encoder(n, set(freeze), width=width)
    if deploy:
        n.prob = caffe.layers.Softmax(fc8)
    else:
        n.loss = caffe.layers.SoftmaxWithLoss(fc8, n.label)
    return _finish(n, test, "AlexNet", True)


# What each stage builds: {name: (file stem, builder(num_landmarks, **net keywords))}.
PRETEXTS = {"cae": ("cae", lambda k, **kw: cae(**kw))}
HEADS = {"regression": ("landmarks", lambda k, **kw: regressor(2 * k, **kw))}


def stage_builder(cfg):
    """(file stem, builder) of a config's stage: its pretext task or its landmark head."""
    m = cfg["model"]
    return PRETEXTS[m["pretext"]] if cfg["stage"] == "pretrain" else HEADS[m["head"]]


def for_config(cfg, num_landmarks, sources, test_batch=None):
    """The (train, deploy) NetParameters of a config's stage. `sources` are the train and test
    HDF5 list files; `num_landmarks` is K per sample (ignored by pretext tasks)."""
    m, sc, size = cfg["model"], cfg["solver"], cfg["prepare"]["input_size"]
    _, build = stage_builder(cfg)
    train = build(num_landmarks, size=size, train=tuple(str(s) for s in sources), batch=sc["batch_size"],
                  test_batch=test_batch or sc["test_batch_size"], freeze=m["freeze"],
                  dropout=m["dropout"], width=m["fc_width"])
    deploy = build(num_landmarks, size=size, deploy=True, width=m["fc_width"])
    return train, deploy


def write_net(net, path):
    write_atomic(path, str(net))
    return path
