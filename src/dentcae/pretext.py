"""The paper's other unsupervised pre-training: name the augmentation an image went through.

    data, labels = transformed_copies(gray, ["identity", "rot90", "hflip", "gamma"])
    train_src, test_src, n_train, n_test = pretext_sources(cfg, prep)

Wang & Chu's Method section: "augment the un-annotated data in multiple ways, annotate the data with
its augment method, fine-tune the ImageNet CNN to classify the augment method". Every pre-training
sample (the CAE's splits: all images, annotated or not, 1/10 held out) is written once per method in
`model.pretext_methods`, labelled with the method's index, sample-major (a sample's K copies are
neighbours). The files live in a `pretext-<hash>` folder inside the prepared-data cache entry, built
in a temporary folder and renamed when complete.
"""
import hashlib
import json

import cv2
import h5py
import numpy as np

from .atomic import folder_once
from .prepare import to_input, write_h5

# name -> transform of one grey sample (S x S, 0..255, square so rotations keep the shape)
METHODS = {
    "identity": lambda g: g,
    "rot90": lambda g: np.rot90(g, 1),
    "rot180": lambda g: np.rot90(g, 2),
    "rot270": lambda g: np.rot90(g, 3),
    "hflip": lambda g: g[:, ::-1],
    "vflip": lambda g: g[::-1, :],
    "gamma": lambda g: 255.0 * (np.clip(g, 0, 255) / 255.0) ** 2.0,         # strong darkening
    "invert": lambda g: 255.0 - g,
    "blur": lambda g: cv2.GaussianBlur(np.ascontiguousarray(g, np.float32), (0, 0), 0.02 * g.shape[0]),
}


def check_methods(methods):
    """The configured method list, refused when unknown, repeated or shorter than 4."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"model.pretext_methods: unknown method(s) {unknown}; known: {sorted(METHODS)}")
    if len(set(methods)) != len(methods) or len(methods) < 4:
        raise ValueError(f"model.pretext_methods needs at least 4 distinct methods, got {methods}")
    return list(methods)


def transformed_copies(gray, methods):
    """(N*K, S, S) float32 copies, sample-major, and their (N*K,) float32 method indices."""
    data = np.empty((len(gray) * len(methods),) + gray.shape[1:], np.float32)
    for i, g in enumerate(gray):
        for k, name in enumerate(methods):
            data[i * len(methods) + k] = METHODS[name](g)
    labels = np.tile(np.arange(len(methods), dtype=np.float32), len(gray))
    return data, labels


def _write_split(prep, split, methods, path):
    """One pretext split from a prepared CAE split; returns its sample count."""
    bgr = np.asarray(prep.meta["mean_bgr"], np.float32)
    with h5py.File(prep.h5(split), "r") as f:
        gray = f["data"][:, 0] + bgr[0]            # the stored input is grey, replicated, mean-subtracted
    data, labels = transformed_copies(gray, methods)
    write_h5(path, to_input(data, bgr), labels)
    return len(labels)


def pretext_dir(prep, methods):
    key = hashlib.sha256(json.dumps(methods).encode()).hexdigest()[:12]
    return prep.dir / f"pretext-{key}"


def pretext_sources(cfg, prep):
    """(train source, test source, train count, test count) of the augmentation pretext, written
    once per prepared-data entry and method list."""
    methods = check_methods(cfg["model"]["pretext_methods"])
    out = pretext_dir(prep, methods)

    def write(tmp):
        counts = {split: _write_split(prep, f"cae_{split}", methods, f"{tmp}/{split}.h5") for split in ("train", "test")}
        for split in counts:
            (tmp / f"{split}.txt").write_text(f"{(out / f'{split}.h5').resolve()}\n")
        (tmp / "pretext.json").write_text(json.dumps({"methods": methods, "counts": counts}, indent=1))
    folder_once(out, "pretext data", "pretext.json", write)
    counts = json.loads((out / "pretext.json").read_text())["counts"]
    return out / "train.txt", out / "test.txt", counts["train"], counts["test"]


def confusion(truth, named, k):
    """(k, k) counts: row = the method applied, column = the method the net named."""
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (np.asarray(truth, int), np.asarray(named, int)), 1)
    return matrix
