"""What an encoder sees in an image: one feature vector per image, for choosing which images to
label (annotation/select.py).

    feats = encoder_features(model_encoder(model), greys)             # a trained detector's first net
    feats = encoder_features(pretraining_encoder("runs/cae"), greys)  # a pre-training (CAE, pretext, ...)

The encoder reads each image as prediction does (its samples, resized to the net's input, mean
subtracted); the vector is its deepest feature map (nets/infer.deepest_map: the encoder's end)
averaged over positions, then over the image's samples (both halves of a bilateral image), scaled to
unit length. A pre-training's encoder needs no label at all: the self-supervised features that
choosing images to label was first shown with.
"""
from collections import namedtuple
from pathlib import Path

import numpy as np

from ..config import ConfigError, load_config
from ..data.geometry import resize_sample
from ..data.inputs import to_input
from ..data.prepare import configured_dataset, prepare
from ..nets.infer import deepest_map, load_net, net_shapes, run_net
from ..nets.transfer import mismatches
from ..runtime.backend import set_device
from .detector import cut_samples
from .model import ModelError

Encoder = namedtuple("Encoder", "deploy weights input_size resize mean_bgr layout")


def model_encoder(model):
    """The Encoder of a Model's (a run's or a bundle's) first member's first net."""
    member = model.members[0]
    return Encoder(member.nets["first"]["prototxt"], member.nets["first"]["caffemodel"], member.input_size,
                   member.resize, member.mean_bgr, model.layout)


def is_pretraining_run(path):
    """Whether `path` is a pre-training's run folder (its config.yaml says stage: pretrain)."""
    try:
        return (Path(path) / "config.yaml").is_file() and load_config(Path(path) / "config.yaml")["stage"] == "pretrain"
    except ConfigError:
        return False


def pretraining_encoder(run):
    """The Encoder of a finished pre-training run folder: its deploy net and final weights, the input
    geometry and mean of the data it was prepared from."""
    run = Path(run)
    cfg = load_config(run / "config.yaml")
    if cfg["stage"] != "pretrain":
        raise ModelError(f"{run}: a {cfg['stage']} run, not a pre-training")
    weights = run / "final.caffemodel"
    if not weights.is_file():
        raise ModelError(f"{run}: the pre-training has not finished (no final.caffemodel); "
                         "finish it (dentcae pretrain ... --resume) or give another run")
    problems = mismatches(net_shapes(run / "deploy.prototxt")[0], weights)
    if problems:
        raise ModelError(f"{weights} does not fit {run / 'deploy.prototxt'}: " + "; ".join(problems))
    meta = prepare(cfg).meta
    return Encoder(run / "deploy.prototxt", weights, meta["input_size"], meta["resize"], meta["mean_bgr"],
                   configured_dataset(cfg).layout)


def encoder_features(encoder, greys, gpu=None, progress=lambda xs: xs):
    """(N, C) float32 of the images `greys` (grey pixels in [0, 255])."""
    set_device(gpu)
    net = load_net(encoder.deploy, encoder.weights)
    blob, out = deepest_map(net), []
    for grey in progress(greys):
        samples = [resize_sample(crop, encoder.input_size, encoder.resize)[0]
                   for _, crop, _ in cut_samples(np.asarray(grey, np.float32), encoder.layout)]
        maps = run_net(net, to_input(np.stack(samples).astype(np.float32), encoder.mean_bgr), blob=blob)
        v = maps.mean(axis=(2, 3)).mean(0)
        out.append(v / max(float(np.linalg.norm(v)), 1e-9))
    return np.stack(out).astype(np.float32)
