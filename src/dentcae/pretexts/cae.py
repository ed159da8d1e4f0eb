"""The paper's pre-training: an AlexNet convolutional auto-encoder (CAE) reconstructs every
non-test image (Wang & Chu); its conv1-5 and fc6 then copy into a head (model.init: cae).

    net = build(0, cfg["model"], size=224, deploy=True)
    figures(cfg, run, prep, curves)        # reconstructions.png of two held-out samples

The encoder is BVLC AlexNet layer for layer (nets/alexnet.py). The decoder mirrors it with `dec_*`
layers: fully connected back to 256x6x6, a Reshape, then Deconvolutions mirroring conv5..conv1 with
stride-2 deconvolutions where the encoder pools (6 -> 13 -> 27 -> 55 -> 227), and a Crop to the
input's size when that is not 227. It trains on the prepared cae_train split (all images but the
test split's, annotated or not), 1/10 held out in cae_test.
"""
import json
from pathlib import Path

from ..config import load_config
from ..data.inputs import split_inputs
from ..data.prepare import prepare
from ..figures import plot_reconstructions
from ..nets.alexnet import encoder, fill, finish, inputs, params
from ..nets.infer import predict
from ..runtime.backend import get_caffe

STEM = "cae"
TITLE = "CAE"


def decoder(n, code, size, freeze, width=4096):
    """Mirror of the encoder from the 1000-d code back to a 3 x size x size reconstruction."""
    L = get_caffe().layers
    bottom = code
    for name, out in (("dec_fc7", width), ("dec_fc6", width), ("dec_pool5", 256 * 6 * 6)):
        wf, bf = fill()
        n[name] = L.InnerProduct(bottom, num_output=out, weight_filler=wf, bias_filler=bf,
                                 param=params(name, freeze))
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
        wf, bf = fill()
        n[name] = L.Deconvolution(bottom, param=params(name, freeze), convolution_param=dict(
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


def cae(size=224, train=None, batch=16, test_batch=16, deploy=False, freeze=(), dropout=0.5, width=4096):
    """AlexNet convolutional auto-encoder; train variant: `train` = (train list, test list)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train, batch, test_batch, label=None)
    code = encoder(n, set(freeze), "fc8", 1000, dropout, width)
    recon = decoder(n, code, size, set(freeze), width)
    if not deploy:
        # loss_weight 1/(3*size*size): the loss is half the mean squared error per input value
        n.loss = caffe.layers.EuclideanLoss(recon, n.data, loss_weight=1.0 / (3 * size * size))
    return finish(n, test, "AlexNet_CAE")


def build(k, model, **net):
    return cae(dropout=model["dropout"], width=model["fc_width"], **net)


def reconstruction_figure(run, prep, path):
    """Input vs reconstruction of a CAE run's first two held-out samples."""
    data = split_inputs(prep, "cae_test", limit=2)
    recon = predict(Path(run) / "deploy.prototxt", Path(run) / "final.caffemodel", data, batch=len(data))
    mean = prep.meta["mean_bgr"][0]
    plot_reconstructions(data[:, 0] + mean, recon.reshape(data.shape)[:, 0] + mean, path, f"CAE: {Path(run).name}")


def figures(cfg, run, prep, curves):
    reconstruction_figure(run, prep, run / "reconstructions.png")


def table_figures(run, stem):
    reconstruction_figure(run, prepare(load_config(run / "config.yaml")), f"{stem}_cae_reconstructions.png")


def table_lines(runs):
    """The CAE runs' wall time, for a table."""
    wall = [json.loads((r / "training.json").read_text())["wall_s"] for r in runs]
    return {"cae_wall_s": float(sum(wall))}, f"CAE pre-training: {sum(wall) / 60:.1f} min ({len(wall)} run(s)).\n"
