"""Which images to label first: an order of image groups from their features (pure numpy).

    feats = image_descriptors(greys)                       # (N, D), one row per image
    order = priority_order(feats_by_group, already=set())  # [group, ...], most useful first
    groups = read_selection("selection.csv")               # the order a `dentcae select` CSV gives

Rules (deterministic: the same features give the same order, nothing random):
- `kmedoids` (default): greedy k-medoids, i.e. facility location. Each next group is the one that
  most lowers the sum, over ALL images (labelled or not), of the distance to the nearest chosen or
  already-labelled group. Representative first, then diverse: the first pick is the medoid, later
  picks cover the parts of the distribution the chosen ones do not (SCP, CVPR 2022, reports
  representative picks beat random ones at few labels).
- `kcenter`: farthest point (k-center greedy) from the medoid: each next group is the one farthest
  from everything chosen; covers the outliers first.
Orders are nested by construction: the first 10 are among the first 25.

A group (one radiograph under several ids) is chosen whole; its feature is its images' mean.
Image descriptors: the image cut to its central square, resized to 32 x 32 (area averaging),
standardised (zero mean, unit variance), beside the same for its gradient magnitude; rows scaled to
unit length. Plain, model-free, and enough to tell a bright, tilted or cropped X-ray from the rest.
"""
import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np

from .dataset import DataError

RULES = ("kmedoids", "kcenter")
SIDE = 32


def _standard(a):
    a = a - a.mean()
    return a / max(float(a.std()), 1e-6)


def image_descriptor(grey):
    """One image's descriptor (see the module's docstring): a (2 * SIDE * SIDE,) float32 vector."""
    grey = np.asarray(grey, np.float32)
    if not np.isfinite(grey).all():
        raise DataError("an image with NaN or infinite pixels has no descriptor")
    h, w = grey.shape
    s = min(h, w)
    square = grey[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    small = cv2.resize(square, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    gx, gy = cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1)
    v = np.concatenate([_standard(small).ravel(), _standard(np.hypot(gx, gy)).ravel()])
    return (v / max(float(np.linalg.norm(v)), 1e-6)).astype(np.float32)


def image_descriptors(greys):
    return np.stack([image_descriptor(g) for g in greys])


def _distances(x):
    sq = (x ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))


def priority_order(features, already=(), rule="kmedoids"):
    """{group: (D,) feature, or (n, D) of its n images: their mean} -> the groups not in `already`,
    most useful first, by `rule`."""
    if rule not in RULES:
        raise DataError(f"selection rule must be one of {', '.join(RULES)}, got {rule!r}")
    names = sorted(features)
    if not names:
        return []
    x = np.stack([np.atleast_2d(np.asarray(features[n], np.float64)).mean(0) for n in names])
    if not np.isfinite(x).all():
        raise DataError("selection: a feature vector holds NaN or infinite values")
    d = _distances(x)
    chosen = [i for i, n in enumerate(names) if n in set(already)]
    near = d[:, chosen].min(1) if chosen else np.full(len(names), d.max() + 1.0)
    order, free = [], np.array([n not in set(already) for n in names])
    while free.any():
        if rule == "kcenter" and (chosen or order):
            score = np.where(free, near, -np.inf)
        else:
            score = np.where(free, np.maximum(near[:, None] - d, 0).sum(0), -np.inf)
        pick = int(np.argmax(score))            # ties: the first name in sorted order
        order.append(names[pick])
        free[pick] = False
        near = np.minimum(near, d[:, pick])
    return order


def read_selection(path):
    """The groups of a `dentcae select` CSV in priority order (rows sorted by `rank`)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        raise DataError(f"dataset.label_selection: cannot read {path} ({e.strerror})") from None
    if not rows or not {"rank", "image", "group"} <= set(rows[0]):
        raise DataError(f"{path}: not a selection file (expected the columns rank, image, group of `dentcae select`)")
    try:
        rows.sort(key=lambda r: int(r["rank"]))
    except ValueError:
        raise DataError(f"{path}: the rank column must hold whole numbers") from None
    return list(dict.fromkeys(r["group"] for r in rows))


def selection_key(dc):
    """{label_selection: a rule's name or the file's SHA-256} of a config's `dataset` section: what
    of a selection decides the prepared data; {} for random or no budget (the keys runs had before)."""
    selection = dc["label_selection"]
    if not dc["label_budget"] or selection == "random":
        return {}
    if selection in RULES:
        return {"label_selection": selection}
    try:
        return {"label_selection": hashlib.sha256(Path(selection).read_bytes()).hexdigest()}
    except OSError as e:
        raise DataError(f"dataset.label_selection: cannot read {selection} ({e.strerror}); give random, "
                        f"{', '.join(RULES)} or a CSV written by `dentcae select`") from None


def fill_budget(order, sizes, budget):
    """The first groups of `order` that fit `budget` images together (nested: a group that does not
    fit ends the run, as for random budgets). `sizes`: {group: images}."""
    kept, count = [], 0
    for g in order:
        if count + sizes[g] > budget:
            break
        kept.append(g)
        count += sizes[g]
    return kept
