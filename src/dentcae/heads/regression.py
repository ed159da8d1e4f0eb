"""The paper's head: AlexNet with fc8 replaced by `fc8_landmarks`, regressing the 2K normalised
coordinates of K landmarks with a Euclidean loss (Wang & Chu).

    net = build(4, cfg["model"], size=224, deploy=True)     # fc8_landmarks: 8 outputs
    labels = decode(outputs, 224, train_labels)             # (N, 4, 2): the outputs themselves

Its labels are its targets, so prepare stores nothing more; decoding is a reshape.
"""
import numpy as np

from ..nets.alexnet import encoder, finish, inputs
from ..runtime.backend import get_caffe

STEM = "landmarks"
TOP_STD = 0.001        # fc8_landmarks starts near 0 against labels in [0, 1]


def regressor(num_outputs=8, size=224, train=None, batch=16, test_batch=16, deploy=False,
              freeze=(), dropout=0.5, width=4096):
    """AlexNet with fc8 replaced by `fc8_landmarks` (num_outputs = 2 x landmarks) and EuclideanLoss."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train, batch, test_batch)
    out = encoder(n, set(freeze), "fc8_landmarks", num_outputs, dropout, width, top_std=TOP_STD)
    if not deploy:
        n.loss = caffe.layers.EuclideanLoss(out, n.label)
    return finish(n, test, "AlexNet_landmarks")


def build(k, model, **net):
    return regressor(2 * k, dropout=model["dropout"], width=model["fc_width"], **net)


def outputs(k):
    return 2 * k, "values"


def targets(cfg):
    return None, {}


def decode(outputs, size, train_labels):
    return np.asarray(outputs, float).reshape(len(outputs), -1, 2)
