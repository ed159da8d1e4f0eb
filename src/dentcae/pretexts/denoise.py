"""Dense pre-training of the heatmap detector itself: its encoder (conv1-5) and decoder (nets/fcn.py,
the head's layer names) learn to reconstruct clean images from corrupted ones, on every non-test
image (annotated or not) at the detector's own input geometry. Every layer but the detector's last
(`heatmaps`) then copies into the heatmap head (model.init: denoise, model.copy_layers).

    net = build(0, cfg["model"], size=256, deploy=True)      # output `dn_reconstruction`, stride 4
    train_list, test_list, n_train, n_test = sources(cfg, prep)

Corruption (model.denoise): squares of `mask_patch` pixels filled with the image's mean grey until
about `mask_fraction` of it is hidden, then Gaussian noise of sd `noise` grey levels; `copies`
corrupted copies per pre-training sample (one per held-out sample). The target is the clean image on
the decoder's grid (input pixel 4p + 5, after a Gaussian blur of sd 2 px), mean-subtracted and
divided by 64. The files live in a `denoise-<hash>` folder of the prepared-data entry.
"""
import hashlib
import json
from pathlib import Path

import cv2
import h5py
import numpy as np

from ..config import load_config
from ..data.inputs import split_inputs, to_input, write_h5
from ..data.prepare import prepare
from ..figures import plot_reconstructions
from ..nets.alexnet import conv, finish, inputs
from ..nets.fcn import encoder_decoder
from ..nets.infer import predict
from ..runtime.atomic import folder_once
from ..runtime.backend import get_caffe
from ..schema import check_range

STEM = "denoise"
TITLE = "dense denoising"
CONFIG = {"denoise": {"mask_fraction": 0.25, "mask_patch": 16, "noise": 10.0, "copies": 2, "seed": 0}}
SCALE = 64.0            # target grey levels per unit
STRIDE, OFFSET = 4, 5


def denoiser(size=256, train=None, batch=8, test_batch=8, deploy=False, freeze=(), width=128, head_lr=1):
    """The heatmap detector's encoder and decoder with a one-channel output `dn_reconstruction`,
    trained with a Euclidean loss (per output pixel) against the clean image (HDF5 `label`)."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train, batch, test_batch)
    top = encoder_decoder(n, size, set(freeze), width, head_lr)
    conv(n, "dn_reconstruction", top, 1, 1, set(freeze), std=0.001, relu=False, lr=head_lr)
    if not deploy:
        side = (size - 11) // STRIDE + 1
        n.loss = caffe.layers.EuclideanLoss(n.dn_reconstruction, n.label, loss_weight=1.0 / side ** 2)
    return finish(n, test, "AlexNet_denoise")


def build(k, model, **net):
    return denoiser(width=model["head_width"], head_lr=model["head_lr_mult"], **net)


def check_config(cfg):
    for key, low, high in (("mask_fraction", 0, 0.9), ("mask_patch", 1, 512), ("noise", 0, 255),
                           ("copies", 1, 100), ("seed", 0, None)):
        check_range(cfg, f"model.denoise.{key}", low, high)


def corrupt(rng, grey, d):
    """A corrupted copy of one grey sample: masked squares (the image's mean grey), then noise."""
    out = grey.astype(np.float32).copy()
    size, p = grey.shape[0], d["mask_patch"]
    for _ in range(int(round(d["mask_fraction"] * size * size / (p * p)))):
        y, x = rng.integers(0, max(size - p, 1), 2)
        out[y:y + p, x:x + p] = grey.mean()
    return np.clip(out + rng.normal(0, d["noise"], out.shape), 0, 255).astype(np.float32)


def target(grey, mean):
    """The clean sample on the decoder's grid (input pixel 4p + 5), blurred, in units of SCALE."""
    side = (grey.shape[0] - 11) // STRIDE + 1
    smooth = cv2.GaussianBlur(np.ascontiguousarray(grey, np.float32), (0, 0), 2.0)
    return (smooth[OFFSET::STRIDE, OFFSET::STRIDE][:side, :side] - mean) / SCALE


def _write_split(prep, split, d, path):
    bgr = np.asarray(prep.meta["mean_bgr"], np.float32)
    grey = split_inputs(prep, f"cae_{split}")[:, 0] + bgr[0]
    rng = np.random.default_rng(d["seed"] + (split == "test"))
    copies = d["copies"] if split == "train" else 1
    noisy = [corrupt(rng, g, d) for g in grey for _ in range(copies)]
    clean = [target(g, bgr[0]) for g in grey for _ in range(copies)]
    write_h5(path, to_input(np.stack(noisy), bgr), np.stack(clean)[:, None].astype(np.float32))
    return len(noisy)


def sources(cfg, prep):
    """(train list, test list, counts) of the corrupted copies, written once per prepared-data entry
    and corruption settings."""
    d = cfg["model"]["denoise"]
    key = hashlib.sha256(json.dumps({"version": 1, **d}, sort_keys=True).encode()).hexdigest()[:12]
    out = prep.dir / f"denoise-{key}"

    def write(tmp):
        counts = {split: _write_split(prep, split, d, tmp / f"{split}.h5") for split in ("train", "test")}
        for split in counts:
            (tmp / f"{split}.txt").write_text(f"{(out / f'{split}.h5').resolve()}\n")
        (tmp / "denoise.json").write_text(json.dumps({**d, "counts": counts}, indent=1))
    folder_once(out, "denoising data", "denoise.json", write)
    counts = json.loads((out / "denoise.json").read_text())["counts"]
    return out / "train.txt", out / "test.txt", counts["train"], counts["test"]


def reconstruction_figure(cfg, run, prep, path):
    """Corrupted input and reconstruction of two held-out samples."""
    _, test_list, _, _ = sources(cfg, prep)
    with h5py.File(Path(test_list).parent / "test.h5", "r") as f:
        data = f["data"][:2]
    recon = predict(Path(run) / "deploy.prototxt", Path(run) / "final.caffemodel", data, batch=len(data))
    mean = prep.meta["mean_bgr"][0]
    plot_reconstructions(data[:, 0] + mean, recon[:, 0] * SCALE + mean, path, f"denoising: {Path(run).name}")


def figures(cfg, run, prep, curves):
    reconstruction_figure(cfg, run, prep, run / "reconstructions.png")


def table_figures(run, stem):
    cfg = load_config(run / "config.yaml")
    reconstruction_figure(cfg, run, prepare(cfg), f"{stem}_denoise_reconstructions.png")


def table_lines(runs):
    wall = sum(json.loads((r / "training.json").read_text())["wall_s"] for r in runs)
    return {"denoise_wall_s": float(wall)}, f"Dense denoising pre-training: {wall / 60:.1f} min ({len(runs)} run(s)).\n"
