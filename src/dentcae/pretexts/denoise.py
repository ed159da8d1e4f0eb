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

`objective: noise` is the many-level, DDPM-style variant (Ho et al. 2020; Di Via et al. 2025): no
masks; each copy draws one of `steps` evenly spaced steps t of DDPM's 1000-step linear schedule
(beta 1e-4 to 0.02), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps on the image
scaled to [-1, 1], up to nearly pure noise; the target is eps on the decoder's grid (blurred as the
clean target, rescaled to unit sd). The net is not told t: it must judge the noise level itself.
"""
import hashlib
import json
from pathlib import Path

import cv2
import h5py
import numpy as np

from ..config import ConfigError, load_config
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
CONFIG = {"denoise": {"mask_fraction": 0.25, "mask_patch": 16, "noise": 10.0, "copies": 2, "seed": 0,
                      "objective": "clean", "steps": 1000}}
OBJECTIVES = ("clean", "noise")
BLUR = 2.0              # sd in input pixels of the blur before the target is sampled on the grid
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
                           ("copies", 1, 100), ("seed", 0, None), ("steps", 1, 1000)):
        check_range(cfg, f"model.denoise.{key}", low, high)
    if cfg["model"]["denoise"]["objective"] not in OBJECTIVES:
        raise ConfigError(f"config key 'model.denoise.objective' must be one of {', '.join(OBJECTIVES)}, "
                          f"got {cfg['model']['denoise']['objective']!r}")


def corrupt(rng, grey, d):
    """A corrupted copy of one grey sample: masked squares (the image's mean grey), then noise."""
    out = grey.astype(np.float32).copy()
    size, p = grey.shape[0], d["mask_patch"]
    for _ in range(int(round(d["mask_fraction"] * size * size / (p * p)))):
        y, x = rng.integers(0, max(size - p, 1), 2)
        out[y:y + p, x:x + p] = grey.mean()
    return np.clip(out + rng.normal(0, d["noise"], out.shape), 0, 255).astype(np.float32)


def on_grid(image):
    """`image` blurred (sd BLUR px) and sampled at the decoder's grid (input pixel 4p + 5)."""
    side = (image.shape[0] - 11) // STRIDE + 1
    smooth = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32), (0, 0), BLUR)
    return smooth[OFFSET::STRIDE, OFFSET::STRIDE][:side, :side]


def target(grey, mean):
    """The clean sample on the decoder's grid, blurred, in units of SCALE."""
    return (on_grid(grey) - mean) / SCALE


def alpha_bar(steps):
    """DDPM's cumulative signal share abar_t at `steps` evenly spaced steps of its 1000 (linear betas
    1e-4 to 0.02): the same noise levels, from nearly none to nearly pure noise, fewer of them."""
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    return abar[np.round(np.linspace(0, 999, steps)).astype(int)]


def diffuse(rng, grey, abar):
    """(x_t in grey levels, eps target on the grid): one forward-diffusion sample at a uniform step."""
    a = abar[rng.integers(0, len(abar))]
    eps = rng.standard_normal(grey.shape).astype(np.float32)
    x = np.sqrt(a) * (grey / 127.5 - 1) + np.sqrt(1 - a) * eps
    return ((x + 1) * 127.5).astype(np.float32), on_grid(eps) * (2 * BLUR * np.sqrt(np.pi))


def _write_split(prep, split, d, path):
    bgr = np.asarray(prep.meta["mean_bgr"], np.float32)
    grey = split_inputs(prep, f"cae_{split}")[:, 0] + bgr[0]
    rng = np.random.default_rng(d["seed"] + (split == "test"))
    copies = d["copies"] if split == "train" else 1
    if d["objective"] == "noise":
        abar = alpha_bar(d["steps"])
        noisy, clean = zip(*[diffuse(rng, g, abar) for g in grey for _ in range(copies)])
    else:
        noisy = [corrupt(rng, g, d) for g in grey for _ in range(copies)]
        clean = [target(g, bgr[0]) for g in grey for _ in range(copies)]
    write_h5(path, to_input(np.stack(noisy), bgr), np.stack(clean)[:, None].astype(np.float32))
    return len(noisy)


def sources(cfg, prep):
    """(train list, test list, counts) of the corrupted copies, written once per prepared-data entry
    and corruption settings."""
    d = cfg["model"]["denoise"]
    same = {k: v for k, v in d.items() if d["objective"] == "noise" or k not in ("objective", "steps")}
    key = hashlib.sha256(json.dumps({"version": 1, **same}, sort_keys=True).encode()).hexdigest()[:12]
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
    """Corrupted input and reconstruction (or predicted noise) of two held-out samples."""
    _, test_list, _, _ = sources(cfg, prep)
    with h5py.File(Path(test_list).parent / "test.h5", "r") as f:
        data = f["data"][:2]
    recon = predict(Path(run) / "deploy.prototxt", Path(run) / "final.caffemodel", data, batch=len(data))
    mean = prep.meta["mean_bgr"][0]
    if cfg["model"]["denoise"]["objective"] == "noise":      # the predicted noise, in sd units around mid-grey
        shown, what = recon[:, 0] * 40 + 128, "predicted noise"
    else:
        shown, what = recon[:, 0] * SCALE + mean, "denoising"
    plot_reconstructions(data[:, 0] + mean, shown, path, f"{what}: {Path(run).name}")


def figures(cfg, run, prep, curves):
    reconstruction_figure(cfg, run, prep, run / "reconstructions.png")


def table_figures(run, stem):
    cfg = load_config(run / "config.yaml")
    reconstruction_figure(cfg, run, prepare(cfg), f"{stem}_denoise_reconstructions.png")


def table_lines(runs):
    wall = sum(json.loads((r / "training.json").read_text())["wall_s"] for r in runs)
    return {"denoise_wall_s": float(wall)}, f"Dense denoising pre-training: {wall / 60:.1f} min ({len(runs)} run(s)).\n"
