"""What the nets read: grey samples as mean-subtracted 3-channel input, and the HDF5 files of
Caffe's HDF5Data layer (datasets `data`, `label` and a head's target datasets).

    write_h5("reg_train.h5", to_input(grey, mean_bgr), labels, targets)
    data = split_inputs(prepared, "reg_test")             # (N, 3, S, S) float32
    labels = split_labels(prepared, "reg_train")          # (N, K, 2) normalised
"""
import h5py
import numpy as np


def write_h5(path, data, labels, targets=None):
    """Datasets `data`, `label` (normalised coordinates, or class indices) and, when a head has
    targets of its own, those of `targets(labels)` -> {dataset name: array}."""
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=labels)
        for name, array in (targets(labels) if targets else {}).items():
            f.create_dataset(name, data=array)


def to_input(gray, bgr):
    """Grey samples -> 3-channel mean-subtracted float32 network input."""
    return np.repeat(gray[:, None], 3, axis=1) - np.asarray(bgr, np.float32)[None, :, None, None]


def split_inputs(prepared, split, limit=None):
    """The mean-subtracted input arrays of a prepared split (the first `limit` only, if given)."""
    with h5py.File(prepared.h5(split), "r") as f:
        return f["data"][:limit] if limit else f["data"][...]


def split_labels(prepared, split="reg_train"):
    """(N, K, 2) normalised labels of a prepared split's original (not augmented) samples."""
    with h5py.File(prepared.h5(split), "r") as f:
        return f["label"][...].reshape(len(f["label"]), -1, 2).astype(np.float64)
