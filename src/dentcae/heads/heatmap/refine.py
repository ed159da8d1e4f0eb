"""Coarse to fine: a second heatmap net on patches cut around each first estimate at a finer scale.

    fine = refine_config(cfg)                            # the `stage: refine` sub-run of a heatmap run
    train_src, test_src, n_train, n_test = patch_sources(fine, prep)
    per_view, values = refine_pass(forward, fine_crops(cfg, crops), coarse, r, mean_bgr, views)

The heatmap head sees the whole sample at prepare.input_size; on ISBI at 256 px an input pixel is
0.94 mm and a heatmap cell 3.75 mm, so its estimates are coarse. With `model.refine.patch` > 0 a
heatmap run trains a second net (the same encoder and head, the same initialisation) on
patch x patch crops of the sample resized to `refine.fine_size`, each centred on a landmark moved by
a Gaussian jitter (sd `refine.jitter` of the sample's side), rotated and scaled like prepare.augment's
copies, with its intensity changes. Its targets are the Gaussians of every landmark, in the patch's
frame (channel k is landmark k wherever it falls), so one net serves all landmarks. At inference the
patch of landmark k is centred on the first estimate and channel k, decoded near the centre
(heatmap.decode_near, weighted by a Gaussian with the training jitter's sd: where the net was
trained to look), is the refined estimate. `refine.passes` > 1 cuts the patches again around the
last estimates; `refine.tta_shift` adds patches moved by +-tta_shift fine pixels along each axis and
averages their heatmaps (a multiple of the stride, so their cells coincide); `refine.views` also
sees each patch rotated, scaled or shifted (views.py), each view's answer mapped back through its
matrix. All three are test-time settings: changing them retrains nothing (training_settings). Labels stay normalised sample
coordinates (prepare.py), so the evaluation maps them back to image pixels unchanged.
The patches live in a `patches-<hash>` folder inside the prepared-data cache entry. As a sub-run
plug-in (registry.py) this module trains the head's own net on them, at input size `refine.patch`.
"""
import copy
import hashlib
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from ...codecs import heatmap
from ...schema import ConfigError
from ...data.augment import DEFAULTS as AUGMENT_DEFAULTS, intensity
from ...data.geometry import resize_sample
from ...data.inputs import to_input, write_h5
from ...data.resampled import samples_at
from ...runtime.atomic import folder_once
from ...schema import check_views
from ...views import apply, compose, invert, is_identity, view_matrix
from .net import encoder_for, heatmap_net

CHUNK = 1024            # training patches per HDF5 file (Caffe's HDF5Data holds one file in memory)
TEST_PATCHES = 256      # at most this many test patches: the test loss only watches the training
VERSION = "1"
FLAT = 0.1              # a patch heatmap whose values span less than this is flat (no landmark seen)
TEST_TIME = ("passes", "tta_shift", "views")      # keys that change decoding, not training
CONFIG = {
    "patch": 0,                     # 0: off; else the patch side in pixels of the finer sample
    "fine_size": 768,               # the sample resized (as prepare.resize) to this side
    "draws": 4,                     # training patches per landmark and labelled sample
    "jitter": 0.02,                 # sd of a patch centre's offset from its landmark, of the side
    "max_iter": 600,                # the refine net's solver (the rest is solver's)
    "batch_size": 32,
    "passes": 1,                    # test time: passes, each re-centring on the last estimate
    "tta_shift": 0,                 # test time: 0, or also patches moved +-this many fine pixels
                                    # along each axis (a multiple of the stride, 4), averaged
    "views": [],                    # test time: each patch also seen through these views (views.py, in
                                    # patch pixels), each answer mapped back; the views' mean is kept
    "loss": "inside",               # inside (the recipe): the channels of the landmarks inside the patch;
                                    # all: every channel is a target (zeros where its landmark is not in
                                    # the patch; the default before 2026-12-07, 2.21 vs 1.95 mm on ISBI);
                                    # own: only the landmark the patch was cut for (read at test time)
}
STEM = "heatmaps"


def build(k, model, **net):
    """The head's own net on patches; its loss masked (heatmap_net's `masked`) to each patch's own landmark
    (refine.loss own), the landmarks inside it (inside), or the labelled ones (model.partial_labels)."""
    masked = (model["refine"]["loss"] != "all" or model["partial_labels"]) and not net.get("deploy")
    return heatmap_net(k, width=model["head_width"], head_lr=model["head_lr_mult"], masked=masked, **net)


