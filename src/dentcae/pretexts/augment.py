"""The paper's other unsupervised pre-training: name the augmentation an image went through.

    data, labels = transformed_copies(gray, ["identity", "rot90", "hflip", "gamma"])
    train_src, test_src, n_train, n_test = sources(cfg, prep)
    figures(cfg, run, prep, curves)       # pretext.json, pretext.png: held-out accuracy, confusion

Wang & Chu's Method section: "augment the un-annotated data in multiple ways, annotate the data with
its augment method, fine-tune the ImageNet CNN to classify the augment method". Every pre-training
sample (the CAE's splits: all images, annotated or not, 1/10 held out) is written once per method in
`model.pretext_methods`, labelled with the method's index, sample-major (a sample's K copies are
neighbours). The files live in a `pretext-<hash>` folder inside the prepared-data cache entry, built
in a temporary folder and renamed when complete. AlexNet learns to name the method (`fc8_pretext`,
one output per method); conv1-5 and fc6 then copy into a head (model.init: augment).
"""
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np

from ..schema import ConfigError
from ..data.inputs import to_input, write_h5
from ..figures import plot_pretext
from ..nets.alexnet import encoder, finish, inputs
from ..nets.infer import predict
from ..runtime.atomic import folder_once, write_atomic
from ..runtime.backend import get_caffe

STEM = "pretext"
TITLE = "augmentation-pretext"
CONFIG = {"pretext_methods": ["identity", "rot90", "rot180", "rot270", "hflip", "gamma", "blur"]}

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


def sources(cfg, prep):
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


def augment_classifier(num_methods, size=224, train=None, batch=16, test_batch=16, deploy=False, freeze=(),
                       dropout=0.5, width=4096):
    """AlexNet naming which of `num_methods` augmentations made its input (the paper's other
    unsupervised pre-training): fc8 replaced by `fc8_pretext`, SoftmaxWithLoss, and an Accuracy
    on the test phase; conv1-5 and fc6 transfer to the landmark heads as the CAE's do."""
    caffe = get_caffe()
    n = caffe.NetSpec()
    test = inputs(n, size, deploy, train, batch, test_batch)
    scores = encoder(n, set(freeze), "fc8_pretext", num_methods, dropout, width)
    if deploy:
        n.prob = caffe.layers.Softmax(scores)
    else:
        n.loss = caffe.layers.SoftmaxWithLoss(scores, n.label)
        n.accuracy = caffe.layers.Accuracy(scores, n.label, include=dict(phase=caffe.TEST))
    return finish(n, test, "AlexNet_augment_pretext")


def build(k, model, **net):
    return augment_classifier(len(model["pretext_methods"]), dropout=model["dropout"], width=model["fc_width"], **net)


def check_config(cfg):
    if cfg["model"]["pretext"] == "augment":
        try:
            check_methods(cfg["model"]["pretext_methods"])
        except ValueError as e:
            raise ConfigError(f"config key {e}") from None


def figures(cfg, run, prep, curves):
    """The pretext on its held-out copies: accuracy and confusion matrix (rows: the method applied,
    columns: the method named) in pretext.json and pretext.png."""
    methods = cfg["model"]["pretext_methods"]
    _, test_source, _, _ = sources(cfg, prep)
    with h5py.File(Path(test_source).read_text().split()[0], "r") as f:
        data, truth = f["data"][...], f["label"][...].astype(int)
    named = predict(run / "deploy.prototxt", run / "final.caffemodel", data).argmax(axis=1)
    matrix = confusion(truth, named, len(methods))
    result = {"methods": methods, "held_out_samples": int(len(truth)),
              "held_out_accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)), "chance": 1.0 / len(methods),
              "confusion": matrix.tolist()}
    write_atomic(run / "pretext.json", json.dumps(result, indent=1))
    plot_pretext(curves, matrix, methods, run / "pretext.png", f"augmentation pretext: {cfg['name']}")
    return result


def table_figures(run, stem):
    shutil.copyfile(run / "pretext.png", f"{stem}_pretext.png")


def table_lines(runs):
    """Wall time and held-out accuracy of the pretext runs, for a table."""
    wall = sum(json.loads((r / "training.json").read_text())["wall_s"] for r in runs)
    pretext = [json.loads((r / "pretext.json").read_text()) for r in runs]
    accuracy = [p["held_out_accuracy"] for p in pretext]
    text = (f"Augmentation-pretext pre-training: {wall / 60:.1f} min ({len(runs)} run(s)); it names the "
            f"augmentation of held-out images with accuracy {', '.join(f'{a:.3f}' for a in accuracy)} "
            f"(chance {pretext[0]['chance']:.3f}; methods: {', '.join(pretext[0]['methods'])}).\n")
    return {"pretext_wall_s": float(wall), "pretext_held_out_accuracy": accuracy}, text
