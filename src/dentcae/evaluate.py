"""Radial errors in millimetres, as the paper reports them, from a regressor checkpoint.

    errors_mm = radial_errors_mm(pred_px, gt_px, spacing_mm)       # pure functions ...
    stats = summarize(errors_mm, names)                             # ... on arrays
    summary = evaluate_checkpoint(cfg, "runs/x")                    # the whole evaluation

Predictions are mapped back to original-image pixels (undo the resize, un-mirror right halves) and
compared with the annotations of landmarks.csv. Per landmark: mean +- std (sample std, ddof=1) of
the radial error in mm; overall: the mean radial error (MRE) and success detection rates (SDR, the
share of errors within 2, 2.5, 3 and 4 mm). Writes predictions.csv, summary.json and results.md.
"""
import csv
import json
import os
from pathlib import Path

import h5py
import numpy as np

from .backend import get_caffe, set_device
from .data import load_dataset
from .prepare import prepare, to_pixels

SDR_MM = (2.0, 2.5, 3.0, 4.0)
PRED_FIELDS = ["sample", "image", "side", "landmark", "name", "gt_x", "gt_y", "pred_x", "pred_y",
               "error_px", "error_mm"]


def radial_errors_mm(pred_px, gt_px, spacing_mm):
    """Euclidean distance of (N, K, 2) pixel coordinates, times each sample's mm/px: (N, K)."""
    d = np.linalg.norm(np.asarray(pred_px, float) - np.asarray(gt_px, float), axis=-1)
    return d * np.asarray(spacing_mm, float).reshape(-1, 1)


def summarize(errors_mm, names, thresholds=SDR_MM):
    """Per-landmark mean/std/median, overall MRE and SDRs of an (N, K) error array."""
    e = np.asarray(errors_mm, float)
    std = lambda x: float(np.std(x, ddof=1)) if x.size > 1 else 0.0  # noqa: E731
    per = [{"landmark": i + 1, "name": n, "mean_mm": float(e[:, i].mean()), "std_mm": std(e[:, i]),
            "median_mm": float(np.median(e[:, i]))} for i, n in enumerate(names)]
    return {"n_samples": int(e.shape[0]), "landmarks": per, "mre_mm": float(e.mean()),
            "mre_std_mm": std(e.reshape(-1)),
            "sdr": {f"{t:g}mm": float((e <= t).mean()) for t in thresholds}}


def markdown_table(stats, title):
    head = "| " + " | ".join(["", *[f"{p['landmark']} ({p['name']})" for p in stats["landmarks"]], "MRE"]) + " |"
    cells = [f"{p['mean_mm']:.4f} ± {p['std_mm']:.4f}" for p in stats["landmarks"]]
    row = "| " + " | ".join([title, *cells, f"{stats['mre_mm']:.4f} ± {stats['mre_std_mm']:.4f}"]) + " |"
    sdr = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in stats["sdr"].items())
    sep = "|" + "---|" * (len(stats["landmarks"]) + 2)
    base = stats.get("baseline_mean_shape_mre_mm")
    base = f" Predicting the training set's mean shape gives an MRE of {base:.4f} mm." if base else ""
    return f"{head}\n{sep}\n{row}\n\nDetection error (mm), mean ± std over {stats['n_samples']} test " \
           f"samples. Success detection rates: {sdr}.{base}\n"


def predict(deploy, weights, data, batch=16):
    """Forward (N, 3, S, S) float32 arrays through a deploy net; returns (N, outputs)."""
    caffe = get_caffe()
    net = caffe.Net(str(deploy), str(weights), caffe.TEST)
    out_name = net.outputs[0]
    outs = []
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch]
        net.blobs["data"].reshape(*chunk.shape)
        net.blobs["data"].data[...] = chunk
        outs.append(net.forward()[out_name].reshape(len(chunk), -1).copy())
    return np.concatenate(outs)