def input_size(cfg):
    return cfg["model"]["refine"]["patch"]


def sources(cfg, prep):
    return patch_sources(cfg, prep)


def check_config(cfg):
    r = cfg["model"]["refine"]
    if r["patch"] and not 67 <= r["patch"] <= r["fine_size"]:
        raise ConfigError("config key 'model.refine.patch' must be 0 (off) or 67 (AlexNet's pool5 needs it) "
                          f"to refine.fine_size ({r['fine_size']}), got {r['patch']!r}")
    for key in ("fine_size", "draws", "max_iter", "batch_size", "passes"):
        if r[key] < 1:
            raise ConfigError(f"config key 'model.refine.{key}' must be at least 1, got {r[key]!r}")
    check_views(cfg, "model.refine.views")
    if r["loss"] not in ("all", "inside", "own"):
        raise ConfigError(f"config key 'model.refine.loss' must be all, inside or own, got {r['loss']!r}")
    if not 0 <= r["jitter"] < 0.5:
        raise ConfigError(f"config key 'model.refine.jitter' must be in [0, 0.5), got {r['jitter']!r}")
    if r["tta_shift"] < 0 or r["tta_shift"] % heatmap.STRIDE or (r["patch"] and r["tta_shift"] >= r["patch"] // 2):
        raise ConfigError(f"config key 'model.refine.tta_shift' must be 0 or a multiple of {heatmap.STRIDE} (the "
                          f"heatmap's stride) below half of model.refine.patch, got {r['tta_shift']!r}")


def enabled(cfg):
    m = cfg["model"]
    return cfg["stage"] == "finetune" and m["head"] == "heatmap" and m["refine"]["patch"] > 0


def refine_config(cfg):
    """The refine stage of a heatmap finetune config: run folder <run>/refine, the refine solver."""
    fine, r = copy.deepcopy(cfg), cfg["model"]["refine"]
    fine["runs_dir"], fine["name"], fine["stage"] = str(Path(cfg["runs_dir"]) / cfg["name"]), "refine", "refine"
    sc = fine["solver"]
    sc["stepsize"] = max(1, round(sc["stepsize"] * r["max_iter"] / sc["max_iter"]))
    sc["max_iter"], sc["batch_size"] = r["max_iter"], r["batch_size"]
    sc["snapshot"] = min(sc["snapshot"], r["max_iter"])
    sc["test_interval"] = min(sc["test_interval"], r["max_iter"])
    return fine


def fine_samples(cfg, prep, split):
    """((N, S, S) grey samples at refine.fine_size, (N, K, 2) normalised labels) of a split:
    each sample cut (and mirrored) from its image as prepare.py cuts it, resized to the finer size."""
    rows = [r for r in prep.samples() if int(r[split])]
    images = samples_at(cfg, rows, cfg["model"]["refine"]["fine_size"])
    with h5py.File(prep.h5(split), "r") as f:
        labels = f["label"][...].reshape(len(rows), -1, 2).astype(np.float64)
    return images, labels


def patch_matrix(centre, patch, angle=0.0, scale=1.0):
    """2x3 matrix from fine-sample pixels to patch pixels: `centre` lands on the patch's centre,
    rotated by `angle` degrees and scaled by `scale` about it."""
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[:, 2] += (patch - 1) / 2.0 - np.asarray(centre, np.float64)
    return m


def to_patch(labels, m, size, patch):
    """(K, 2) normalised sample labels -> normalised patch labels through the matrix m."""
    u = labels * size - 0.5
    return (u @ m[:, :2].T + m[:, 2] + 0.5) / patch


def cut(image, m, patch):
    return cv2.warpAffine(image, m, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def _draw(rng, image, labels, k, cfg, geometry=True):
    """One training patch around landmark k: (grey patch, (K, 2) patch labels)."""
    r, a = cfg["model"]["refine"], {**AUGMENT_DEFAULTS, **cfg["prepare"]["augment"]}
    size, patch = image.shape[0], r["patch"]
    sd = r["jitter"] * size
    centre = labels[k] * size - 0.5 + np.clip(rng.normal(0, sd, 2), -3 * sd, 3 * sd)
    angle = rng.uniform(-a["rotate_deg"], a["rotate_deg"]) if geometry else 0.0
    scale = rng.uniform(1 - a["scale"], 1 + a["scale"]) if geometry else 1.0
    m = patch_matrix(centre, patch, angle, scale)
    grey = cut(image, m, patch)
    return (intensity(rng, grey, a) if geometry else grey), to_patch(labels, m, size, patch)


def _write_patches(path, cfg, prep, grey, labels, own):
    """An HDF5 file of patches; `own` the landmark each was cut for (the loss mask of loss: own; inside
    masks the landmarks outside the patch; with partial labels an unlabelled landmark is masked)."""
    r, sigma = cfg["model"]["refine"], cfg["model"]["heatmap_sigma"]
    mask = None
    if r["loss"] == "own":
        mask = np.eye(len(labels[0]), dtype=np.float32)[own]
    elif r["loss"] == "inside" or cfg["model"]["partial_labels"]:    # `all`: only the unlabelled are masked
        points = np.stack(labels)
        inside = (points >= 0).all(-1) & (points <= 1).all(-1) if r["loss"] == "inside" else True
        mask = (np.isfinite(points).all(-1) & inside).astype(np.float32)
    write_h5(path, to_input(np.stack(grey), prep.meta["mean_bgr"]),
             np.stack(labels).reshape(len(labels), -1).astype(np.float32),
             encoder_for(r["patch"], sigma, mask))


def _write_split(tmp, out, cfg, prep, split, draws, geometry, limit=None):
    """Patches of a split, shuffled, in files of CHUNK, listed in tmp/<split>.txt; returns their count."""
    rng = np.random.default_rng(cfg["prepare"]["augment"]["seed"] + (split == "reg_test"))
    images, labels = fine_samples(cfg, prep, split)
    specs = [(i, k) for i in range(len(images)) for k in range(labels.shape[1]) for _ in range(draws)
             if np.isfinite(labels[i, k]).all()]              # a masked (unlabelled) landmark gets no patch
    specs = [specs[j] for j in rng.permutation(len(specs))][:limit]
    names = []
    for c in range(0, len(specs), CHUNK):
        drawn = [_draw(rng, images[i], labels[i], k, cfg, geometry) for i, k in specs[c:c + CHUNK]]
        names.append(f"{split}_{c // CHUNK}.h5")
        _write_patches(tmp / names[-1], cfg, prep, [g for g, _ in drawn], [lab for _, lab in drawn],
                       [k for _, k in specs[c:c + CHUNK]])
    (tmp / f"{split}.txt").write_text("".join(f"{(out / n).resolve()}\n" for n in names))
    return len(specs)


def patch_settings(cfg):
    r = cfg["model"]["refine"]
    own = {"loss": r["loss"]} if r["loss"] != "all" else {}      # (`all` keeps the cache key it had)
    own.update({"partial_labels": True} if cfg["model"]["partial_labels"] else {})
    return {"version": VERSION, "patch": r["patch"], "fine_size": r["fine_size"], "draws": r["draws"],
            "jitter": r["jitter"], "sigma": cfg["model"]["heatmap_sigma"], "augment": cfg["prepare"]["augment"],
            **own}


def patch_sources(cfg, prep):
    """(train source, test source, train count, test count) of the refine stage's patches, written
    once per prepared-data entry and patch settings."""
    settings = patch_settings(cfg)
    out = prep.dir / f"patches-{hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}"

    def write(tmp):
        n_train = _write_split(tmp, out, cfg, prep, "reg_train", settings["draws"], True)
        n_test = _write_split(tmp, out, cfg, prep, "reg_test", 1, False, TEST_PATCHES)
        (tmp / "patches.json").write_text(json.dumps({**settings, "counts": [n_train, n_test]}, indent=1))
    folder_once(out, "refinement patches", "patches.json", write)
    n_train, n_test = json.loads((out / "patches.json").read_text())["counts"]
    return out / "reg_train.txt", out / "reg_test.txt", n_train, n_test


def shifts(r):
    """Test-time patch offsets (fine pixels): the centre alone, or also +-tta_shift along each axis."""
    d = r["tta_shift"]
    return [(0, 0)] if d == 0 else [(0, 0), (d, 0), (-d, 0), (0, d), (0, -d)]


def averaged_heatmap(hms, offsets):
    """(canvas, margin): the mean of heatmaps of patches moved by `offsets` (fine pixels, multiples
    of the stride, so their cells coincide), on the unmoved patch's grid grown by `margin` cells."""
    hms = np.asarray(hms, np.float64)
    margin = max(abs(v) for o in offsets for v in o) // heatmap.STRIDE
    h, w = hms.shape[-2:]
    total, count = np.zeros((2, h + 2 * margin, w + 2 * margin))
    for hm, (dx, dy) in zip(hms, offsets):
        x, y = margin + dx // heatmap.STRIDE, margin + dy // heatmap.STRIDE
        total[y:y + h, x:x + w] += hm
        count[y:y + h, x:x + w] += 1
    return total / np.maximum(count, 1), margin


def decode_in_patch(hm, at, search, margin=0):
    """(patch pixel (x, y), the heatmap's value there) of a patch's channel `hm` (grown by `margin` cells
    per side) decoded near the estimate `at` with decode_near's Gaussian of sd `search` patch pixels."""
    cell = (np.asarray(at, np.float64) - heatmap.OFFSET) / heatmap.STRIDE + margin
    hm = np.asarray(hm, np.float64)
    x, y = heatmap.decode_near(hm, cell, search / heatmap.STRIDE)
    return heatmap.STRIDE * (np.array([x, y]) - margin) + heatmap.OFFSET, heatmap.value_at(hm, x, y)


def _view_matrices(centre, patch, views):
    """2x3 matrices, fine-sample pixels -> patch pixels, of the patch on `centre` in each view (views.py)."""
    base = patch_matrix(centre, patch)
    return [base if is_identity(v) else compose(view_matrix(v, patch), base) for v in views]


def _shifted(m, offset):
    """The patch of matrix m moved by `offset` fine pixels (its content moves the other way)."""
    return np.asarray(m, np.float64) - np.hstack([np.zeros((2, 2)), np.reshape(offset, (2, 1))])


def refine_pass(forward, images, estimates, r, mean_bgr, views=({},)):
    """One pass over fine samples: each landmark's patch centred on its estimate, seen in each view
    (and moved by the tta_shift offsets, whose heatmaps are averaged), channel k decoded near the
    estimate and mapped back through the view's matrix. `forward` runs the refine net on input
    arrays. Returns ((V, N, K, 2) refined labels per view, (N, K) heatmap values there averaged over
    the views, NaN where channel k is flat in every view: a channel that never learned its landmark
    keeps the estimate)."""
    size, patch, offsets = r["fine_size"], r["patch"], shifts(r)
    out = np.empty((len(views),) + estimates.shape)
    values = np.full((len(views),) + estimates.shape[:2], np.nan)
    for i, (image, labels) in enumerate(tqdm(list(zip(images, estimates)), desc="refine", unit="sample",
                                             leave=False, disable=len(images) < 2)):
        centres = labels * size - 0.5
        mats = [_view_matrices(c, patch, views) for c in centres]
        grey = [cut(image, _shifted(m, o), patch) for row in mats for m in row for o in offsets]
        hms = forward(to_input(np.stack(grey), mean_bgr))
        hms = hms.reshape(len(centres), len(views), len(offsets), *hms.shape[1:])
        for k, c in enumerate(centres):
            for j, m in enumerate(mats[k]):
                canvas, margin = averaged_heatmap(hms[k, j, :, k], offsets)
                search = r["jitter"] * size * float(np.hypot(*m[0, :2]))       # the view's scale
                q, value = decode_in_patch(canvas, apply(m, c), search, margin)
                out[j, i, k] = (apply(invert(m), q) + 0.5) / size
                values[j, i, k] = value if canvas.max() - canvas.min() >= FLAT else np.nan
    seen = np.isfinite(values).sum(0)
    return out, np.where(seen > 0, np.nansum(values, 0) / np.maximum(seen, 1), np.nan)


def fine_crops(cfg, crops):
    """Sample crops (cut and mirrored as prepare.py cuts them) resized to refine.fine_size."""
    size, mode = cfg["model"]["refine"]["fine_size"], cfg["prepare"]["resize"]
    return np.stack([resize_sample(c, size, mode)[0] for c in crops]).astype(np.float32)
