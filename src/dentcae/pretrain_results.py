"""What a finished run shows besides its learning curves: a CAE's reconstructions, an augmentation
pretext's held-out confusion matrix (pretext.json, pretext.png).

    stage_figures(cfg, run, prep, losses)     # called by train() when a run finishes

These run the run's deploy net on held-out samples (infer.predict) and hand arrays to figures.py.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from .atomic import write_atomic
from .figures import plot_learning_curves, plot_pretext, plot_reconstructions
from .infer import predict, split_data
from .pretext import confusion, pretext_sources


def reconstruction_figure(run, prep, path):
    """Input vs reconstruction of a CAE run's first two held-out samples."""
    data = split_data(prep, "cae_test", limit=2)
    recon = predict(Path(run) / "deploy.prototxt", Path(run) / "final.caffemodel", data, batch=len(data))
    mean = prep.meta["mean_bgr"][0]
    plot_reconstructions(data[:, 0] + mean, recon.reshape(data.shape)[:, 0] + mean, path, f"CAE: {Path(run).name}")


def pretext_results(cfg, run, prep, curves):
    """The augmentation pretext on its held-out copies: accuracy and confusion matrix
    (rows: the method applied, columns: the method named) in pretext.json and pretext.png."""
    methods = cfg["model"]["pretext_methods"]
    _, test_source, _, _ = pretext_sources(cfg, prep)
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


def stage_figures(cfg, run, prep, losses):
    curves = losses.read()
    plot_learning_curves({cfg["name"]: curves}, run / "learning_curves.png", f"{cfg['stage']}: {cfg['name']}")
    if cfg["stage"] != "pretrain":
        return
    if cfg["model"]["pretext"] == "cae":
        reconstruction_figure(run, prep, run / "reconstructions.png")
    else:
        pretext_results(cfg, run, prep, curves)
