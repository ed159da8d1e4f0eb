"""The paper's figures as matplotlib PNGs (written to a temporary name, then renamed).

    plot_learning_curves({"arm": "runs/arm"}, "curves.png")        # Fig. 7 / 9: train and validation
    plot_reconstructions("runs/cae", prepared, "recon.png")          # Fig. 5 / 6: input vs CAE output
    plot_detections({"arm": "runs/arm/predictions.csv"}, root, "det.png")   # Fig. 8
    plot_error_cdf({"arm": errors_mm}, "cdf.png")                   # cumulative radial errors
"""
import csv
import os
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = ["tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:cyan"]


def _save(fig, path):
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def read_losses(run):
    """{'train': (iters, losses), 'test': (...)} from a run's loss.csv."""
    out = {"train": ([], []), "test": ([], [])}
    with (Path(run) / "loss.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            out[r["phase"]][0].append(int(r["iter"]))
            out[r["phase"]][1].append(float(r["loss"]))
    return out


def plot_learning_curves(runs, path, title="Learning curves"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (label, run), colour in zip(runs.items(), COLOURS * 3):
        losses = read_losses(run)
        for ax, phase in zip(axes, ("train", "test")):
            it, loss = losses[phase]
            if phase == "train" and len(loss) > 20:  # moving average: batches are noisy
                w = max(1, len(loss) // 50)
                loss = np.convolve(loss, np.ones(w) / w, mode="valid")
                it = it[w - 1:]
            ax.plot(it, loss, color=colour, label=label)
    for ax, name in zip(axes, ("(a) Train", "(b) Validation")):
        ax.set_xlabel("iteration")
        ax.set_ylabel("Euclidean loss")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_reconstructions(cae_run, prepared, path, n=2):
    """Input vs reconstruction for the first n CAE test samples (mean added back, channel 0)."""
    from .evaluate import predict
    cae_run = Path(cae_run)
    with h5py.File(prepared.h5("cae_test"), "r") as f:
        data = f["data"][:n]
    size = data.shape[-1]
    recon = predict(cae_run / "deploy.prototxt", cae_run / "final.caffemodel", data, batch=n)
    recon = recon.reshape(len(data), 3, size, size)
    mean = prepared.meta["mean_bgr"][0]
    fig, axes = plt.subplots(len(data), 2, figsize=(6, 3 * len(data)), squeeze=False)
    for i in range(len(data)):
        for j, (img, name) in enumerate(((data[i, 0], "(a) input"), (recon[i, 0], "(b) reconstruction"))):
            axes[i, j].imshow(np.clip(img + mean, 0, 255), cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_title(name)
            axes[i, j].axis("off")
    fig.suptitle(f"CAE: {cae_run.name}")
    return _save(fig, path)


def plot_detections(predictions, dataset_root, path, n=2):
    """Ground truth (green) and each arm's predictions on the first n test images (Fig. 8)."""
    import cv2
    per_arm = {}
    for label, csv_path in predictions.items():
        with Path(csv_path).open(newline="") as fh:
            per_arm[label] = list(csv.DictReader(fh))
    first = next(iter(per_arm.values()))
    images = list(dict.fromkeys(r["image"] for r in first))[:n]
    fig, axes = plt.subplots(1, len(images), figsize=(7 * len(images), 4.5), squeeze=False)
    for ax, name in zip(axes[0], images):
        img = cv2.imread(str(Path(dataset_root) / name), cv2.IMREAD_GRAYSCALE)
        ax.imshow(img, cmap="gray")
        gt = np.array([[float(r["gt_x"]), float(r["gt_y"])] for r in first if r["image"] == name])
        ax.scatter(gt[:, 0], gt[:, 1], s=40, facecolors="none", edgecolors="lime", label="ground truth")
        for (label, rows), colour in zip(per_arm.items(), COLOURS * 3):
            p = np.array([[float(r["pred_x"]), float(r["pred_y"])] for r in rows if r["image"] == name])
            ax.scatter(p[:, 0], p[:, 1], s=25, marker="x", color=colour, label=label)
        ax.set_title(name)
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_error_cdf(errors, path):
    """Cumulative distribution of radial errors (mm) per arm."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, e), colour in zip(errors.items(), COLOURS * 3):
        e = np.sort(np.asarray(e, float).reshape(-1))
        ax.step(e, np.arange(1, len(e) + 1) / len(e), where="post", color=colour, label=label)
    for t in (2, 2.5, 3, 4):
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("radial error (mm)")
    ax.set_ylabel("fraction of landmarks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
