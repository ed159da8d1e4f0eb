"""Radial errors in millimetres and their summaries: pure functions of predictions and truth.

    errors_mm = radial_errors_mm(pred_px, gt_px, spacing_mm)        # (N, K)
    stats = summarize(errors_mm, names)                              # per landmark, MRE, SDR
    text = markdown_table(stats, "arm")
    errors, samples = read_prediction_errors("runs/x/predictions.csv")

Per landmark: mean +- std (sample std, ddof=1) of the radial error in mm, as the paper reports
them; overall the mean radial error (MRE) and the success detection rates (SDR: the share of
errors within each of SDR_MM).
"""
import csv
from pathlib import Path

import numpy as np

SDR_MM = (2.0, 2.5, 3.0, 4.0)
PRED_FIELDS = ["sample", "image", "side", "landmark", "name", "gt_x", "gt_y", "pred_x", "pred_y",
               "error_px", "error_mm"]
UNCERTAINTY_FIELDS = ["confidence", "spread_mm", "flag"]      # evaluate writes them after PRED_FIELDS


def radial_errors_mm(pred_px, gt_px, spacing_mm):
    """Euclidean distance of (N, K, 2) pixel coordinates, times each sample's mm/px: (N, K)."""
    d = np.linalg.norm(np.asarray(pred_px, float) - np.asarray(gt_px, float), axis=-1)
    return d * np.asarray(spacing_mm, float).reshape(-1, 1)


def _std(x):
    return float(np.std(x, ddof=1)) if x.size > 1 else 0.0


def summarize(errors_mm, names, thresholds=SDR_MM):
    """Per-landmark mean/std/median, overall MRE and SDRs of an (N, K) error array."""
    e = np.asarray(errors_mm, float)
    per = [{"landmark": i + 1, "name": n, "mean_mm": float(e[:, i].mean()), "std_mm": _std(e[:, i]),
            "median_mm": float(np.median(e[:, i]))} for i, n in enumerate(names)]
    return {"n_samples": int(e.shape[0]), "landmarks": per, "mre_mm": float(e.mean()),
            "mre_std_mm": _std(e.reshape(-1)), "median_mm": float(np.median(e)),
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


def prediction_rows(samples, names, gt_px, pred_px, errors_mm, spacing):
    """predictions.csv rows (PRED_FIELDS) of N samples x K landmarks."""
    rows = []
    for i, s in enumerate(samples):
        for k, name in enumerate(names):
            rows.append([s["index"], s["image"], s["side"], k + 1, name, *np.round(gt_px[i, k], 3),
                         *np.round(pred_px[i, k], 3), round(errors_mm[i, k] / spacing[i], 4),
                         round(errors_mm[i, k], 4)])
    return rows


def read_predictions(path):
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def read_prediction_errors(path):
    """(N, K) mm errors and the sample ids from a predictions.csv (for tables and paired tests)."""
    rows = read_predictions(path)
    samples = sorted({int(r["sample"]) for r in rows})
    k = max(int(r["landmark"]) for r in rows)
    e = np.full((len(samples), k), np.nan)
    pos = {s: i for i, s in enumerate(samples)}
    for r in rows:
        e[pos[int(r["sample"])], int(r["landmark"]) - 1] = float(r["error_mm"])
    return e, samples
