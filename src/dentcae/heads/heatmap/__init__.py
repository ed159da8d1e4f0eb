"""Our head: AlexNet conv1-5 and a fully convolutional decoder to one Gaussian heatmap per
landmark (codecs/heatmap.py is its codec), then, with `model.refine.patch` > 0, a refine net on
finer patches around each estimate (refine.py: this head's sub-run, trained in <run>/refine).

    net = build(19, cfg["model"], size=256, deploy=True)           # `heatmaps`: 19 x 63 x 63
    labels = decode(outputs, 256, train_labels)                     # shape-prior decoding
    after = after_first_net(cfg, forwards, crops, labels, confidence, mean_bgr)   # the refine net's passes

conv5 (stride 16) is upsampled twice by stride-2 deconvolutions, fused with 1x1 projections of
conv2 and conv1, to heatmaps at stride 4, trained with a Euclidean loss against the codec's targets.
"""
import numpy as np

from ...codecs import heatmap as codec
from ...schema import check_range
from ...views import with_identity
from . import consistency, refine
from .consistency import training_hooks  # noqa: F401 (this head's hook)
from .net import build, encoder_for, heatmap_net  # noqa: F401 (build is this head's hook)

STEM = "heatmaps"
CONFIG = {
    "head_width": 128,                  # channels after conv5 (half after conv2)
    "head_lr_mult": 1.0,                # learning-rate multiplier of the head's layers
    "heatmap_sigma": 2.0,               # target Gaussian sigma in heatmap pixels
    "refine": refine.CONFIG,            # the refine net (refine.py); patch 0: off
    "partial_labels": False,            # train on images with some landmarks unlabelled (pseudo-labels):
                                        # those are masked out of the loss (heatmap_mask)
    "consistency": consistency.CONFIG,  # the first net also learns from unlabelled images (consistency.py)
}
SUBRUNS = {"refine": refine}
SUBRUN_KEYS = ("refine",)
TEST_TIME_KEYS = tuple(f"model.refine.{k}" for k in refine.TEST_TIME)
SCHEDULE_KEYS = ("model.refine.max_iter",)


def outputs(k):
    return k, "heatmaps"


def targets(cfg):
    m = cfg["model"]
    partial = {"partial_labels": True} if m["partial_labels"] else {}     # (off keeps the cache key it had)
    return (encoder_for(cfg["prepare"]["input_size"], m["heatmap_sigma"], "labelled" if partial else None),
            {"head": "heatmap", "heatmap_sigma": m["heatmap_sigma"], **partial})


def partial_labels(cfg):
    """Whether images with some landmarks unlabelled train (their missing landmarks masked)."""
    return bool(cfg["model"]["partial_labels"])


def decode(outputs, size, train_labels):
    """Sub-pixel argmaxes, far-off ones re-decoded near where the training shape puts them."""
    return codec.decode_with_prior(outputs, size, codec.ShapePrior(train_labels))


def alternative_decodings(outputs, size, train_labels):
    """The plain argmax decoding, scored beside: what the shape prior changed."""
    return {"argmax_decoding": codec.decode(outputs, size)}


def check_config(cfg):
    for key, low, high in (("model.head_width", 1, 4096), ("model.head_lr_mult", 1e-6, 1e6),
                           ("model.heatmap_sigma", 0.25, 32)):
        check_range(cfg, key, low, high)
    refine.check_config(cfg)
    consistency.check_config(cfg)


def subruns(cfg):
    return {"refine": refine.refine_config(cfg)} if refine.enabled(cfg) else {}


def confidence(outputs, labels, size):
    """(N, K) the first net's heatmap value at its estimates `labels` (of the same view), in [0, 1]:
    targets are Gaussians of height 1, so it is near 1 where the net sees its landmark clearly."""
    return np.clip(codec.values_at_labels(outputs, labels, size), 0, 1)


def after_first_net(cfg, forwards, crops, labels, confidence, mean_bgr):
    """What follows the first net on sample crops (cut and mirrored as prepare.py cuts them), from
    its estimates `labels` and `confidence`: with a refine net, its passes over the crops at
    refine.fine_size in every view of model.refine.views (refine.py), and as confidence the refine
    heatmap's value at each final estimate, averaged over the views (the first net's where the refine
    channel is flat, so it left the estimate alone). Returns {"passes": [(N, K, 2) per pass],
    "views": (V, N, K, 2) the last pass's estimate per view, or None without a refine net,
    "confidence": (N, K)}."""
    if not refine.enabled(cfg):
        return {"passes": [], "views": None, "confidence": confidence}
    images, r = refine.fine_crops(cfg, crops), cfg["model"]["refine"]
    views, passes = with_identity(r["views"]), []
    for _ in range(r["passes"]):
        per_view, values = refine.refine_pass(forwards["refine"], images, labels, r, mean_bgr, views)
        labels = per_view.mean(0)
        passes.append(labels)
    return {"passes": passes, "views": per_view,
            "confidence": np.clip(np.where(np.isfinite(values), values, confidence), 0, 1)}