def write_atomic(path, text):
    """Write text to a temporary name, then rename: readers never see a half-written file."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolve_checkpoint(checkpoint):
    """A run folder (-> its final.caffemodel and deploy.prototxt) or a .caffemodel inside one."""
    p = Path(checkpoint)
    run = p if p.is_dir() else p.parent
    weights = p / "final.caffemodel" if p.is_dir() else p
    if weights.parent.name == "snapshots":
        run = weights.parent.parent
    for f in (weights, run / "deploy.prototxt"):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found (evaluate takes a finetune run folder or a "
                                    ".caffemodel inside one)")
    return run, weights


def evaluate_checkpoint(cfg, checkpoint, out=None, gpu=None, split="reg_test"):
    """Evaluate a regressor checkpoint on a split; writes and returns the summary."""
    from .config import load_config
    run, weights = resolve_checkpoint(checkpoint)
    if cfg is None:
        cfg = load_config(run / "config.yaml")
    set_device(gpu)
    prep = prepare(cfg)
    rows = [r for r in prep.samples() if int(r[split])]
    with h5py.File(prep.h5(split), "r") as f:
        data = f["data"][...]
    with h5py.File(prep.h5("reg_train"), "r") as f:
        mean_shape = f["label"][...].mean(0).reshape(-1, 2)   # the no-learning baseline
    pred = predict(run / "deploy.prototxt", weights, data).reshape(len(rows), -1, 2)
    ds = load_dataset(cfg["dataset"]["root"])
    recs = {r.name: r for r in ds.images}
    names = prep.meta["landmark_names"]
    gt_px, pred_px, base_px, spacing = [], [], [], []
    for r, p in zip(rows, pred):
        box = (int(r["x0"]), int(r["y0"]), int(r["crop_w"]), int(r["crop_h"]), bool(int(r["flipped"])))
        pred_px.append(to_pixels(p, *box))
        base_px.append(to_pixels(mean_shape, *box))
        gt_px.append(recs[r["image"]].landmarks[ds.side_indices(r["side"])])
        spacing.append(float(r["spacing_mm"]))
    gt_px, pred_px = np.array(gt_px), np.array(pred_px)
    err_mm = radial_errors_mm(pred_px, gt_px, spacing)
    stats = summarize(err_mm, names)
    stats["baseline_mean_shape_mre_mm"] = float(radial_errors_mm(base_px, gt_px, spacing).mean())
    out = Path(out) if out else run
    out.mkdir(parents=True, exist_ok=True)
    lines = [PRED_FIELDS]
    for i, r in enumerate(rows):
        for k, name in enumerate(names):
            lines.append([r["index"], r["image"], r["side"], k + 1, name, *np.round(gt_px[i, k], 3),
                          *np.round(pred_px[i, k], 3), round(err_mm[i, k] / spacing[i], 4),
                          round(err_mm[i, k], 4)])
    write_atomic(out / "predictions.csv", "\n".join(",".join(map(str, line)) for line in lines) + "\n")
    training = json.loads((run / "training.json").read_text()) if (run / "training.json").exists() else {}
    summary = {"checkpoint": str(weights), "split": split, "dataset": prep.meta["dataset"],
               "synthetic": ds.synthetic, **stats, "training": training,
               "out": str(out)}
    title = cfg["name"] + (" (SYNTHETIC phantom)" if summary["synthetic"] else "")
    summary["table_md"] = markdown_table(stats, title)
    write_atomic(out / "results.md", summary["table_md"])
    write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    from .figures import plot_detections, plot_error_cdf
    plot_detections({cfg["name"]: out / "predictions.csv"}, ds.root, out / "detections.png")
    plot_error_cdf({cfg["name"]: err_mm.reshape(-1)}, out / "error_cdf.png")
    return summary


def read_prediction_errors(path):
    """(N, K) mm errors and the sample ids from a predictions.csv (for tables and paired tests)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    samples = sorted({int(r["sample"]) for r in rows})
    k = max(int(r["landmark"]) for r in rows)
    e = np.full((len(samples), k), np.nan)
    pos = {s: i for i, s in enumerate(samples)}
    for r in rows:
        e[pos[int(r["sample"])], int(r["landmark"]) - 1] = float(r["error_mm"])
    return e, samples
