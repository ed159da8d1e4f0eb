"""The paper's figures as matplotlib PNGs, drawn from arrays it is given (it runs no nets).

    plot_learning_curves({"arm": LossLog(run / "loss.csv").read()}, "curves.png")   # Fig. 7 / 9
    plot_reconstructions(inputs, reconstructions, "recon.png")                       # Fig. 5 / 6
    plot_detections([{"image": img, "title": ..., "gt": (M, 2), "preds": {"arm": (M, 2)},
                      "errors_mm": {"arm": (M,)}}], "det.png")                       # Fig. 8
    plot_error_cdf({"arm": errors_mm}, "cdf.png", thresholds=(2, 2.5, 3, 4))
    plot_label_curve({"arm": {"labels": [10, 25], "mre_mm": [3.1, 2.6], "sdr_2mm": [.3, .4]}}, "curve.png")
    plot_kept_error_curves({"spread": {"kept_share": [.5, 1], "kept_mre_mm": [1.2, 2.0]}}, "kept.png")

Every figure is written to a temporary name and renamed when complete.
"""
import numpy as np

from .runtime.atomic import atomic_path


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a figure is first drawn: loading a
    config imports every pre-training, and they draw, so an import here would slow every command."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt

COLOURS = ["tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:cyan"]


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _smooth(it, loss):
    """Moving average of noisy per-batch losses (more than 20 points)."""
    if len(loss) <= 20:
        return it, loss
    w = max(1, len(loss) // 50)
    return it[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid")


def plot_learning_curves(curves, path, title="Learning curves", ylabel="Euclidean loss"):
    """curves: {label: {"train": (iters, losses), "test": (iters, losses)}}."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    for (label, phases), colour in zip(curves.items(), COLOURS * 3):
        for ax, phase in zip(axes, ("train", "test")):
            it, loss = phases.get(phase, ([], []))
            if phase == "train":
                it, loss = _smooth(it, loss)
            ax.plot(it, loss, color=colour, label=label)
    for ax, name in zip(axes, ("(a) Train", "(b) Validation")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_reconstructions(inputs, reconstructions, path, title="CAE"):
    """Input vs reconstruction, one row per sample: (N, H, W) grey arrays in 0..255."""
    n = len(inputs)
    fig, axes = _pyplot().subplots(n, 2, figsize=(6, 3 * n), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((inputs[i], "(a) input"), (reconstructions[i], "(b) reconstruction"))):
            axes[i, j].imshow(np.clip(img, 0, 255), cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_title(name)
            axes[i, j].axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def plot_pretext(curves, matrix, methods, path, title="augmentation pretext"):
    """(a) loss, (b) held-out accuracy against chance, (c) the confusion matrix (rows: applied,
    columns: named), of an augmentation-pretext run."""
    fig, axes = _pyplot().subplots(1, 3, figsize=(15, 4.5))
    for phase, colour in (("train", COLOURS[0]), ("test", COLOURS[1])):
        it, loss = curves.get(phase, ([], []))
        axes[0].plot(*(_smooth(it, loss) if phase == "train" else (it, loss)), color=colour, label=phase)
    axes[0].set(xlabel="iteration", ylabel="softmax loss", title="(a) Loss")
    axes[0].legend()
    it, acc = curves.get("test_accuracy", ([], []))
    axes[1].plot(it, acc, "o-", color=COLOURS[1])
    axes[1].axhline(1 / len(methods), color="grey", ls="--", label="chance")
    axes[1].set(xlabel="iteration", ylabel="held-out accuracy", ylim=(0, 1.02), title="(b) Accuracy")
    axes[1].legend()
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes[2].imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        axes[2].text(j, i, str(n), ha="center", va="center", fontsize=8, color="black" if rows[i, j] < 0.6 else "white")
    axes[2].set_xticks(range(len(methods)), methods, rotation=45, ha="right")
    axes[2].set_yticks(range(len(methods)), methods)
    axes[2].set(xlabel="named", ylabel="applied", title="(c) Held-out confusion")
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _detection_panel(ax, panel, colours):
    ax.imshow(panel["image"], cmap="gray")
    gt = np.asarray(panel["gt"], float)
    ax.scatter(gt[:, 0], gt[:, 1], s=40, facecolors="none", edgecolors="lime", label="ground truth")
    parts = []
    for (label, pred), colour in zip(panel["preds"].items(), colours):
        pred = np.asarray(pred, float)
        for (gx, gy), (px, py) in zip(gt, pred):
            ax.plot([gx, px], [gy, py], color=colour, lw=0.8)
        ax.scatter(pred[:, 0], pred[:, 1], s=25, marker="x", color=colour, label=label)
        err = np.asarray(panel["errors_mm"][label], float)
        if len(panel["preds"]) == 1:          # one arm: the error of every landmark beside it
            for (px, py), e in zip(pred, err):
                ax.annotate(f"{e:.1f}", (px, py), xytext=(4, 4), textcoords="offset points",
                            color=colour, fontsize=7)
        parts.append(f"{label}: {err.mean():.2f} mm")
    note = " (numbers: radial error in mm)" if len(panel["preds"]) == 1 else ""
    ax.set_title(f"{panel['title']}{note}\nmean radial error: " + "\n".join(parts), fontsize=9)
    ax.axis("off")


def plot_detections(panels, path, height_in=5.0):
    """Ground truth (green circles) and each arm's predictions (crosses, joined to the truth) on
    whole images; each panel is as wide as its image's aspect ratio asks, so none is squeezed."""
    widths = [p["image"].shape[1] / p["image"].shape[0] for p in panels]
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(height_in * sum(widths) + 0.3, height_in + 0.8),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, panel in zip(axes[0], panels):
        _detection_panel(ax, panel, COLOURS * 3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_error_cdf(errors, path, thresholds=(2.0, 2.5, 3.0, 4.0)):
    """Cumulative distribution of radial errors (mm) per arm, with the SDR thresholds marked."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for (label, e), colour in zip(errors.items(), COLOURS * 3):
        e = np.sort(np.asarray(e, float).reshape(-1))
        ax.step(e, np.arange(1, len(e) + 1) / len(e), where="post", color=colour, label=label)
    for t in thresholds:
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("radial error (mm)")
    ax.set_ylabel("fraction of landmarks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_label_curve(lines, path, reference=None, baseline=None, title="Label efficiency"):
    """MRE and SDR@2 mm against the number of labelled images, a line per arm.
    lines: {arm: {"labels": [...], "mre_mm": [...], "sdr_2mm": [...], "sd_mre_mm": [...] or None}};
    reference: {"label": text, "mre_mm": x, "sdr_2mm": y} (e.g. a second annotator), a dashed level;
    baseline: {"labels": [...], "mre_mm": [...], "sdr_2mm": [...]} (the mean shape), a dotted line."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
    for (label, line), colour in zip(lines.items(), COLOURS * 3):
        for ax, key in zip(axes, ("mre_mm", "sdr_2mm")):
            y = np.asarray(line[key], float) * (100 if key == "sdr_2mm" else 1)
            ax.plot(line["labels"], y, "o-", color=colour, label=label)
            if key == "mre_mm" and line.get("sd_mre_mm") is not None:
                sd = np.asarray([np.nan if v is None else v for v in line["sd_mre_mm"]], float)
                ax.errorbar(line["labels"], y, yerr=sd, fmt="none", ecolor=colour, capsize=3)
    for ax, key in zip(axes, ("mre_mm", "sdr_2mm")):
        scale = 100 if key == "sdr_2mm" else 1
        if baseline is not None:
            ax.plot(baseline["labels"], np.asarray(baseline[key], float) * scale, ":", color="grey",
                    label="mean shape (no learning)")
        if reference is not None:
            ax.axhline(reference[key] * scale, color="black", ls="--", lw=1, label=reference["label"])
        ax.set_xscale("log")
        ax.set_xticks(sorted({x for line in lines.values() for x in line["labels"]}))
        ax.set_xticklabels([str(x) for x in ax.get_xticks()])
        ax.set_xlabel("labelled training images")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean radial error (mm)")
    axes[1].set_ylabel("landmarks within 2 mm (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_kept_error_curves(curves, path, title="Pseudo-labels: share kept against their error"):
    """One line per criterion: {name: {"kept_share": [...], "kept_mre_mm": [...]}}, share on x."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (name, c), colour in zip(curves.items(), COLOURS):
        ax.plot(np.asarray(c["kept_share"]) * 100, c["kept_mre_mm"], "o-", color=colour, label=name, ms=3)
    ax.set_xlabel("landmarks kept (%)")
    ax.set_ylabel("kept landmarks' error (mm)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_contact_sheet(images, titles, path, title="", columns=5):
    """Small grey images in a grid, each titled (`dentcae select`'s chosen X-rays, in order)."""
    rows = max(1, -(-len(images) // columns))
    aspect = float(np.mean([np.shape(i)[0] / np.shape(i)[1] for i in images])) if len(images) else 1.0
    fig, axes = _pyplot().subplots(rows, columns, figsize=(2.2 * columns, (2.2 * aspect + 0.4) * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, name in zip(axes.ravel(), images, titles):
        ax.imshow(np.clip(img, 0, 255), cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
