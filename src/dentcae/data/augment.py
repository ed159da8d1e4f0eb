"""Augmentation for fine-tuning, Caffe-style: N transformed copies of each training sample, written
into the HDF5 beside the originals (Caffe's data layers do no geometric augmentation).

    images, labels = augment(gray, labels, copies=8, settings=cfg["prepare"]["augment"], seed=0)

Each copy gets a random similarity transform about the sample's centre (rotation, scale, shift) and
a random intensity change (gamma, contrast, Gaussian noise). Landmarks go through the same matrix, in
the normalised crop coordinates of prepare.py (input pixel u <-> (u + 0.5) / size); a draw that
would push a landmark out of the sample is drawn again. The test split is never augmented.
"""
import cv2
import numpy as np

DEFAULTS = {"copies": 0, "rotate_deg": 10.0, "scale": 0.1, "shift": 0.05, "gamma": 0.25,
            "contrast": 0.2, "noise": 2.0, "seed": 0}


def random_affine(rng, size, s):
    """2x3 matrix: rotate by +-rotate_deg and scale by 1 +- scale about the centre, shift by
    +-shift of the size."""
    angle = rng.uniform(-s["rotate_deg"], s["rotate_deg"])
    scale = rng.uniform(1 - s["scale"], 1 + s["scale"])
    c = (size - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), angle, scale)
    m[:, 2] += rng.uniform(-s["shift"], s["shift"], 2) * size
    return m


def transform_labels(labels, m, size):
    """(K, 2) normalised labels through the 2x3 pixel matrix m."""
    u = labels * size - 0.5
    moved = u @ m[:, :2].T + m[:, 2]
    return (moved + 0.5) / size


def intensity(rng, img, s):
    """Gamma, contrast about the mean, additive Gaussian noise; 0..255 in and out."""
    g = np.exp(rng.uniform(-s["gamma"], s["gamma"]))
    out = 255.0 * (np.clip(img, 0, 255) / 255.0) ** g
    c = rng.uniform(1 - s["contrast"], 1 + s["contrast"])
    out = (out - out.mean()) * c + out.mean()
    out = out + rng.normal(0, s["noise"], out.shape)
    return np.clip(out, 0, 255).astype(np.float32)


def augment_one(rng, img, labels, s, tries=20):
    """One transformed copy of an (S, S) grey image and its (K, 2) labels."""
    size = img.shape[0]
    for _ in range(tries):
        m = random_affine(rng, size, s)
        moved = transform_labels(labels, m, size)
        if np.all(np.isnan(moved) | ((moved >= 0) & (moved <= 1))):      # NaN: a masked landmark
            break
    else:                                   # every draw left the sample: keep the geometry as is
        m, moved = np.float64([[1, 0, 0], [0, 1, 0]]), labels
    warped = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    return intensity(rng, warped, s), moved


def augment(gray, labels, copies, settings, seed=0):
    """(n, S, S) grey samples and (n, K, 2) labels -> (n * copies, ...) copies, sample-major."""
    s = {**DEFAULTS, **settings}
    rng = np.random.default_rng(seed)
    images, moved = [], []
    for img, lab in zip(gray, labels):
        for _ in range(copies):
            a, b = augment_one(rng, img, lab, s)
            images.append(a)
            moved.append(b)
    return np.stack(images).astype(np.float32), np.stack(moved)
